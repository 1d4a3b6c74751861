"""Round commit and per-round selection (PROGRESS §3.3, docs/algorithm.md#selection).

Every round r commits its new samples at the step it starts from (``new_<r>``, ``selected_until_<step>``,
``remaining_after_<step>``): the two warm-up rounds commit W1 and W2, later rounds select by the configured
strategy from the remaining pool using the last two probes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from prefect import task

from progress_core.id_sets import read_ids
from progress_core.io import write_parquet
from progress_core.probe.accuracy_table import read_accuracy_table
from progress_core.selection.config import LABEL_STRATEGIES, SelectionConfig
from progress_core.selection.context import SelectionError, SelectionHistory
from progress_core.selection.oracle import ORACLE_RULES, oracle_concepts, oracle_select
from progress_core.selection.rounds import commit_round
from progress_core.selection.strategies import select
from tasks._tables import cluster_ids, ids_of
from tasks.stage import StageRecord, stage, stage_cache_key


def _commit(
    out_dir: str,
    round_index: int,
    step: int,
    new_ids: np.ndarray,
    selected_before: StageRecord | None,
    remaining_before: StageRecord | None,
    n_samples: int,
) -> tuple[dict[str, str], dict[str, int]]:
    selected = ids_of(selected_before, "selected_until")
    remaining = ids_of(remaining_before, "remaining_after")
    selected = np.empty(0, np.int64) if selected is None else selected
    remaining = np.arange(n_samples, dtype=np.int64) if remaining is None else remaining
    sel_until, rem_after = commit_round(out_dir, round_index, step, new_ids, selected, remaining)
    out = Path(out_dir)
    files = {
        "new": str(out / f"new_{round_index}.parquet"),
        "selected_until": str(out / f"selected_until_{step}.parquet"),
        "remaining_after": str(out / f"remaining_after_{step}.parquet"),
    }
    rows = {"new": int(len(new_ids)), "selected_until": int(len(sel_until)), "remaining_after": int(len(rem_after))}
    return files, rows


@task(name="commit-warmup", cache_key_fn=stage_cache_key, persist_result=True, task_run_name="commit[r={round_index}]")
@stage("commit_warmup")
def commit_warmup_stage(
    pools: StageRecord,
    pool_name: str,
    selected_before: StageRecord | None,
    remaining_before: StageRecord | None,
    n_samples: int,
    round_index: int,
    step: int,
    out_dir: str,
) -> StageRecord:
    """Commit a warm-up pool (W1 or W2) as the round's new samples."""
    new_ids = read_ids(pools.files[pool_name])
    files, rows = _commit(out_dir, round_index, step, new_ids, selected_before, remaining_before, n_samples)
    return StageRecord(
        stage="commit_warmup",
        out_dir=out_dir,
        files=files,
        rows=rows,
        meta={"round": round_index, "step": step, "strategy": f"warmup:{pool_name}"},
    )


def strategy_options(settings: SelectionConfig) -> dict:
    """The chosen strategy's options from the run config (only ``progress`` takes options)."""
    return settings.progress_options() if settings.strategy == "progress" else {}


def pool_concepts(manifest: StageRecord | None, strategy: str = "oracle") -> np.ndarray:
    """The oracle's labels per sample_id (:func:`oracle_concepts` of the pool's ``labels.parquet``); the start's
    known concepts count as learnable for the rules that do not skip them."""
    labels = manifest.meta.get("labels") if manifest is not None else None
    if not labels:
        raise SelectionError(
            f"strategy '{strategy}' reads the pool's labels; this pool has none (only bundled pools do)"
        )
    ids = pq.read_table(manifest.files["manifest"], columns=["id"]).column("id").to_numpy(zero_copy_only=False)
    return oracle_concepts(pd.read_parquet(labels), ids, skip_known=ORACLE_RULES[strategy].skips_known)


@task(name="select", cache_key_fn=stage_cache_key, persist_result=True, task_run_name="select[r={round_index}]")
@stage("select")
def select_stage(
    settings: SelectionConfig,
    budget: int,
    seed: int,
    annotation: StageRecord,
    selected_before: StageRecord,
    remaining_before: StageRecord,
    acc_prev: StageRecord | None,
    acc_now: StageRecord | None,
    coincide_order: StageRecord | None,
    n_samples: int,
    round_index: int,
    step: int,
    out_dir: str,
    manifest: StageRecord | None = None,
) -> StageRecord:
    """Select up to ``budget`` new samples and commit them; the per-cluster table explains the choice.

    ``manifest`` is given only to the label-reading oracle rules (benchmark-only), which get their labels from it."""
    history = SelectionHistory(
        acc_prev=read_accuracy_table(acc_prev.files["per_cluster"]) if acc_prev else None,
        acc_now=read_accuracy_table(acc_now.files["per_cluster"]) if acc_now else None,
        selected=ids_of(selected_before, "selected_until"),
        coincide_order=ids_of(coincide_order, "order"),
    )
    rng = np.random.default_rng([seed, round_index])
    remaining, clusters = ids_of(remaining_before, "remaining_after"), cluster_ids(annotation)
    if settings.strategy in LABEL_STRATEGIES:
        concepts = pool_concepts(manifest, settings.strategy)
        result = oracle_select(remaining, clusters, history, budget, rng, concepts, rule=settings.strategy)
    else:
        result = select(settings.strategy, remaining, clusters, history, budget, rng, **strategy_options(settings))
    files, rows = _commit(out_dir, round_index, step, result.sample_ids, selected_before, remaining_before, n_samples)
    files["clusters"] = str(write_parquet(result.cluster_table, Path(out_dir) / "selection_clusters.parquet"))
    return StageRecord(
        stage="select",
        out_dir=out_dir,
        files=files,
        rows=rows,
        meta={
            "round": round_index,
            "step": step,
            "strategy": settings.strategy,
            "budget": budget,
            "notes": list(result.notes),
            "n_exploit": result.n_exploit,
            "n_explore": result.n_explore,
            "probabilities": {str(k): v for k, v in result.probabilities.items()},
        },
    )
