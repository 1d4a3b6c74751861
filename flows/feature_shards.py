"""Feature extraction as mapped shard tasks on the configured task runner (docs/architecture.md#orchestration).

Every shard is its own task with its own output directory and stage marker, so shards are committed one by
one: a lost Dask worker loses only the shards it was computing, and a re-run recomputes exactly those. All
shards are awaited before a failure is raised, so one bad shard never discards its siblings' work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.futures import wait

from progress_core.features.config import ExtractionSettings
from progress_core.run.config import OrchestrationConfig
from tasks.feature_shard import feature_shard, release_encoders
from tasks.stage import StageRecord, needs_refresh


def submit_shards(
    manifest: StageRecord, settings: ExtractionSettings, ranges: list[tuple[int, int]], shards_dir: str
) -> list[StageRecord]:
    """Submit one ``features-shard`` task per range to the current task runner; all results, in order."""
    futures = []
    for start, stop in ranges:
        params: dict[str, Any] = {
            "manifest": manifest,
            "start": start,
            "stop": stop,
            "settings": settings,
            "out_dir": str(Path(shards_dir) / f"{start:010d}"),
        }
        refresh = needs_refresh(feature_shard, params)
        futures.append(feature_shard.with_options(refresh_cache=refresh).submit(**params))
    wait(futures)
    return [f.result() for f in futures]


@flow(name="feature-shards", log_prints=True)
def feature_shards(
    manifest: StageRecord, settings: ExtractionSettings, ranges: list[tuple[int, int]], shards_dir: str
) -> list[StageRecord]:
    """The feature shards of a run on a Dask cluster (a subflow, so only these tasks leave the machine)."""
    return submit_shards(manifest, settings, ranges, shards_dir)


def dask_task_runner(orchestration: OrchestrationConfig):
    """prefect-dask runner for an existing cluster (``address``) or a ``LocalCluster`` of worker processes."""
    from prefect_dask import DaskTaskRunner

    if orchestration.address:
        return DaskTaskRunner(address=orchestration.address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": orchestration.n_workers,
            "threads_per_worker": orchestration.threads_per_worker,
            "processes": True,
        },
    )


def run_feature_shards(
    manifest: StageRecord,
    settings: ExtractionSettings,
    ranges: list[tuple[int, int]],
    shards_dir: str,
    orchestration: OrchestrationConfig,
) -> list[StageRecord]:
    """Shards on the flow's own runner (``threads``) or in a ``feature-shards`` subflow on Dask; on the flow's
    runner the encoders live in this process and are released when the shards are done."""
    if orchestration.task_runner == "dask":
        runner = dask_task_runner(orchestration)
        return feature_shards.with_options(task_runner=runner)(manifest, settings, ranges, shards_dir)
    try:
        return submit_shards(manifest, settings, ranges, shards_dir)
    finally:
        release_encoders()
