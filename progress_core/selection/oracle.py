"""The ``oracle`` strategy: the best label-aware allocation stated simply (benchmark-only, never a default).

It reads what no real run has, the labels (:func:`oracle_concepts` of the pool's ``labels.parquet``: one concept index
per sample, -1 for near-duplicate copies, label-noised rows, the unlearnable family and what the start
already knows), and spreads the budget uniformly over the learnable concepts: Tail First Sampling on
concepts instead of clusters, counting what earlier rounds selected. Only once every learnable sample is
taken does it fall back to uniform over the rest. ``oracle − random`` is the headroom a pool offers any
allocator (README "Does selection pay off?").

Two more rules of the same family (:data:`ORACLE_RULES`; README "A learner that forgets"), for a learner that
forgets what it is not fed (each PROGRESS round trains only on its new samples, §3.3): ``oracle_every_round``
spreads every round evenly over all learnable concepts, the ones the start already knows included, without
counting earlier rounds; ``oracle_clean`` draws uniformly from the rows worth training, known ones included,
so the budget follows the pool's proportions as ``random`` does and only the waste is skipped.

The rules are deliberately not in the strategy registry (``progress_core.selection.STRATEGIES``): no
strategy listing, ``progress select`` or default offers them. A run or a comparison names one as
``selection.strategy: oracle`` (``-s oracle``, ``-s oracle_every_round``, ``-s oracle_clean``) on a bundled
pool, whose ``labels.parquet`` it reads; a user's pool has no labels and is refused before any stage. :func:`oracle_select` validates its inputs with the same context as
``select()``; the select stage and the proxy screen (``benchmarks/bench_proxy.py``) call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from progress_core.selection.config import OracleRule
from progress_core.selection.context import (
    SelectionContext,
    SelectionError,
    SelectionResult,
    as_rng,
    basic_table,
    edge_selection,
    make_context,
    with_probe_noise,
)
from progress_core.selection.strategies import tfs_takes


@dataclass(frozen=True)
class OracleSpread:
    """How an oracle rule spends a round on the learnable rows (module doc)."""

    even: bool
    """Level the picks over concepts (water-filling) rather than draw uniformly over rows."""
    counts_earlier_rounds: bool
    """Level counting what earlier rounds selected (``even`` only)."""
    skips_known: bool
    """Treat the families the start already knows as not worth training."""


ORACLE_RULES: dict[str, OracleSpread] = {
    "oracle": OracleSpread(even=True, counts_earlier_rounds=True, skips_known=True),
    "oracle_every_round": OracleSpread(even=True, counts_earlier_rounds=False, skips_known=False),
    "oracle_clean": OracleSpread(even=False, counts_earlier_rounds=False, skips_known=False),
}


class OracleOptions(BaseModel):
    """``concepts``: int64 per sample_id of the manifest, a learnable concept's index or -1 (module doc)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    concepts: np.ndarray = Field(description="concept index per sample_id, -1 = not worth training")
    rule: OracleRule = Field("oracle", description="which oracle rule of ORACLE_RULES spends the round")

    @field_validator("concepts", mode="before")
    @classmethod
    def _as_int_array(cls, value):
        arr = np.asarray(value)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ValueError("must be a 1-D integer array")
        return arr.astype(np.int64, copy=False)


def _concept_draw(ctx: SelectionContext, concepts: np.ndarray, rng: np.random.Generator, spread: OracleSpread):
    """Water-filling over learnable concepts (as ``tfs``) or, not ``spread.even``, a uniform draw of learnable
    rows; then uniform over the remaining rows if any budget is left (module doc)."""
    remaining = ctx.remaining
    learnable = remaining[concepts[remaining] >= 0]
    if not spread.even:
        chosen = learnable[rng.choice(learnable.size, size=min(ctx.budget, learnable.size), replace=False)]
        return _fill_with_waste(ctx, concepts, chosen, rng)
    k = int(concepts.max()) + 1 if (concepts >= 0).any() else 0
    sel = ctx.history.selected if spread.counts_earlier_rounds else np.empty(0, dtype=np.int64)
    sel = sel[concepts[sel] >= 0] if sel.size else sel
    counts = np.bincount(concepts[sel], minlength=k)[:k].astype(np.int64) if k else np.zeros(0, np.int64)
    avail = np.bincount(concepts[learnable], minlength=k)[:k].astype(np.int64) if k else np.zeros(0, np.int64)
    take = min(ctx.budget, int(learnable.size))
    parts = []
    if take:
        takes = tfs_takes(counts, avail, take, rng)
        order = np.argsort(concepts[learnable], kind="stable")
        grouped = learnable[order]
        starts = np.concatenate([[0], np.cumsum(avail)])
        for c in np.flatnonzero(takes).tolist():
            members = grouped[starts[c] : starts[c + 1]]
            parts.append(members[rng.choice(members.size, size=int(takes[c]), replace=False)])
    chosen = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    return _fill_with_waste(ctx, concepts, chosen, rng)


def _fill_with_waste(ctx: SelectionContext, concepts: np.ndarray, chosen: np.ndarray, rng) -> np.ndarray:
    """What is left of the budget once the learnable rows are gone, uniformly from the rest."""
    rest = ctx.budget - chosen.size
    if rest > 0:
        others = ctx.remaining[concepts[ctx.remaining] < 0]
        chosen = np.concatenate([chosen, others[rng.choice(others.size, size=min(rest, others.size), replace=False)]])
    return chosen


def oracle_select(remaining, cluster_ids, history, budget: int, rng, concepts, rule: str = "oracle") -> SelectionResult:
    """``select(rule, ...)`` with the labels as ``concepts`` (module doc); same checks, same result type."""
    try:
        opts = OracleOptions(concepts=concepts, rule=rule)
    except ValueError as exc:
        err = exc.errors()[0]
        raise SelectionError(f"strategy '{rule}': option {err['loc'][0]}: {err['msg']}") from None
    return oracle_strategy(make_context(remaining, cluster_ids, history, budget), as_rng(rng), opts)


def oracle_strategy(ctx: SelectionContext, rng: np.random.Generator, opts: OracleOptions) -> SelectionResult:
    """The learnable rows by ``opts.rule``, no duplicates, no noised rows (module doc)."""
    if opts.concepts.size != ctx.cluster_ids.size:
        raise SelectionError(
            f"strategy '{opts.rule}': concepts has {opts.concepts.size} entries for {ctx.cluster_ids.size} samples"
        )
    chosen, notes = edge_selection(ctx)
    if chosen is None:
        chosen = _concept_draw(ctx, opts.concepts, rng, ORACLE_RULES[opts.rule])
    table = with_probe_noise(basic_table(ctx, chosen), ctx.history)
    return SelectionResult(opts.rule, chosen, table, notes, 0, int(chosen.size))


def oracle_concepts(labels: pd.DataFrame, ids: list[str] | np.ndarray, skip_known: bool = True) -> np.ndarray:
    """Per pool row (in ``ids`` order): a concept index for rows worth training, -1 for the rest.

    Not worth training: near-duplicate copies, label-noised rows, the unlearnable ``random`` family and, with
    ``skip_known`` (the rule's ``skips_known``), the families the start already knows. This is what the oracle
    rules read; no real run has it.
    """
    lab = labels.drop_duplicates("id").set_index("id").reindex(pd.Index(np.asarray(ids, dtype=str)))
    dup = lab["duplicate_of"].fillna("").astype(str) != "" if "duplicate_of" in lab else False
    noisy = lab["noisy"].fillna(False).astype(bool) if "noisy" in lab else False
    known = lab["known"].fillna(False).astype(bool) if "known" in lab and skip_known else False
    waste = dup | noisy | known | (lab["family"] == "random") | lab["concept"].isna()
    codes = pd.Categorical(lab["concept"].fillna("")).codes.astype(np.int64)
    return np.where(np.asarray(waste, dtype=bool), -1, codes)
