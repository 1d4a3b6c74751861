"""The accuracy probe sharded over launcher ranks (README: The probe on every GPU; docs/algorithm.md#probe-and-judge).

With ``probe.nproc_per_node`` > 1 (or the training's nodes) the probe's rows are dealt out, row ``i`` to rank
``i % world``, one rank per GPU started by :mod:`progress_core.training.launch`. Each rank answers its rows
and, with the exact-match judge, judges them and counts per cluster; it writes ``samples<R>.parquet`` (its
per-sample rows with their row numbers) and ``accuracy<R>.parquet`` (its per-cluster counts) atomically. The
caller puts the rows back in order and sums the counts per cluster (:func:`merge_accuracy_tables`, the
original's ``combine_results.py`` step), which gives exactly the table of a one-process probe. An LLM judge
runs once after the ranks have exited, on all answers, with its own tensor parallelism over the GPUs
(``probe.judge.tp``), instead of one engine per rank.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from progress_core.io import write_parquet
from progress_core.probe.accuracy import ProbeError, ProbeResult, answer_table, judge_answers, probe_stats
from progress_core.probe.accuracy_table import merge_accuracy_tables, read_accuracy_table, write_accuracy_table
from progress_core.probe.config import ProbeConfig
from progress_core.probe.judges import make_judge
from progress_core.training.node import piece_dir, piece_nodes, start_piece, write_atomic

PROBE_TARGET = "progress_core.probe.launched:run_probe_job"


def judged_on_ranks(cfg: ProbeConfig) -> bool:
    """The exact-match judge needs no device, so every rank judges its own rows; an LLM judge does not fit
    beside a generating model on each GPU and runs once after the job."""
    return cfg.judge.kind == "exact"


def probe_launched(
    checkpoint: str | os.PathLike,
    samples: Any,
    image_root: str | os.PathLike | None,
    cfg: ProbeConfig,
    log_line=None,
    progress: bool = True,
    timeout_s: float | None = None,
) -> ProbeResult:
    """:func:`progress_core.probe.accuracy.probe` with the rows sharded over ``cfg.world_size()`` ranks; the
    merged tables equal a one-process probe's on the same rows."""
    table = (
        samples if isinstance(samples, pa.Table) else pa.Table.from_pandas(pd.DataFrame(samples), preserve_index=False)
    )
    nodes = piece_nodes(cfg.nnodes, cfg.rdzv_endpoint, cfg.rdzv_id, "probe")
    with piece_dir(nodes, cfg.node_jobs_dir, None) as job_dir:
        write_parquet(table, job_dir / "samples.parquet")
        payload = {
            "checkpoint": str(checkpoint),
            "image_root": None if image_root is None else str(image_root),
            "config": cfg.model_dump(mode="json"),
            "progress": bool(progress),
        }
        job = job_dir / "job.json"
        write_atomic(job, json.dumps(payload))
        start_piece(PROBE_TARGET, job, cfg.procs_per_node(), cfg.dist_backend, nodes, log_line, timeout_s)
        return _merged(job_dir, cfg)


def _merged(job_dir: Path, cfg: ProbeConfig) -> ProbeResult:
    """The ranks' shards as one probe: rows back in their order, counts summed per cluster."""
    world = cfg.world_size()
    shards = [pq.read_table(job_dir / f"samples{r}.parquet").to_pandas() for r in range(world)]
    per_sample = pd.concat(shards, ignore_index=True).sort_values("row", kind="stable")
    if not np.array_equal(per_sample["row"].to_numpy(), np.arange(len(per_sample))):
        raise ProbeError(f"probe shards in {job_dir} do not cover the rows exactly once")
    per_sample = per_sample.drop(columns="row").reset_index(drop=True)
    if not judged_on_ranks(cfg):
        with make_judge(cfg.judge) as judge:
            return judge_answers(per_sample, judge)
    per_cluster = merge_accuracy_tables([read_accuracy_table(job_dir / f"accuracy{r}.parquet") for r in range(world)])
    return ProbeResult(per_sample=per_sample, per_cluster=per_cluster, stats=probe_stats(per_sample, per_cluster))


def run_probe_job(job: str | os.PathLike) -> None:
    """One rank of a sharded probe: answer (and judge) rows ``rank, rank + world, ...``; write its shard."""
    import torch.distributed as dist

    job_dir = Path(job).parent
    payload = json.loads(Path(job).read_text())
    cfg = ProbeConfig.model_validate(payload["config"])
    world, rank = dist.get_world_size(), dist.get_rank()
    table = pq.read_table(job_dir / "samples.parquet")
    rows = np.arange(rank, table.num_rows, world)
    shard = table.take(pa.array(rows, type=pa.int64()))
    show = payload["progress"] and rank == 0
    answers = answer_table(payload["checkpoint"], shard, payload["image_root"], cfg, show)
    if judged_on_ranks(cfg):
        with make_judge(cfg.judge) as judge:
            result = judge_answers(answers, judge)
        write_accuracy_table(result.per_cluster, job_dir / f"accuracy{rank}.parquet")
        answers = result.per_sample
    write_parquet(answers.assign(row=rows), job_dir / f"samples{rank}.parquet")
    dist.barrier()
