"""Feature stages: one task per manifest shard (mappable over a Dask/Ray task runner), then one combine.

PROGRESS §3.1 / docs/algorithm.md#features: image part (DINOv2 or the offline descriptor) + MiniLM question part, one global
L2 normalisation (``balanced`` normalises each part first). Row i of ``features.npy`` is sample_id i.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

from prefect import task

from progress_core.feature_import import import_features, source_fingerprint
from progress_core.features import (
    FeatureConfig,
    combine_shards,
    extract_shard,
    load_image_encoder,
    load_text_encoder,
    save_shard,
)
from progress_core.probe_batches import release_cuda_memory
from tasks.stage import StageRecord, stage, stage_cache_key

_ENCODER_LOCK = threading.Lock()


@functools.lru_cache(maxsize=2)
def _load_encoders(cfg_json: str):
    cfg = FeatureConfig.model_validate_json(cfg_json)
    return load_image_encoder(cfg), load_text_encoder(cfg)


def _encoders(cfg_json: str):
    """Encoders shared by the shards of one process, loaded once (transformers' lazy imports are not
    thread-safe, and shards run in parallel threads)."""
    with _ENCODER_LOCK:
        return _load_encoders(cfg_json)


def release_encoders() -> None:
    """Drop the shards' cached encoders and return their GPU memory once every shard is encoded, so k-means,
    training and the judge start on free GPUs."""
    with _ENCODER_LOCK:
        _load_encoders.cache_clear()
    release_cuda_memory()


@task(
    name="features-shard",
    cache_key_fn=stage_cache_key,
    persist_result=True,
    tags=["features"],
    task_run_name="features[{start}:{stop}]",
)
@stage("features_shard")
def feature_shard(manifest: StageRecord, start: int, stop: int, settings: FeatureConfig, out_dir: str) -> StageRecord:
    """Encode manifest rows ``start:stop``; unreadable images are counted skips with a zero image part."""
    image_enc, text_enc = _encoders(settings.model_dump_json())
    shard = extract_shard(
        manifest.files["manifest"], manifest.meta.get("image_root"), start, stop, settings, image_enc, text_enc
    )
    path = save_shard(shard, out_dir)
    return StageRecord(
        stage="features_shard",
        out_dir=out_dir,
        files={"shard": str(path)},
        rows={"shard": shard.n},
        meta={"start": start, "stop": stop, "failed_sample_ids": shard.failed_sample_ids.tolist()},
    )


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


@task(name="features-import", task_run_name="features-import", cache_key_fn=stage_cache_key, persist_result=True)
@stage("features", modules=["progress_core.features", "progress_core.feature_import"])
def import_stage(
    manifest: StageRecord, sources: dict[str, str], fingerprint: str, balanced: bool, out_dir: str
) -> StageRecord:
    """Features computed elsewhere stored as this stage's ``features.npy`` (no extraction).

    ``sources`` names the files (``image`` + ``text``, or ``features`` with optional ``ids``); the cache
    key holds ``fingerprint``, their content hash (:func:`progress_core.feature_import.source_fingerprint`),
    so replacing a source file re-imports and everything downstream recomputes.
    """
    out = Path(out_dir) / "features.npy"
    report = import_features(out, manifest.rows["manifest"], balanced=balanced, **sources)
    return StageRecord(
        stage="features",
        out_dir=out_dir,
        files={"features": str(out)},
        rows={"features": report.n},
        meta={
            "image_dim": report.image_dim,
            "text_dim": report.text_dim,
            "imported": report.layout,
            "n_zero_rows": report.n_zero_rows,
            "n_image_failures": 0,
            "failed_sample_ids": [],
        },
    )


def import_fingerprint(sources: dict[str, str], out_dir: str | Path) -> str:
    """Content hash of the import sources, remembered beside the stage output (see ``source_fingerprint``)."""
    return source_fingerprint([sources[k] for k in sorted(sources)], Path(out_dir) / ".source_hashes.json")
