"""What every selection rule works on and returns: the round's context, its result and the per-cluster table
(docs/algorithm.md#selection); the strategies, the damped allocation and the benchmark oracle share it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from progress_core.errors import ProgressError
from progress_core.probe.accuracy_table import probe_standard_errors


class SelectionError(ProgressError):
    """Selection inputs are inconsistent (unknown strategy or option, ids out of range, duplicates)."""


class MissingHistoryError(SelectionError):
    """The strategy needs something the history does not have (PROGRESS needs two probes; COINCIDE an order)."""


CLUSTER_TABLE_COLUMNS = (
    "cluster_id",
    "acc_prev",
    "acc_now",
    "delta",
    "baseline",
    "rel",
    "probability",
    "available",
    "quota",
    "selected",
    "se_prev",
    "se_now",
    "se_change",
)
"""Columns of :attr:`SelectionResult.cluster_table` (docs/architecture.md#stage-contract: the per-round cluster artifact);
``se_*``: the probe's binomial standard errors (:func:`with_probe_noise`, docs/algorithm.md#probe-noise)."""


@dataclass
class SelectionHistory:
    """What a strategy may know about earlier rounds.

    ``acc_prev``/``acc_now``: accuracy tables (:mod:`progress_core.probe.accuracy_table`) of the previous and the
    current probe; ``selected``: sample_ids selected so far (warm-up pools included); ``coincide_order``:
    sample_ids in COINCIDE pruning priority order.
    """

    acc_prev: pd.DataFrame | None = None
    acc_now: pd.DataFrame | None = None
    selected: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    coincide_order: np.ndarray | None = None


@dataclass
class SelectionResult:
    """A round's selection and why it was made.

    ``sample_ids``: selected ids in a deterministic order (exploitation clusters by decreasing probability,
    then exploration, for ``progress``). ``cluster_table``: one row per cluster that was probed or has
    samples left (:data:`CLUSTER_TABLE_COLUMNS`, NaN where a column does not apply). ``notes``: the
    decisions a person reading the round should know about.
    """

    strategy: str
    sample_ids: np.ndarray
    cluster_table: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    n_exploit: int = 0
    n_explore: int = 0

    @property
    def probabilities(self) -> dict[int, float]:
        """``{cluster_id: softmax probability}`` of the exploitation clusters, as the original's
        ``fastest_selected_cluster_accuracies_{num}.json`` (docs/algorithm.md#selection)."""
        t = self.cluster_table
        if t.empty:
            return {}
        t = t[t["probability"].notna()]
        return {int(c): float(p) for c, p in zip(t["cluster_id"].tolist(), t["probability"].tolist())}


@dataclass
class SelectionContext:
    """Validated inputs of one selection call, with the per-cluster availability computed once."""

    remaining: np.ndarray
    cluster_ids: np.ndarray
    history: SelectionHistory
    budget: int
    remaining_clusters: np.ndarray
    available: np.ndarray

    @property
    def n_clusters(self) -> int:
        return self.available.size


def as_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise SelectionError(f"rng must be a numpy Generator or an integer seed, got {type(rng).__name__}")


def as_ids(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise SelectionError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise SelectionError(f"{name} must hold integer ids, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def make_context(remaining, cluster_ids, history: SelectionHistory | None, budget: int) -> SelectionContext:
    cluster_ids = as_ids(cluster_ids, "cluster_ids")
    remaining = as_ids(remaining, "remaining")
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0:
        raise SelectionError(f"budget must be a non-negative integer, got {budget!r}")
    n = cluster_ids.size
    if cluster_ids.size and cluster_ids.min() < 0:
        raise SelectionError(
            f"cluster_ids: sample {int(np.argmin(cluster_ids))} has negative cluster {int(cluster_ids.min())}"
        )
    if remaining.size:
        lo, hi = int(remaining.min()), int(remaining.max())
        if lo < 0 or hi >= n:
            bad = lo if lo < 0 else hi
            raise SelectionError(f"remaining: sample_id {bad} is outside the manifest's 0..{n - 1}")
        counts = np.bincount(remaining, minlength=n)
        if counts.max() > 1:
            raise SelectionError(f"remaining: sample_id {int(np.argmax(counts))} appears more than once")
    history = history if history is not None else SelectionHistory()
    selected = as_ids(history.selected if history.selected is not None else [], "history.selected")
    if selected.size and (selected.min() < 0 or selected.max() >= n):
        raise SelectionError(f"history.selected: sample_id outside the manifest's 0..{n - 1}")
    history = SelectionHistory(history.acc_prev, history.acc_now, selected, history.coincide_order)
    k = int(cluster_ids.max()) + 1 if n else 0
    remaining_clusters = cluster_ids[remaining]
    available = np.bincount(remaining_clusters, minlength=k).astype(np.int64)
    return SelectionContext(remaining, cluster_ids, history, int(budget), remaining_clusters, available)


def cluster_table(cluster_id: np.ndarray, **columns) -> pd.DataFrame:
    n = cluster_id.size
    data = {"cluster_id": cluster_id.astype(np.int64)}
    for col in CLUSTER_TABLE_COLUMNS[1:]:
        if col in columns:
            data[col] = columns[col]
        elif col in ("available", "quota", "selected"):
            data[col] = np.zeros(n, dtype=np.int64)
        else:
            data[col] = np.full(n, np.nan)
    return pd.DataFrame(data)


def with_probe_noise(table: pd.DataFrame, history: SelectionHistory | None) -> pd.DataFrame:
    """``table`` with ``se_prev``, ``se_now`` and ``se_change`` of each row's cluster from the two probes the
    round saw (NaN for a cluster a probe missed), whatever the strategy: a reader sees which changes are
    larger than the probe's noise (docs/algorithm.md#probe-noise)."""
    h = history if history is not None else SelectionHistory()
    noise = probe_standard_errors(h.acc_prev, h.acc_now).reindex(table["cluster_id"].to_numpy())
    out = table.copy()
    for col in ("se_prev", "se_now", "se_change"):
        out[col] = noise[col].to_numpy(dtype=np.float64)
    return out


def basic_table(ctx: SelectionContext, chosen: np.ndarray) -> pd.DataFrame:
    picked = np.bincount(ctx.cluster_ids[chosen], minlength=ctx.n_clusters)
    clusters = np.flatnonzero((ctx.available > 0) | (picked > 0))
    return cluster_table(clusters, available=ctx.available[clusters], quota=picked[clusters], selected=picked[clusters])


def edge_selection(ctx: SelectionContext) -> tuple[np.ndarray | None, list[str]]:
    """The round's selection when there is nothing to choose between, with its note: an empty pool gives
    nothing, a budget of the whole pool gives all of it; ``(None, [])`` when the strategy must draw."""
    if ctx.remaining.size == 0:
        return ctx.remaining, ["remaining pool is empty: nothing to select"]
    if ctx.budget >= ctx.remaining.size:
        return ctx.remaining.copy(), [take_all_note(ctx)]
    return None, []


def take_all_note(ctx: SelectionContext) -> str:
    return f"budget {ctx.budget} >= remaining {ctx.remaining.size}: taking all"


def draw_within_clusters(
    ctx: SelectionContext, quotas: np.ndarray, cluster_order: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Uniform draw without replacement of ``quotas[c]`` remaining samples of each cluster in
    ``cluster_order`` (the original's shuffle + take-first-n per cluster, docs/algorithm.md#selection)."""
    wanted = cluster_order[quotas[cluster_order] > 0]
    if wanted.size == 0:
        return np.empty(0, dtype=np.int64)
    mask = np.zeros(ctx.n_clusters, dtype=bool)
    mask[wanted] = True
    candidates = np.flatnonzero(mask[ctx.remaining_clusters])
    cand_clusters = ctx.remaining_clusters[candidates]
    key = cand_clusters.astype(np.uint16) if ctx.n_clusters <= np.iinfo(np.uint16).max + 1 else cand_clusters
    order = np.argsort(key, kind="stable")
    sorted_candidates = candidates[order]
    starts = np.zeros(ctx.n_clusters + 1, dtype=np.int64)
    np.cumsum(np.bincount(cand_clusters, minlength=ctx.n_clusters), out=starts[1:])
    parts = []
    for c in wanted.tolist():
        lo, hi = starts[c], starts[c + 1]
        pick = rng.choice(hi - lo, size=int(quotas[c]), replace=False)
        parts.append(sorted_candidates[lo + pick])
    return ctx.remaining[np.concatenate(parts)]
