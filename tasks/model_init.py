"""The starting model (PROGRESS §4.1, docs/algorithm.md#training): the tiny LLaVA built and aligned, or the
paper's stage-1 LLaVA assembled once."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from prefect import task

from progress_core.model.assembly import base_model_path
from progress_core.model.config import ModelConfig
from progress_core.model.tiny import build_tiny_model
from tasks.stage import StageRecord, stage, stage_cache_key


@task(name="init-model", task_run_name="init-model", cache_key_fn=stage_cache_key, persist_result=True)
@stage("init_model", hash_outputs=False)
def init_model_stage(manifest: StageRecord, settings: ModelConfig, out_dir: str) -> StageRecord:
    """Tiny mode: a randomly initialised LLaVA with a word-level tokenizer built from the pool's text, then
    ``settings.align_steps`` of stage-1 caption alignment (progress_core/model/alignment.py; 0: none). The
    alignment settings are part of ``settings``, hence of the stage key.

    Real mode: the starting LLaVA; assembled here once from language model, vision tower and stage-1
    projector when those are named (PROGRESS §4.1), so the rounds only load it.
    """
    if settings.mode != "tiny":
        return StageRecord(
            stage="init_model", out_dir=out_dir, files={}, meta={"base_model": base_model_path(settings)}
        )
    table = pq.read_table(manifest.files["manifest"], columns=["conversations"])
    path = build_tiny_model(table.column("conversations").to_pylist(), settings, Path(out_dir) / "model")
    return StageRecord(
        stage="init_model", out_dir=out_dir, files={"checkpoint": str(path)}, meta={"base_model": str(path)}
    )
