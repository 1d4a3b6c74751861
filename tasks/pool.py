"""The pool stage: the bundled synthetic pool generated into the run, or the user's LLaVA JSON as it is
(docs/architecture.md#a-round-through-the-files)."""

from __future__ import annotations

import os
from pathlib import Path

from prefect import task

from progress_core.data.config import PoolSettings
from progress_core.data.headroom import generate_headroom_pool
from progress_core.data.synthetic import generate_pool
from tasks.stage import StageRecord, stage, stage_cache_key


def pool_fingerprint(data: PoolSettings) -> str:
    """Size and mtime of a user's pool JSON: an edited pool file invalidates the run from the manifest on."""
    if not data.pool_json:
        return "synthetic"
    st = os.stat(data.pool_json)
    return f"{st.st_size}-{st.st_mtime_ns}"


@task(name="pool", task_run_name="pool", cache_key_fn=stage_cache_key, persist_result=True)
@stage("pool")
def prepare_pool(data: PoolSettings, fingerprint: str, out_dir: str) -> StageRecord:
    """The bundled synthetic pool (generated into the run; ``data.headroom`` picks the null or the headroom
    pool) or the user's LLaVA JSON as it is.

    A run's start is its own (stage-1 alignment, ``training.model.align_steps``), so the headroom pool's
    ``known`` split, which only the proxy screen trains its start on, is not written here."""
    if data.pool_json:
        files = {"pool_json": str(Path(data.pool_json).resolve())}
        image_root = str(Path(data.image_root).resolve()) if data.image_root else None
        return StageRecord(stage="pool", out_dir=out_dir, files=files, meta={"image_root": image_root})
    size = dict(n=data.synthetic_n, n_eval=data.synthetic_n_eval, seed=data.synthetic_seed)
    if data.headroom == "none":
        pool = generate_pool(Path(out_dir), **size)
    else:
        pool = generate_headroom_pool(Path(out_dir), **size, headroom=data.headroom, n_known=0)
    files = {"pool_json": str(pool.pool_json), "eval_json": str(pool.eval_json), "labels": str(pool.labels_path)}
    return StageRecord(
        stage="pool",
        out_dir=out_dir,
        files=files,
        rows={"pool": pool.n, "eval": pool.n_eval},
        meta={"image_root": str(pool.image_root)},
    )
