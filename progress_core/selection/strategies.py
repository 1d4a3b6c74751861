"""Selection strategies: which samples of the remaining pool to train on next (PROGRESS §3.3, docs/algorithm.md#baseline-strategies).

One interface for every strategy::

    select(strategy, remaining, cluster_ids, history, budget, rng, **options) -> SelectionResult

- ``remaining``: int64 sample_ids still in the pool (unique).
- ``cluster_ids``: int64 annotation cluster of every sample of the manifest, indexed by sample_id.
- ``history``: what earlier rounds know (:class:`SelectionHistory`: accuracy tables at the previous and
  the current probe, the sample_ids selected so far, the COINCIDE pruning order).
- ``budget``: samples to select (SELECTION_NUM = 7500, docs/algorithm.md#selection).
- ``rng``: a ``numpy.random.Generator`` or a seed; same inputs and seed give the same ids, in the same order.

Strategies live in :data:`STRATEGIES` (add one with :func:`register_strategy`):
``progress`` (relative accuracy change, docs/algorithm.md#selection / the original ``acc_sort.py``), ``random``,
``coincide`` (the whole budget by the COINCIDE pruning order), ``tfs`` (Tail First Sampling, ALOR) and
``full``. Every strategy works on arrays of sample_ids with numpy set operations, never Python loops over
samples, so a 665K pool takes milliseconds (benchmarks/bench_selection.py).

Decisions shared by all strategies: an empty pool gives an empty selection with a note (the loop simply
ends), and a budget at least as large as the pool takes the whole pool with a note.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from progress_core.probe.accuracy_table import validate_accuracy_table
from progress_core.selection.allocation import damped_progress
from progress_core.selection.config import ProgressOptions
from progress_core.selection.context import (
    MissingHistoryError,
    SelectionContext,
    SelectionError,
    SelectionHistory,
    SelectionResult,
    as_ids,
    as_rng,
    basic_table,
    cluster_table,
    draw_within_clusters,
    edge_selection,
    make_context,
    with_probe_noise,
)

Strategy = Callable[["SelectionContext", np.random.Generator, dict], SelectionResult]
STRATEGIES: dict[str, Strategy] = {}
STRATEGY_OPTIONS: dict[str, type[BaseModel] | None] = {}


def register_strategy(name: str, options: type[BaseModel] | None = None) -> Callable[[Strategy], Strategy]:
    """Decorator adding a strategy ``fn(ctx, rng, options) -> SelectionResult`` under ``name``.

    ``options`` is the pydantic model validating the strategy's keyword options (none accepted if None).
    """

    def decorate(fn: Strategy) -> Strategy:
        if name in STRATEGIES:
            raise SelectionError(f"strategy {name!r} is already registered")
        STRATEGIES[name] = fn
        STRATEGY_OPTIONS[name] = options
        return fn

    return decorate


def available_strategies() -> list[str]:
    """Names of the registered strategies, sorted."""
    return sorted(STRATEGIES)


def select(
    strategy: str,
    remaining,
    cluster_ids,
    history: SelectionHistory | None,
    budget: int,
    rng: np.random.Generator | int | None = 0,
    **options,
) -> SelectionResult:
    """Select up to ``budget`` sample_ids from ``remaining`` with the named strategy (see module doc).

    Raises :class:`SelectionError` for an unknown strategy or option and inconsistent inputs, and
    :class:`MissingHistoryError` when the strategy needs history it was not given.
    """
    if strategy not in STRATEGIES:
        raise SelectionError(f"unknown strategy {strategy!r}; available: {', '.join(available_strategies())}")
    model = STRATEGY_OPTIONS[strategy]
    if model is None:
        if options:
            raise SelectionError(f"strategy {strategy!r} takes no options, got {sorted(options)}")
        parsed: object = None
    else:
        try:
            parsed = model(**options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise SelectionError(f"strategy {strategy!r}: option {where}: {first['msg']}") from None
    ctx = make_context(remaining, cluster_ids, history, budget)
    result = STRATEGIES[strategy](ctx, as_rng(rng), parsed)
    result.sample_ids = np.asarray(result.sample_ids, dtype=np.int64)
    result.cluster_table = with_probe_noise(result.cluster_table, ctx.history)
    return result


def _progress_scores(ctx: SelectionContext, opts: ProgressOptions) -> pd.DataFrame:
    """Per probed cluster: a_prev, a_now, delta, the floored baseline and the progress score (docs/algorithm.md#selection)."""
    h = ctx.history
    if h.acc_now is None:
        raise MissingHistoryError(
            "strategy 'progress' needs the accuracy at the current probe (acc_now); learning progress needs two probes"
        )
    now = validate_accuracy_table(h.acc_now, "acc_now")
    now = now[now["accuracy"].notna()]
    prev = validate_accuracy_table(h.acc_prev, "acc_prev") if h.acc_prev is not None else None
    cid = now["cluster_id"].to_numpy()
    a_now = now["accuracy"].to_numpy()
    judged = np.maximum((now["n"] - now["unjudged"]).to_numpy(), 1)
    a_prev_raw = np.full(cid.size, np.nan)
    if prev is not None and not prev.empty:
        prev_acc = pd.Series(prev["accuracy"].to_numpy(), index=prev["cluster_id"].to_numpy())
        a_prev_raw = prev_acc.reindex(cid).to_numpy(dtype=np.float64)
    a_prev = np.nan_to_num(a_prev_raw, nan=0.0)
    delta = a_now - a_prev
    floor = 1.0 / judged
    if opts.progress_measure == "relative_change":
        baseline = np.where(a_prev == 0, floor, a_prev)
    else:
        baseline = np.maximum(1.0 - a_prev, floor)
    rel = (
        (a_now - a_prev) / baseline
        if opts.progress_measure == "relative_error_reduction"
        else (a_now - baseline) / baseline
    )
    return pd.DataFrame(
        {"cluster_id": cid, "acc_prev": a_prev_raw, "acc_now": a_now, "delta": delta, "baseline": baseline, "rel": rel}
    )


def _softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    z = x / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


def _redistribute(quota: np.ndarray, avail: np.ndarray, prob: np.ndarray, target: int) -> np.ndarray:
    """Water-fill ``target - sum(quota)`` over clusters with room, in proportion to ``prob``; leftover
    units from flooring go one by one to the most probable clusters with room."""
    quota = quota.copy()
    while True:
        left = target - int(quota.sum())
        room = avail - quota
        free = room > 0
        if left <= 0 or not free.any():
            return quota
        share = prob * free
        add = np.minimum(np.floor(left * share / share.sum()).astype(np.int64), room)
        if add.sum() == 0:
            order = np.lexsort((np.arange(prob.size), -prob))
            order = order[free[order]][:left]
            add = np.zeros_like(quota)
            add[order] = 1
        quota += add


def _top_up(ctx: SelectionContext, chosen: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` more remaining samples not in ``chosen``, uniformly (exploration had too few candidates)."""
    taken = np.zeros(ctx.cluster_ids.size, dtype=bool)
    taken[chosen] = True
    free = ctx.remaining[~taken[ctx.remaining]]
    return free[rng.choice(free.size, size=min(n, free.size), replace=False)]


@dataclass
class _ProgressClusters:
    """Per-cluster arrays of one ``progress`` call, indexed by cluster_id over every cluster in the pool or
    the probe (``docs/algorithm.md#selection``): samples left, progress score, the exploit set P, and the
    softmax probability and quota each cluster of P gets."""

    avail: np.ndarray
    rel: np.ndarray
    improving: np.ndarray
    prob: np.ndarray
    quota: np.ndarray

    @property
    def size(self) -> int:
        return self.avail.size


def _progress_clusters(ctx: SelectionContext, scores: pd.DataFrame) -> _ProgressClusters:
    """Availability and progress score per cluster; P = {rel > 0 and samples left} (PROGRESS §3.3)."""
    scored_ids = scores["cluster_id"].to_numpy()
    k_all = max(ctx.n_clusters, int(scored_ids.max()) + 1 if scored_ids.size else 0)
    avail = np.zeros(k_all, dtype=np.int64)
    avail[: ctx.n_clusters] = ctx.available
    rel = np.full(k_all, np.nan)
    rel[scored_ids] = scores["rel"].to_numpy()
    return _ProgressClusters(
        avail=avail,
        rel=rel,
        improving=(rel > 0) & (avail > 0),
        prob=np.full(k_all, np.nan),
        quota=np.zeros(k_all, dtype=np.int64),
    )


def _explore_share(ctx: SelectionContext, opts: ProgressOptions) -> int:
    """floor((1 - exploit_frac) * budget), the original's exploration count."""
    return int(math.floor((1.0 - opts.exploit_frac) * ctx.budget + 1e-9))


def _exploit_quotas(
    ctx: SelectionContext, opts: ProgressOptions, clusters: _ProgressClusters, notes: list[str]
) -> np.ndarray:
    """Softmax(rel / T) over P and quota = min(floor(exploit_frac * budget * p), available), with the capped
    overflow redistributed or dropped (PROGRESS §3.3). Fills ``clusters.prob`` and ``clusters.quota`` and
    returns P in draw order: most probable first, ties by cluster_id."""
    p_clusters = np.flatnonzero(clusters.improving)
    p = _softmax(clusters.rel[p_clusters], opts.temperature)
    clusters.prob[p_clusters] = p
    avail = clusters.avail[p_clusters]
    raw = np.floor(opts.exploit_frac * ctx.budget * p).astype(np.int64)
    capped = np.minimum(raw, avail)
    n_capped = int((raw > capped).sum())
    if n_capped:
        overflow = int((raw - capped).sum())
        if opts.redistribute_overflow:
            capped = _redistribute(capped, avail, p, int(raw.sum()))
            notes.append(
                f"{n_capped} cluster(s) capped by availability: overflow {overflow} "
                f"redistributed, {int(raw.sum() - capped.sum())} left unfilled"
            )
        else:
            notes.append(f"{n_capped} cluster(s) capped by availability: {overflow} quota dropped (original behaviour)")
    clusters.quota[p_clusters] = capped
    return p_clusters[np.lexsort((p_clusters, -p))]


def _exploit_draw(
    ctx: SelectionContext,
    opts: ProgressOptions,
    clusters: _ProgressClusters,
    rng: np.random.Generator,
    notes: list[str],
) -> tuple[np.ndarray, int]:
    """The exploitation samples and how many exploration should then draw; with no improving cluster, the
    ``fallback_when_no_progress`` decides the exploration count (``docs/algorithm.md#selection``)."""
    k = ctx.n_clusters
    if clusters.improving.any():
        order = _exploit_quotas(ctx, opts, clusters, notes)
        exploit = draw_within_clusters(ctx, clusters.quota[:k], order[order < k], rng)
        n_explore = ctx.budget - int(exploit.size) if opts.redistribute_overflow else _explore_share(ctx, opts)
        return exploit, n_explore
    if opts.fallback_when_no_progress == "explore":
        notes.append("no cluster improved: whole budget explored uniformly (fallback 'explore')")
        return np.empty(0, dtype=np.int64), ctx.budget
    n_explore = _explore_share(ctx, opts)
    notes.append(f"no cluster improved: only the exploration share ({n_explore}) is selected (original behaviour)")
    return np.empty(0, dtype=np.int64), n_explore


def _explore_draw(
    ctx: SelectionContext, clusters: _ProgressClusters, n_target: int, rng: np.random.Generator, notes: list[str]
) -> np.ndarray:
    """``n_target`` samples drawn uniformly from every cluster outside P (declined, flat, never probed)."""
    outside = np.flatnonzero(~clusters.improving[: ctx.n_clusters][ctx.remaining_clusters])
    if outside.size < n_target:
        notes.append(
            f"exploration wants {n_target} but only {outside.size} samples lie outside "
            f"the improving clusters: taking all of them"
        )
        return ctx.remaining[outside]
    return ctx.remaining[outside[rng.choice(outside.size, size=n_target, replace=False)]]


def _progress_draw(
    ctx: SelectionContext,
    opts: ProgressOptions,
    clusters: _ProgressClusters,
    rng: np.random.Generator,
    notes: list[str],
) -> tuple[np.ndarray, int, int]:
    """Chosen sample_ids, exploit count and explore count of a round with budget < pool: exploitation,
    then exploration, then (``redistribute_overflow``) a uniform top-up so the round spends its budget.
    The draws happen in this order so a seed gives the same ids."""
    exploit, n_explore_target = _exploit_draw(ctx, opts, clusters, rng, notes)
    explore = _explore_draw(ctx, clusters, n_explore_target, rng, notes)
    chosen = np.concatenate([exploit, explore])
    short = ctx.budget - chosen.size
    if short > 0 and opts.redistribute_overflow:
        topped = _top_up(ctx, chosen, short, rng)
        notes.append(f"{topped.size} more drawn uniformly from the improving clusters to spend the budget")
        explore = np.concatenate([explore, topped])
        chosen = np.concatenate([chosen, topped])
    if chosen.size < ctx.budget:
        notes.append(f"selected {chosen.size} of budget {ctx.budget}")
    return chosen, int(exploit.size), int(explore.size)


def _progress_table(
    ctx: SelectionContext, scores: pd.DataFrame, clusters: _ProgressClusters, chosen: np.ndarray
) -> pd.DataFrame:
    """The per-cluster table of a ``progress`` round: availability, quota, selected, probability and the
    accuracies behind each score, for every cluster that had samples, a score or a pick."""
    k_all = clusters.size
    picked = (
        np.bincount(ctx.cluster_ids[chosen], minlength=k_all)[:k_all]
        if chosen.size
        else np.zeros(k_all, dtype=np.int64)
    )
    rows = np.flatnonzero((clusters.avail > 0) | ~np.isnan(clusters.rel) | (picked > 0))
    table = cluster_table(
        rows,
        available=clusters.avail[rows],
        quota=clusters.quota[rows],
        selected=picked[rows],
        probability=clusters.prob[rows],
    )
    if not scores.empty:
        s = scores.set_index("cluster_id").reindex(rows)
        for col in ("acc_prev", "acc_now", "delta", "baseline", "rel"):
            table[col] = s[col].to_numpy()
    return table


@register_strategy("progress", ProgressOptions)
def progress_strategy(ctx: SelectionContext, rng: np.random.Generator, opts: ProgressOptions) -> SelectionResult:
    """PROGRESS relative-change selection (PROGRESS §3.3, ``docs/algorithm.md#selection``).

    C = clusters with an accuracy now; a_prev = accuracy at the previous probe (0 if not probed then);
    delta = a_now - a_prev; baseline b = a_prev, or 1/n_now when a_prev == 0 (one correct answer out of the
    current probe, n_now = judged samples); rel = (a_now - b) / b (``relative_change``, the default) or
    (a_now - a_prev) / max(1 - a_prev, 1/n_now) (``relative_error_reduction``). Exploit set
    P = {rel > 0 and samples left}; p = softmax(rel / T) over P; quota = min(int(exploit_frac * budget * p), available), drawn uniformly
    inside each cluster. Exploration: uniformly over the samples of every other cluster (declined, flat,
    never probed). Default (``redistribute_overflow``): the capped overflow goes to the other improving
    clusters, exploration takes the rest of the budget and, if it has too few candidates, the remaining
    improving-cluster samples fill it, so a round spends its whole budget while samples remain. Original
    (``redistribute_overflow=False``): the overflow is dropped and exploration is floor((1 - exploit) *
    budget). No improving cluster: ``explore`` (default) spends the whole budget uniformly; ``original``
    takes the exploration share only.
    Clusters whose current accuracy is NaN (nothing judged) count as not probed.
    ``allocation: damped`` or ``balanced`` hands the round to
    :func:`progress_core.selection.allocation.damped_progress`.
    """
    if opts.allocation in ("damped", "balanced"):
        return damped_progress(ctx, rng, opts)
    scores = _progress_scores(ctx, opts)
    clusters = _progress_clusters(ctx, scores)
    chosen, notes = edge_selection(ctx)
    if chosen is None:
        chosen, n_exploit, n_explore = _progress_draw(ctx, opts, clusters, rng, notes)
    else:
        n_exploit, n_explore = 0, int(chosen.size)
    table = _progress_table(ctx, scores, clusters, chosen)
    return SelectionResult("progress", chosen, table, notes, n_exploit, n_explore)


@register_strategy("random")
def random_strategy(ctx: SelectionContext, rng: np.random.Generator, _opts) -> SelectionResult:
    """Uniform over the remaining pool at equal budget (docs/algorithm.md#baseline-strategies baseline)."""
    chosen, notes = edge_selection(ctx)
    if chosen is None:
        chosen = ctx.remaining[rng.choice(ctx.remaining.size, size=ctx.budget, replace=False)]
    return SelectionResult("random", chosen, basic_table(ctx, chosen), notes, 0, int(chosen.size))


@register_strategy("coincide")
def coincide_strategy(ctx: SelectionContext, rng: np.random.Generator, _opts) -> SelectionResult:
    """The first ``budget`` samples of the COINCIDE pruning order that are still remaining (docs/algorithm.md#warm-up-pools:
    the whole budget by COINCIDE at once). Deterministic; the seed is unused."""
    order = ctx.history.coincide_order
    if order is None:
        raise MissingHistoryError(
            "strategy 'coincide' needs history.coincide_order (sample_ids in COINCIDE priority order)"
        )
    order = as_ids(order, "coincide_order")
    n = ctx.cluster_ids.size
    if order.size and (order.min() < 0 or order.max() >= n):
        raise SelectionError(f"coincide_order: sample_id outside the manifest's 0..{n - 1}")
    if order.size and np.bincount(order, minlength=n).max() > 1:
        dup = int(np.argmax(np.bincount(order, minlength=n)))
        raise SelectionError(f"coincide_order: sample_id {dup} appears more than once")
    in_pool = np.zeros(n, dtype=bool)
    in_pool[ctx.remaining] = True
    ranked = order[in_pool[order]]
    notes = []
    if ctx.remaining.size == 0:
        notes.append("remaining pool is empty: nothing to select")
    if ranked.size < min(ctx.budget, ctx.remaining.size):
        notes.append(
            f"coincide order covers only {ranked.size} of the {ctx.remaining.size} remaining "
            f"samples: selecting {min(ranked.size, ctx.budget)}"
        )
    chosen = ranked[: ctx.budget]
    return SelectionResult("coincide", chosen, basic_table(ctx, chosen), notes, 0, int(chosen.size))


def tfs_takes(counts: np.ndarray, avail: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Samples per cluster that repeated 'draw from the least represented cluster' ends with.

    Water-filling: the largest level L with sum(min(avail, max(0, L - counts))) <= budget fills every
    cluster with room up to L; the few units left go to random clusters sitting at level L with room.
    """
    has = avail > 0

    def need(level: int) -> int:
        return int(np.minimum(avail, np.maximum(0, level - counts)).sum())

    lo = int(counts[has].min())
    hi = int((counts + avail)[has].max())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if need(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    takes = np.minimum(avail, np.maximum(0, lo - counts))
    left = budget - int(takes.sum())
    if left > 0:
        at_level = np.flatnonzero((counts + takes == lo) & (takes < avail))
        takes[rng.choice(at_level, size=left, replace=False)] += 1
    return takes


@register_strategy("tfs")
def tfs_strategy(ctx: SelectionContext, rng: np.random.Generator, _opts) -> SelectionResult:
    """Tail First Sampling (ALOR): repeatedly draw from the cluster least represented among the samples
    selected so far (history.selected plus this call's picks), ties broken at random, among clusters
    with samples left. Computed in one water-filling step instead of one draw at a time; ids come out in
    draw order (by the level each pick fills, ties in random cluster order)."""
    chosen, notes = edge_selection(ctx)
    if chosen is not None:
        return SelectionResult("tfs", chosen, basic_table(ctx, chosen), notes, 0, int(chosen.size))
    k = ctx.n_clusters
    sel = ctx.history.selected
    counts = np.bincount(ctx.cluster_ids[sel], minlength=k)[:k] if sel.size else np.zeros(k, dtype=np.int64)
    takes = tfs_takes(counts.astype(np.int64), ctx.available, ctx.budget, rng)
    clusters = np.flatnonzero(takes > 0)
    chosen = draw_within_clusters(ctx, takes, clusters, rng)
    level = (
        np.concatenate([counts[c] + np.arange(takes[c]) for c in clusters.tolist()])
        if clusters.size
        else np.empty(0, dtype=np.int64)
    )
    tie = rng.permutation(k)[np.repeat(clusters, takes[clusters])]
    chosen = chosen[np.lexsort((tie, level))]
    table = basic_table(ctx, chosen)
    return SelectionResult("tfs", chosen, table, notes, 0, int(chosen.size))


@register_strategy("full")
def full_strategy(ctx: SelectionContext, rng: np.random.Generator, _opts) -> SelectionResult:
    """Everything remaining, whatever the budget (docs/algorithm.md#baseline-strategies: the full-data reference)."""
    notes = ["strategy 'full': taking the whole remaining pool"]
    if ctx.remaining.size and ctx.budget < ctx.remaining.size:
        notes.append(f"budget {ctx.budget} ignored: selecting all {ctx.remaining.size} remaining samples")
    chosen = ctx.remaining.copy()
    return SelectionResult("full", chosen, basic_table(ctx, chosen), notes, 0, int(chosen.size))
