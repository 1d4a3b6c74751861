"""COINCIDE warm-up pools: cluster transferability and cluster-wise pruning (docs/algorithm.md#warm-up-pools).

Formula by formula what COINCIDE's ``cluster_transferability.py`` and ``cluster_wise_prune.py`` compute
on the selection clustering (paper: k=5000), but vectorised: the greedy MMD-critic prototype search keeps
running sums instead of re-evaluating every candidate subset (same picks, O(m*n) per cluster instead of
O(m*n*m^2)), and kernels are built per cluster from one matrix product.

Deliberate differences from the released scripts (docs/algorithm.md#differences-from-the-original-scripts), each documented where it applies:
- kernels in float64 from float32/float16 features (COINCIDE: float64; PROGRESS' copy: float16, which
  COINCIDE's authors note "highly differs");
- the softmax subtracts its maximum (the original ``exp(score/0.1)`` overflows to NaN once a score exceeds
  ~70, i.e. for dense-free clusters); values are identical where the original is finite;
- empty clusters (the original assumes none) are skipped: they take no part in the softmax or the order;
- the remaining pool excludes both warm-up runs (see :func:`warmup_pools`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from progress_core.clustering.store import KMeansResult
from progress_core.errors import ProgressError


class CoincideError(ProgressError):
    """COINCIDE pruning got inconsistent inputs (shapes, fractions, cluster ids)."""


def cluster_transferability(centroids: np.ndarray, threshold: float = 0.9) -> np.ndarray:
    """Transferability of every cluster (docs/algorithm.md#warm-up-pools).

    ``S`` = cosine similarity of the centroids; entries above ``threshold`` (near-duplicate clusters,
    including the diagonal) are zeroed and ``transfer[i]`` is the mean of row ``i`` over the entries not
    masked: ``sum_j S[i,j] / #{j : S[i,j] <= threshold}``. A cluster whose every neighbour is a
    near-duplicate (no unmasked entry) gets 0.
    """
    c = np.asarray(centroids, np.float64)
    if c.ndim != 2 or c.shape[0] == 0:
        raise CoincideError(f"centroids must be a non-empty 2-D array, got shape {c.shape}")
    norms = np.linalg.norm(c, axis=1, keepdims=True)
    c = np.divide(c, norms, out=np.zeros_like(c), where=norms > 0)
    s = c @ c.T
    mask = s > threshold
    s[mask] = 0.0
    kept = (~mask).sum(axis=1)
    total = s.sum(axis=1)
    return np.divide(total, kept, out=np.zeros_like(total), where=kept > 0).astype(np.float32)


@dataclass
class ClusterMembers:
    """Rows of every cluster: ``rows[offsets[c]:offsets[c+1]]`` ascending, from one stable argsort."""

    rows: np.ndarray
    offsets: np.ndarray

    def of(self, c: int) -> np.ndarray:
        return self.rows[self.offsets[c] : self.offsets[c + 1]]

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)


def cluster_members(assignment: np.ndarray, k: int) -> ClusterMembers:
    """Group row indices by cluster id (vectorised; ids must lie in ``0..k-1``)."""
    a = np.asarray(assignment)
    if a.size and (a.min() < 0 or a.max() >= k):
        raise CoincideError(f"cluster ids must lie in 0..{k - 1}, found {a.min()}..{a.max()}")
    rows = np.argsort(a, kind="stable").astype(np.int64)
    offsets = np.zeros(k + 1, np.int64)
    np.cumsum(np.bincount(a, minlength=k), out=offsets[1:])
    return ClusterMembers(rows, offsets)


def single_threaded_blas():
    """Limit BLAS to one thread while many small per-cluster products run.

    A 133 x 1408 Gram matrix is too small for a threaded BLAS: on a loaded 2-core machine OpenBLAS with 2
    threads measured 4x slower than with one. Uses threadpoolctl when installed, else changes nothing.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional dependency
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def gaussian_kernel(x: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """``exp(-||x_a - x_b||^2 / (2 sigma^2))`` for all pairs of rows, in float64 (docs/algorithm.md#warm-up-pools)."""
    x = np.asarray(x, np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.maximum(d2, 0.0, out=d2)
    return np.exp(-d2 / (2.0 * sigma * sigma))


def cluster_density(
    features: np.ndarray,
    assignment: np.ndarray,
    k: int,
    sigma: float = 1.0,
    members: ClusterMembers | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Mean within-cluster Gaussian kernel per cluster (docs/algorithm.md#warm-up-pools), NaN for an empty cluster."""
    from tqdm.auto import tqdm

    members = members or cluster_members(assignment, k)
    density = np.full(k, np.nan, np.float64)
    with single_threaded_blas():
        for c in tqdm(np.flatnonzero(members.sizes), desc="cluster density", unit="cluster", disable=not progress):
            density[c] = gaussian_kernel(features[members.of(int(c))], sigma).mean()
    return density


def greedy_mmd_selection(kernel: np.ndarray, m: int) -> np.ndarray:
    """MMD-critic prototypes (Kim et al.), the same picks as COINCIDE's ``greedy_mmd_selection``.

    At each step the candidate ``j`` minimising ``MMD2(S+j) = mean(K) + mean(K[S',S']) - 2 mean(K[:,S'])``
    is added (ties: lowest index, as argmin). With ``A = sum_{a,b in S} K[a,b]``, ``r_j = sum_{a in S}
    K[a,j]`` and column sums ``col``: ``MMD2(S+j) = KXX + (A + 2 r_j + K[j,j]) / (t+1)^2 - 2 (sum_{a in
    S} col[a] + col[j]) / (n (t+1))``, evaluated for all candidates at once and updated in O(n) per pick.
    """
    k = np.asarray(kernel, np.float64)
    n = k.shape[0]
    if k.shape != (n, n):
        raise CoincideError(f"kernel must be square, got shape {k.shape}")
    if not 0 <= m <= n:
        raise CoincideError(f"cannot pick {m} prototypes out of {n}")
    kxx = k.mean() if n else 0.0
    col = k.sum(axis=0)
    diag = np.diagonal(k).copy()
    cross = np.zeros(n, np.float64)
    a_sum = 0.0
    col_sum = 0.0
    taken = np.zeros(n, bool)
    picks = np.empty(m, np.int64)
    for t in range(m):
        size = t + 1
        mmd2 = kxx + (a_sum + 2.0 * cross + diag) / (size * size) - 2.0 * (col_sum + col) / (n * size)
        mmd2[taken] = np.inf
        j = int(np.argmin(mmd2))
        picks[t] = j
        taken[j] = True
        a_sum += 2.0 * cross[j] + diag[j]
        col_sum += col[j]
        cross += k[j]
    return picks


def _softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = scores / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


def cluster_wise_prune(
    features: np.ndarray,
    assignment: np.ndarray,
    transfer: np.ndarray,
    fraction: float | None = None,
    temperature: float = 0.1,
    sigma: float = 1.0,
    n_target: int | None = None,
    density: np.ndarray | None = None,
    members: ClusterMembers | None = None,
    progress: bool = False,
) -> np.ndarray:
    """COINCIDE cluster-wise pruning (docs/algorithm.md#warm-up-pools); returns row indices in the original's order.

    ``target = int(fraction * N)`` (or ``n_target``). ``score = transfer / density``, ``ratio =
    softmax(score / temperature)`` over the non-empty clusters, visited by descending ratio
    (``argsort(ratio)[::-1]``: among equal ratios the higher cluster id first, as the original). Cluster
    of rank r gets ``n_c = round(remaining * ratio[r])`` (Python rounding, half to even); if that exceeds
    its size all its rows are taken (ascending), else its ``n_c`` greedy MMD prototypes (greedy order).
    ``remaining`` drops by what was taken and the ratios of the clusters not yet visited are re-softmaxed,
    so any shortfall rolls down. Output: the clusters' picks concatenated in visiting order.
    """
    from tqdm.auto import tqdm

    n = features.shape[0]
    transfer = np.asarray(transfer, np.float64)
    k = transfer.shape[0]
    n_target = _prune_target(n, assignment, fraction, n_target, temperature)
    members = members or cluster_members(assignment, k)
    if density is None:
        density = cluster_density(features, assignment, k, sigma, members, progress)
    clusters, score, ratio = _visiting_order(transfer, density, members.sizes, temperature)
    remaining = n_target
    picked: list[np.ndarray] = []
    with (
        single_threaded_blas(),
        tqdm(total=n_target, desc=f"prune to {n_target}", unit="sample", disable=not progress) as bar,
    ):
        for rank, c in enumerate(clusters):
            if remaining <= 0:
                break
            chosen = _cluster_picks(features, members.of(int(c)), round(remaining * float(ratio[rank])), sigma)
            picked.append(chosen)
            remaining -= chosen.size
            bar.update(chosen.size)
            if rank + 1 < clusters.size:
                ratio[rank + 1 :] = _softmax(score[rank + 1 :], temperature)
    return np.concatenate(picked).astype(np.int64) if picked else np.zeros(0, np.int64)


def _prune_target(
    n: int, assignment: np.ndarray, fraction: float | None, n_target: int | None, temperature: float
) -> int:
    """How many of the ``n`` rows pruning keeps (``n_target``, else ``int(fraction * n)``), after checking the
    inputs, so a bad request is a :class:`CoincideError` rather than a silently wrong pool."""
    if np.asarray(assignment).shape[0] != n:
        raise CoincideError(f"{np.asarray(assignment).shape[0]} cluster ids for {n} feature rows")
    if n_target is None:
        if fraction is None or not 0.0 < fraction <= 1.0:
            raise CoincideError(f"fraction must lie in (0, 1], got {fraction}")
        n_target = int(fraction * n)
    if not 0 <= n_target <= n:
        raise CoincideError(f"cannot select {n_target} of {n} samples")
    if temperature <= 0:
        raise CoincideError(f"temperature must be > 0, got {temperature}")
    return n_target


def _visiting_order(
    transfer: np.ndarray, density: np.ndarray, sizes: np.ndarray, temperature: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(non-empty clusters, their scores, their sampling ratios) by descending ratio, ties to the higher
    cluster id as in the original (docs/algorithm.md#warm-up-pools)."""
    present = np.flatnonzero(sizes > 0)
    score = transfer[present] / density[present]
    ratio = _softmax(score, temperature)
    visit = np.argsort(ratio, kind="stable")[::-1]
    return present[visit], score[visit], ratio[visit]


def _cluster_picks(features: np.ndarray, rows: np.ndarray, n_c: int, sigma: float) -> np.ndarray:
    """A cluster's share: all its rows (ascending) when ``n_c`` exceeds its size, else its ``n_c`` greedy
    MMD prototypes in greedy order (none for ``n_c`` <= 0)."""
    if n_c > rows.size:
        return rows
    if n_c > 0:
        return rows[greedy_mmd_selection(gaussian_kernel(features[rows], sigma), n_c)]
    return rows[:0]


@dataclass
class WarmupPools:
    """Warm-up pools of docs/algorithm.md#warm-up-pools as sample_id arrays (feature row i = sample_id i).

    ``w1`` = Top_50K (fraction 0.075 run, pruning order); ``w2`` = W(0.09) minus W(0.075) (Top_50K_to_60K,
    in the 0.09 run's order); ``remaining`` = all minus (W(0.075) ∪ W(0.09)), ascending; ``order`` = the
    whole 0.09 run in its pruning order (Top_60K), which is what a COINCIDE-only baseline trains on.
    """

    w1: np.ndarray
    w2: np.ndarray
    remaining: np.ndarray
    order: np.ndarray
    transfer: np.ndarray
    density: np.ndarray


def warmup_pools(
    features: np.ndarray,
    fine: KMeansResult,
    fractions: tuple[float, float] = (0.075, 0.09),
    temperature: float = 0.1,
    sigma: float = 1.0,
    threshold: float = 0.9,
    progress: bool = False,
) -> WarmupPools:
    """Both warm-up runs of docs/algorithm.md#warm-up-pools on the selection clustering ``fine``.

    The two fractions are independent greedy runs (as the original), sharing transferability and
    densities. We differ from the original in one place: its ``Remaining_605K = All \\ Top_60K`` keeps
    the few Top_50K samples missing from Top_60K in the pool although they were trained in warm-up; here
    the union of both runs stays out of the remaining pool, so no sample is selected twice.
    """
    f1, f2 = fractions
    if not 0.0 < f1 <= f2 <= 1.0:
        raise CoincideError(f"fractions must satisfy 0 < f1 <= f2 <= 1, got {fractions}")
    n = features.shape[0]
    if fine.assignment.shape[0] != n:
        raise CoincideError(f"clustering has {fine.assignment.shape[0]} rows, features {n}")
    transfer = cluster_transferability(fine.centroids, threshold)
    members = cluster_members(fine.assignment, fine.k)
    density = cluster_density(features, fine.assignment, fine.k, sigma, members, progress)
    kwargs = dict(temperature=temperature, sigma=sigma, density=density, members=members, progress=progress)
    first = cluster_wise_prune(features, fine.assignment, transfer, f1, **kwargs)
    second = cluster_wise_prune(features, fine.assignment, transfer, f2, **kwargs)
    in_first = np.zeros(n, bool)
    in_first[first] = True
    w2 = second[~in_first[second]]
    taken = in_first.copy()
    taken[second] = True
    return WarmupPools(
        w1=first,
        w2=w2,
        remaining=np.flatnonzero(~taken).astype(np.int64),
        order=second,
        transfer=transfer,
        density=density,
    )


def coincide_selection(
    features: np.ndarray,
    fine: KMeansResult,
    budget: int,
    temperature: float = 0.1,
    sigma: float = 1.0,
    threshold: float = 0.9,
) -> np.ndarray:
    """The COINCIDE baseline: ``budget`` samples chosen at once by cluster-wise pruning (docs/algorithm.md#baseline-strategies)."""
    transfer = cluster_transferability(fine.centroids, threshold)
    return cluster_wise_prune(
        features, fine.assignment, transfer, temperature=temperature, sigma=sigma, n_target=budget
    )
