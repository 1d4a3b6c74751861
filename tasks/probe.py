"""Accuracy probe (PROGRESS §3.2, SPEC §3.2): answer ≤ SAMPLES_PER_CLUSTER selected samples per annotation
cluster with the current checkpoint and judge them; per-sample and per-cluster tables as Parquet."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from prefect import task

from progress_core.accuracy import ProbeConfig, probe, probe_sample, save_probe
from progress_core.judges import make_judge
from tasks._tables import cluster_ids, ids_of, manifest_rows
from tasks.stage import StageRecord, stage, stage_cache_key


@task(
    name="probe",
    cache_key_fn=stage_cache_key,
    persist_result=True,
    tags=["gpu"],
    retries=2,
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
    out_dir: str,
) -> StageRecord:
    """Probe the selected-so-far set (all of it when ``samples_per_cluster`` is None, as at warm-up)."""
    clusters = cluster_ids(annotation)
    selected_ids = ids_of(selected, "selected_until")
    ids = probe_sample(selected_ids, clusters[selected_ids], samples_per_cluster, seed)
    rows = manifest_rows(manifest, ids)
    rows = rows.append_column("cluster_id", pa.array(clusters[np.asarray(ids, dtype=np.int64)]))
    with make_judge(settings.judge) as judge:
        result = probe(checkpoint.files["checkpoint"], rows, manifest.meta.get("image_root"), judge, settings)
    paths = save_probe(result, out_dir)
    return StageRecord(
        stage="probe",
        out_dir=out_dir,
        files={k: str(v) for k, v in paths.items()},
        rows={"per_sample": len(result.per_sample), "per_cluster": len(result.per_cluster)},
        meta={**result.stats, "round": round_index},
    )
