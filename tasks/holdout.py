"""The held-out split of a user's pool, for `progress compare` (docs/architecture.md#file-kinds)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from progress_core.data.holdout import split_holdout
from tasks.stage import StageRecord, stage, stage_cache_key


def file_stamp(path: str | None) -> str:
    """Size and mtime of ``path`` ("" when empty or missing): an edited file re-keys the stage reading it."""
    if not path or not Path(path).is_file():
        return ""
    st = Path(path).stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


@task(name="holdout", cache_key_fn=stage_cache_key, persist_result=True, task_run_name="holdout")
@stage("holdout")
def holdout_stage(
    pool_json: str,
    eval_json: str | None,
    image_root: str | None,
    fraction: float,
    seed: int,
    out_dir: str,
    concept_labels: str | None = None,
    concept_field: str | None = None,
    concepts_stamp: str = "",
) -> StageRecord:
    """Held-out split of a user's pool (``data.eval_json`` or ``data.holdout_fraction`` of the rows), each
    held-out row's concept from ``concept_labels``, ``concept_field`` or its image folder. ``concepts_stamp``
    (:func:`file_stamp` of the labels file) re-keys the split when that file changes."""
    split = split_holdout(pool_json, out_dir, fraction, seed, eval_json, concept_labels, concept_field)
    image_root = str(Path(image_root).resolve()) if image_root else None
    return StageRecord(
        stage="holdout",
        out_dir=out_dir,
        files={k: str(split[k]) for k in ("pool_json", "eval_json", "labels")},
        rows={"eval": int(split["n_eval"])},
        meta={"image_root": image_root},
    )
