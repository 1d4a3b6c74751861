"""Held-out evaluation of a run's final checkpoint, per concept, and the held-out split of a user's pool
(``docs/algorithm.md#selection``: comparing strategies)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from progress_core.io import write_parquet
from progress_core.probe.config import ProbeConfig
from progress_core.probe.evaluation import evaluate_concepts
from tasks.stage import StageRecord, stage, stage_cache_key


@task(
    name="evaluate", cache_key_fn=stage_cache_key, persist_result=True, tags=["gpu"], task_run_name="evaluate[{label}]"
)
@stage("evaluate")
def evaluate_stage(
    checkpoint: str,
    checkpoint_key: str,
    eval_json: str,
    image_root: str | None,
    labels: str,
    settings: ProbeConfig,
    label: str,
    out_dir: str,
) -> StageRecord:
    """Answer the whole evaluation split with ``checkpoint``; accuracy per concept as Parquet.

    ``checkpoint_key`` (the training stage's content hash) keys the cache: a retrained checkpoint written to
    the same path is evaluated again.
    """
    table = evaluate_concepts(checkpoint, eval_json, image_root, labels, settings)
    path = write_parquet(table, Path(out_dir) / "concept_accuracy.parquet")
    return StageRecord(
        stage="evaluate",
        out_dir=out_dir,
        files={"concepts": str(path)},
        rows={"concepts": len(table)},
        meta={"label": label, "accuracy": float(table["correct"].sum() / max(table["n"].sum(), 1))},
    )
