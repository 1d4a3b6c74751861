"""COINCIDE warm-up pruning (docs/algorithm.md#warm-up-pools) at the paper's scale: 665K rows, 5000 clusters, 1408-d float16.

Synthetic features: 5000 cluster centres built from 100 shared "topic" directions plus noise (so centroid
similarities and hence transferability vary), rows = centre + per-cluster noise level (so densities vary),
L2-normalised, stored float16 like the real features. The selection clustering is the generating
assignment (k-means itself is timed in bench_kmeans.py). Timed: transferability, densities, pruning at
0.075 and 0.09 (densities shared), peak RSS.

Baseline: the original's greedy MMD (COINCIDE's per-step candidate tiling, K[:, S'] and K[S', S'] means over
every candidate subset, in numpy on CPU) on a random sample of the clusters our 0.09 run pruned with the
greedy, with the same quotas; its total is EXTRAPOLATED to all those clusters (mean time per cluster x
count) and labelled as such. Our greedy is timed on the same sample.

    python benchmarks/bench_coincide.py            # 665,298 x 1408, k=5000
    python benchmarks/bench_coincide.py --quick    # 66,530 x 1408, k=500
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from progress_core.clustering.coincide import (
    cluster_density,
    cluster_members,
    cluster_transferability,
    cluster_wise_prune,
    gaussian_kernel,
    greedy_mmd_selection,
)
from progress_core.clustering.store import KMeansResult

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, summary  # noqa: E402


def synthetic(n: int, k: int, d: int, seed: int = 0, chunk: int = 32768):
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((100, d), dtype=np.float32)
    centres = topics[rng.integers(0, 100, k)] + 0.8 * rng.standard_normal((k, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.uniform(0.6, 1.6, k).astype(np.float32) / np.sqrt(d, dtype=np.float32)
    assignment = rng.integers(0, k, n).astype(np.int64)
    x = np.empty((n, d), np.float16)
    for s in range(0, n, chunk):
        a = assignment[s : s + chunk]
        block = centres[a] + noise[a, None] * rng.standard_normal((a.size, d), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[s : s + chunk] = block
    return x, KMeansResult(centres, assignment, np.ones(n, np.float32))


def original_greedy(K: np.ndarray, M: int) -> np.ndarray:
    """COINCIDE's greedy_mmd_selection (candidate tiling), numpy on CPU."""
    n = len(K)
    indices = np.arange(n)
    selected = np.array([], dtype=int)
    kxx = K.mean()
    for _ in range(M):
        candidates = np.setdiff1d(indices, selected)
        temp = np.concatenate([np.tile(selected, (len(candidates), 1)), candidates[:, None]], axis=1)
        kxy = K[:, temp].mean(axis=(0, 2))
        kyy = K[temp[:, :, None], temp[:, None, :]].mean(axis=(1, 2))
        selected = np.append(selected, candidates[np.argmin(kxx + kyy - 2 * kxy)])
    return selected


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--n", type=int, default=665_298)
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--d", type=int, default=1408)
    p.add_argument("--baseline-clusters", type=int, default=30, help="clusters timed with the original greedy")
    args = p.parse_args()
    if args.quick:
        args.n, args.k = 66_530, 500
    return args


def _time_warmup(x: np.ndarray, fine: KMeansResult, args: argparse.Namespace):
    """Transferability, densities and pruning at 0.075 and 0.09 timed and printed; the 0.09 picks and members."""
    t = time.perf_counter()
    transfer = cluster_transferability(fine.centroids)
    t_transfer = time.perf_counter() - t
    members = cluster_members(fine.assignment, args.k)
    t = time.perf_counter()
    density = cluster_density(x, fine.assignment, args.k, members=members)
    t_density = time.perf_counter() - t
    times, picks = {}, {}
    for f in (0.075, 0.09):
        t = time.perf_counter()
        picks[f] = cluster_wise_prune(
            x, fine.assignment, transfer, f, temperature=0.1, density=density, members=members
        )
        times[f] = time.perf_counter() - t
    total = t_transfer + t_density + sum(times.values())
    print(f"transferability ({args.k}x{args.k})     : {t_transfer:8.2f} s")
    print(f"densities ({args.k} clusters, float64)  : {t_density:8.2f} s")
    for f in (0.075, 0.09):
        print(f"prune fraction {f:<5} -> {picks[f].size:7d} rows : {times[f]:8.2f} s")
    print(f"total warm-up (ours)                : {total:8.2f} s; peak RSS {peak_rss_mb():.0f} MB")
    summary(
        "bench_coincide", f"warm-up pools, {args.n} x {args.d}, k={args.k}", f"{total:.1f} s, {peak_rss_mb():.0f} MB"
    )
    return picks[0.09], members


def _time_greedy(x: np.ndarray, fine: KMeansResult, picks: np.ndarray, members, args: argparse.Namespace) -> None:
    """Our greedy MMD vs the original's on sampled clusters with the 0.09 run's quotas (same picks asserted)."""
    counts = np.bincount(fine.assignment[picks], minlength=args.k)
    sizes = members.sizes
    greedy_clusters = np.flatnonzero((counts > 0) & (counts <= sizes))
    rng = np.random.default_rng(1)
    sample = rng.choice(greedy_clusters, min(args.baseline_clusters, greedy_clusters.size), replace=False)
    t_ours = t_orig = 0.0
    for c in sample:
        K = gaussian_kernel(x[members.of(int(c))])
        t = time.perf_counter()
        a = greedy_mmd_selection(K, int(counts[c]))
        t_ours += time.perf_counter() - t
        t = time.perf_counter()
        b = original_greedy(K, int(counts[c]))
        t_orig += time.perf_counter() - t
        assert np.array_equal(a, b), f"cluster {c}: picks differ"
    scale = greedy_clusters.size / sample.size
    print(
        f"greedy MMD on {sample.size} sampled clusters (quotas of the 0.09 run, mean "
        f"{counts[sample].mean():.1f} of {sizes[sample].mean():.0f} rows; identical picks):"
    )
    print(f"  ours (running sums)               : {t_ours:8.3f} s")
    print(f"  original (candidate tiling, numpy): {t_orig:8.3f} s   ratio {t_orig / max(t_ours, 1e-9):.1f}x")
    print(
        f"  EXTRAPOLATED to all {greedy_clusters.size} greedy clusters of the 0.09 run: "
        f"original {t_orig * scale:.1f} s vs ours {t_ours * scale:.2f} s"
    )
    summary("bench_coincide", "greedy MMD vs the original (extrapolated)", f"{t_orig / max(t_ours, 1e-9):.0f}x faster")


def main() -> None:
    args = _parse_args()
    t0 = time.perf_counter()
    x, fine = synthetic(args.n, args.k, args.d)
    print(
        f"synthetic features {x.shape} {x.dtype} ({x.nbytes / 2**30:.2f} GiB), k={args.k}: "
        f"generated in {time.perf_counter() - t0:.1f} s; peak RSS {peak_rss_mb():.0f} MB"
    )
    picks, members = _time_warmup(x, fine, args)
    _time_greedy(x, fine, picks, members, args)


if __name__ == "__main__":
    main()
