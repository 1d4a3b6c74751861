"""Model initialisation and continued training (PROGRESS §3.2 warm-up and rounds; docs/algorithm.md#training).

One run is trained in pieces: the init stage builds the tiny model (or names the real base model), and each
``train`` stage continues the previous checkpoint to its target step on that round's new samples only, with
optimizer, scheduler and RNG state carried over and one cosine schedule over FINAL_STEP.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import get_run_logger, task
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run

from progress_core.training.config import TrainingConfig
from progress_core.training.loop import train_launched
from progress_core.training.node import nodes_from_env
from tasks._tables import ids_of, manifest_rows
from tasks.stage import StageRecord, retry_unless_disk_full, stage, stage_cache_key


@task(
    name="train",
    cache_key_fn=stage_cache_key,
    persist_result=True,
    tags=["gpu"],
    retries=2,
    retry_condition_fn=retry_unless_disk_full,
    retry_delay_seconds=[10, 60],
    task_run_name="train[r={round_index}]",
)
@stage("train", hash_outputs=False)
def train_stage(
    start: StageRecord,
    samples: StageRecord,
    manifest: StageRecord,
    target_step: int,
    settings: TrainingConfig,
    round_index: int,
    out_dir: str,
) -> StageRecord:
    """Continue ``start``'s checkpoint to ``target_step`` on the round's new samples.

    With ``settings.nproc_per_node`` set the piece runs as a launched multi-process job (one rank per GPU)
    whose output streams into this task's log; with ``settings.nnodes`` > 1 this flow's node is node 0 and
    the rendezvous ids start with the flow run id and round, each attempt adding a fresh suffix (README:
    Training on two or more nodes), so a retry never joins the failed attempt's group.
    """
    rows = manifest_rows(manifest, ids_of(samples, "new"))
    checkpoint = start.files.get("checkpoint")
    if start.stage == "init_model" and settings.model.mode == "tiny":
        settings = settings.model_copy(update={"model": settings.model.model_copy(update={"base_model": checkpoint})})
        checkpoint = None
    try:
        logger = get_run_logger()
    except MissingContextError:
        logger = logging.getLogger(__name__)
    settings = nodes_from_env(settings)
    if settings.nnodes > 1 and settings.rdzv_id is None:
        settings = settings.model_copy(update={"rdzv_id": f"{flow_run.get_id() or 'local'}-r{round_index}"})
    result = train_launched(
        checkpoint,
        rows,
        manifest.meta.get("image_root"),
        target_step,
        settings,
        Path(out_dir) / "checkpoint",
        log_line=logger.info,
    )
    losses = [float(x) for x in result.losses]
    return StageRecord(
        stage="train",
        out_dir=out_dir,
        files={"checkpoint": str(result.checkpoint)},
        rows={"samples": rows.num_rows},
        meta={
            "step": result.step,
            "losses": losses,
            "round": round_index,
            "final_loss": losses[-1] if losses else None,
        },
    )
