"""The feature combine stage: the shards joined into the float16 feature matrix (docs/algorithm.md#features)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from progress_core.features.store import combine_shards
from tasks.stage import StageRecord, stage, stage_cache_key


@task(name="features", task_run_name="features", cache_key_fn=stage_cache_key, persist_result=True)
@stage("features")
def combine_stage(shards: list[StageRecord], balanced: bool, out_dir: str) -> StageRecord:
    """Combine the shards into the float16 feature matrix (memory-mappable .npy), one shard at a time."""
    out = Path(out_dir) / "features.npy"
    n, image_dim, text_dim, _ = combine_shards([s.files["shard"] for s in shards], out, balanced)
    failed = [i for s in shards for i in s.meta.get("failed_sample_ids", [])]
    return StageRecord(
        stage="features",
        out_dir=out_dir,
        files={"features": str(out)},
        rows={"features": n},
        meta={
            "image_dim": image_dim,
            "text_dim": text_dim,
            "n_image_failures": len(failed),
            "failed_sample_ids": failed[:1000],
        },
    )
