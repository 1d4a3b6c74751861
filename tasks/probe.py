"""Accuracy probe (PROGRESS §3.2, ``docs/algorithm.md#probe-and-judge``): answer ≤ SAMPLES_PER_CLUSTER samples
per annotation cluster with the current checkpoint and judge them; per-sample and per-cluster tables as Parquet.

Which samples: ``settings.source`` — ``held_out`` (default) probes not-yet-selected samples of every cluster
with one seeded key per sample for the whole run, so consecutive probes mostly see the same samples and the
change between them is the model's, not the sample draw's; ``selected`` probes the selected-so-far set as the
original scripts (all of it at the warm-up probes)."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
from prefect import get_run_logger, task
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run

from progress_core.probe.accuracy import probe, probe_sample, save_probe
from progress_core.probe.config import ProbeConfig
from progress_core.probe.judges import make_judge
from progress_core.probe.launched import probe_launched
from progress_core.training.node import nodes_from_env
from tasks._tables import cluster_ids, ids_of, manifest_rows
from tasks.stage import StageRecord, retry_unless_disk_full, stage, stage_cache_key


@task(
    name="probe",
    cache_key_fn=stage_cache_key,
    persist_result=True,
    tags=["gpu"],
    retries=2,
    retry_condition_fn=retry_unless_disk_full,
    retry_delay_seconds=[10, 60],
    task_run_name="probe[r={round_index}]",
)
@stage("probe")
def probe_stage(
    checkpoint: StageRecord,
    selected: StageRecord,
    annotation: StageRecord,
    manifest: StageRecord,
    samples_per_cluster: int | None,
    seed: int,
    settings: ProbeConfig,
    round_index: int,
    to_step: int,
    out_dir: str,
) -> StageRecord:
    """Probe the checkpoint at ``to_step`` on the samples ``settings.source`` names (module docstring); with
    ``settings.nproc_per_node`` > 1 or the training's nodes the rows are sharded over launcher ranks
    (:mod:`progress_core.probe.launched`), whose output streams into this task's log."""
    clusters = cluster_ids(annotation)
    held_out = settings.source == "held_out"
    if held_out:
        pool_ids = ids_of(selected, "remaining_after")
        spc = samples_per_cluster if samples_per_cluster is not None else settings.samples_per_cluster
    else:
        pool_ids = ids_of(selected, "selected_until")
        spc = samples_per_cluster
    ids = probe_sample(pool_ids, clusters[pool_ids], spc, seed, n_samples=clusters.size if held_out else None)
    rows = manifest_rows(manifest, ids)
    rows = rows.append_column("cluster_id", pa.array(clusters[np.asarray(ids, dtype=np.int64)]))
    image_root = manifest.meta.get("image_root")
    settings = nodes_from_env(settings)
    if settings.world_size() > 1:
        if settings.nnodes > 1 and settings.rdzv_id is None:
            settings = settings.model_copy(update={"rdzv_id": f"{flow_run.get_id() or 'local'}-r{round_index}"})
        result = probe_launched(checkpoint.files["checkpoint"], rows, image_root, settings, log_line=_log_line())
    else:
        with make_judge(settings.judge) as judge:
            result = probe(checkpoint.files["checkpoint"], rows, image_root, judge, settings)
    paths = save_probe(result, out_dir)
    return StageRecord(
        stage="probe",
        out_dir=out_dir,
        files={k: str(v) for k, v in paths.items()},
        rows={"per_sample": len(result.per_sample), "per_cluster": len(result.per_cluster)},
        meta={**result.stats, "round": round_index, "step": to_step, "source": settings.source},
    )


def _log_line():
    try:
        return get_run_logger().info
    except MissingContextError:
        return logging.getLogger(__name__).info
