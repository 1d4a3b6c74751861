"""Damped, size-aware allocation of a ``progress`` round (``selection.allocation: damped``).

The paper's rule (PROGRESS §3.3, ``docs/algorithm.md#selection``) is a softmax over clusters, blind to their
size, with a relative change whose floor (a_prev = 0 → 1 / probe size) turns one lucky probe answer into
the largest score; on the bundled pool it hands most of a round to one cluster. This rule keeps the idea
(spend more where the probe moved) and bounds what noise can do, as Exp3.S and ALP-GMM mix a uniform share
into their bandit:

- signal per cluster: the probe change in standard errors, ``z = Δ / SE`` with the binomial SE of the two
  probes (pooled accuracy), soft-thresholded at one SE: ``s = max(|z| - 1, 0)`` (``abs_change``: forgetting
  re-attracts budget) or ``max(z - 1, 0)`` (``gain``); ``abs_change_2se`` thresholds ``|z|`` at two SE. A
  change within the probe's noise gives no tilt; a cluster without two probes gets none either.
- per-sample weight ``w = 1 + (max_tilt - 1) * s / max(s)``, so no cluster's samples weigh more than
  ``max_tilt`` times an untilted cluster's.
- per-sample rate ``r = uniform_share + (1 - uniform_share) * w / mean(w)`` (mean over remaining samples);
  a cluster's quota is ``budget * available * r / Σ available * r``, capped by what it has left, the cap's
  overflow spread over the others by the same rates (water-filling). With no signal it is ``random``
  stratified by cluster.

``selection.allocation: balanced`` keeps the signal, the tilt and the uniform share, but gives every cluster
with samples left the same untilted share of the round instead of a share proportional to its size
(:func:`balanced_rates`): the label-free reading of the oracle's even spread over concepts, so the small
sources a size-proportional draw underfeeds get their share every round (README "A learner that forgets").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from progress_core.probe.accuracy_table import validate_accuracy_table
from progress_core.selection.config import ProgressOptions
from progress_core.selection.context import (
    MissingHistoryError,
    SelectionContext,
    SelectionResult,
    cluster_table,
    draw_within_clusters,
    edge_selection,
)

NOISE_THRESHOLD_SE = {"abs_change": 1.0, "gain": 1.0, "abs_change_2se": 2.0}
"""Standard errors of probe change that give no tilt, per ``progress_signal`` (README "A learner that forgets":
at one SE, noise alone tilts a third of the clusters)."""


def probe_change_signal(
    acc_prev: pd.DataFrame | None, acc_now: pd.DataFrame, signal: str = "abs_change"
) -> pd.DataFrame:
    """Per cluster probed now: a_prev, a_now, delta, the SE of delta and the soft-thresholded signal (module doc)."""
    now = validate_accuracy_table(acc_now, "acc_now")
    now = now[now["accuracy"].notna()]
    judged_now = (now["n"] - now["unjudged"]).to_numpy(dtype=np.float64)
    out = pd.DataFrame({"cluster_id": now["cluster_id"].to_numpy(), "acc_now": now["accuracy"].to_numpy()})
    out["acc_prev"] = np.nan
    judged_prev = np.zeros(len(out))
    if acc_prev is not None:
        prev = validate_accuracy_table(acc_prev, "acc_prev").set_index("cluster_id").reindex(out["cluster_id"])
        out["acc_prev"] = prev["accuracy"].to_numpy()
        judged_prev = (prev["n"] - prev["unjudged"]).fillna(0).to_numpy(dtype=np.float64)
    out["delta"] = out["acc_now"] - out["acc_prev"]
    both = out["acc_prev"].notna().to_numpy() & (judged_prev > 0) & (judged_now > 0)
    pooled = np.where(both, (out["acc_prev"].fillna(0) * judged_prev + out["acc_now"] * judged_now), 0.0)
    pooled = pooled / np.maximum(judged_prev + judged_now, 1)
    inv = np.where(both, 1 / np.maximum(judged_prev, 1) + 1 / np.maximum(judged_now, 1), np.nan)
    se = np.sqrt(pooled * (1 - pooled) * inv)
    out["se"] = se
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where(both & (se > 0), out["delta"].to_numpy() / se, 0.0)
    z = z if signal == "gain" else np.abs(z)
    out["signal"] = np.maximum(z - NOISE_THRESHOLD_SE[signal], 0.0)
    return out


def tilt_weights(signal: np.ndarray, max_tilt: float) -> np.ndarray:
    """``w = 1 + (max_tilt - 1) * s / max(s)`` per cluster, all 1 without signal (module doc)."""
    top = float(signal.max()) if signal.size else 0.0
    return 1.0 + (max_tilt - 1.0) * (signal / top if top > 0 else np.zeros_like(signal, dtype=np.float64))


def sample_rates(avail: np.ndarray, signal: np.ndarray, uniform_share: float, max_tilt: float) -> np.ndarray:
    """Per-sample selection rate of each cluster relative to uniform (module doc); mean over samples is 1."""
    weight = tilt_weights(signal, max_tilt)
    total = float(avail.sum())
    mean_weight = float((avail * weight).sum() / total) if total > 0 else 1.0
    return uniform_share + (1.0 - uniform_share) * weight / mean_weight


def balanced_rates(avail: np.ndarray, signal: np.ndarray, uniform_share: float, max_tilt: float) -> np.ndarray:
    """Per-sample rates under which every cluster with samples left has the same untilted mass
    (``uniform_share + (1 - uniform_share) * w / mean(w)``, the mean over those clusters); module doc."""
    has = avail > 0
    if not has.any():
        return np.zeros(avail.shape, dtype=np.float64)
    weight = tilt_weights(np.where(has, signal, 0.0), max_tilt)
    mass = uniform_share + (1.0 - uniform_share) * weight / float(weight[has].mean())
    return np.where(has, mass / np.maximum(avail, 1), 0.0)


def capped_quotas(budget: int, avail: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Integer quotas ``min(avail, λ · avail · rate)`` summing to ``min(budget, Σ avail)``: λ by bisection, the
    rounding remainder to the largest fractional parts among clusters with room."""
    avail = avail.astype(np.int64)
    budget = int(min(budget, int(avail.sum())))
    mass = avail * rates
    if budget == 0 or mass.sum() <= 0:
        return np.zeros_like(avail)
    lo, hi = 0.0, float(budget / mass[mass > 0].min()) + 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if np.minimum(avail, mid * mass).sum() < budget:
            lo = mid
        else:
            hi = mid
    exact = np.minimum(avail, hi * mass)
    quota = np.minimum(np.floor(exact).astype(np.int64), avail)
    short = budget - int(quota.sum())
    if short > 0:
        room = np.flatnonzero(quota < avail)
        order = room[np.argsort(-(exact[room] - quota[room]), kind="stable")]
        quota[order[:short]] += 1
    elif short < 0:
        order = np.argsort(-(quota - exact), kind="stable")
        quota[order[:-short]] -= 1
    return quota


def damped_progress(ctx: SelectionContext, rng: np.random.Generator, opts: ProgressOptions) -> SelectionResult:
    """A ``progress`` round with the damped, size-aware allocation (module doc); same draw and table as the
    paper's rule: uniform without replacement inside each cluster, one row per cluster with samples, a
    probe or a pick (``rel`` holds the signal, ``baseline`` the change's standard error)."""
    h = ctx.history
    if h.acc_now is None:
        raise MissingHistoryError(
            "strategy 'progress' needs the accuracy at the current probe (acc_now); learning progress needs two probes"
        )
    scores = probe_change_signal(h.acc_prev, h.acc_now, opts.progress_signal)
    ids = scores["cluster_id"].to_numpy()
    k = max(ctx.n_clusters, int(ids.max()) + 1 if ids.size else 0)
    avail = np.zeros(k, dtype=np.int64)
    avail[: ctx.n_clusters] = ctx.available
    signal = np.zeros(k)
    signal[ids] = scores["signal"].to_numpy()
    rate_of = balanced_rates if opts.allocation == "balanced" else sample_rates
    rates = rate_of(avail, np.where(avail > 0, signal, 0.0), opts.uniform_share, opts.max_tilt)
    _, notes = edge_selection(ctx)
    quota = capped_quotas(ctx.budget, avail, rates)
    order = np.lexsort((np.arange(k), -rates))
    chosen = draw_within_clusters(ctx, quota[: ctx.n_clusters], order[order < ctx.n_clusters], rng)
    picked = np.bincount(ctx.cluster_ids[chosen], minlength=k)[:k] if chosen.size else np.zeros(k, np.int64)
    rows = np.flatnonzero((avail > 0) | np.isin(np.arange(k), ids) | (picked > 0))
    mass = avail * rates
    share = mass / mass.sum() if mass.sum() > 0 else np.full(k, np.nan)
    table = cluster_table(
        rows, available=avail[rows], quota=quota[rows], selected=picked[rows], probability=share[rows]
    )
    s = scores.set_index("cluster_id").reindex(rows)
    for col, src in (
        ("acc_prev", "acc_prev"),
        ("acc_now", "acc_now"),
        ("delta", "delta"),
        ("baseline", "se"),
        ("rel", "signal"),
    ):
        table[col] = s[src].to_numpy()
    n_uniform = int(round(opts.uniform_share * chosen.size))  # over samples (damped) or clusters (balanced)
    notes.append(
        f"{opts.allocation} allocation: {int((signal[avail > 0] > 0).sum())} cluster(s) tilted, "
        f"max tilt {opts.max_tilt:g}"
    )
    return SelectionResult("progress", chosen, table, notes, int(chosen.size) - n_uniform, n_uniform)
