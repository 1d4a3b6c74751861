"""Spherical k-means (docs/algorithm.md#concept-clustering): ``clustering.spherical_kmeans`` vs raw ``faiss.Kmeans`` vs scikit-learn.

Same data, k, iterations and seed for all three; each timing includes the nearest-centre assignment of
every row (faiss: ``index.search``; sklearn: ``labels_`` from the fit). Our call adds input validation
(finite check), the float32 view and the collapse check on top of raw faiss: target <= 5% overhead.
A 1-iteration warm-up run precedes the timings; the added work is also timed alone, since on a shared
machine the whole-call ratio mostly measures noise.
scikit-learn runs Lloyd with ``n_init=1, init="random"`` and the same ``max_iter`` on the rows
normalised once (it has no spherical mode), single repetition; it is a reference point, not a like-for-like
cosine k-means.

    python benchmarks/bench_kmeans.py              # 100K x 256, k=1000, niter 10
    python benchmarks/bench_kmeans.py --niter 50   # the original's iterations (slow on 2 cores)
    python benchmarks/bench_kmeans.py --quick      # 20K x 64, k=200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from progress_core.clustering.kmeans import _check_collapse, _check_finite, spherical_kmeans
from progress_core.clustering.store import KMeansResult

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summary  # noqa: E402


def clustered_data(n: int, d: int, n_centres: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_centres, d), dtype=np.float32)
    x = centres[rng.integers(0, n_centres, n)] + 0.8 * rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


def raw_faiss(x: np.ndarray, k: int, niter: int, seed: int):
    import faiss

    km = faiss.Kmeans(
        x.shape[1], k, niter=niter, seed=seed, spherical=True, gpu=False, verbose=False, max_points_per_centroid=256
    )
    km.train(x)
    return km.index.search(x, 1)


def timed(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--niter", type=int, default=10)
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="interleaved repetitions of ours/raw, alternating which goes first (min is reported)",
    )
    p.add_argument("--skip-sklearn", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.n, args.d, args.k = 20_000, 64, 200
    return args


def _interleaved_runs(x: np.ndarray, k: int, niter: int, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of each repetition of raw faiss and ours, alternating which goes first, after a warm-up run."""
    ours, raw = [], []
    timed(raw_faiss, x, k, 1, 1234)
    for r in range(repeats):
        runs = [
            (raw, lambda: raw_faiss(x, k, niter, 1234)),
            (ours, lambda: spherical_kmeans(x, k, niter=niter, seed=1234, gpu=False)),
        ]
        for sink, fn in runs[:: 1 if r % 2 == 0 else -1]:
            sink.append(timed(fn))
    return ours, raw


def _added_work_seconds(x: np.ndarray, k: int) -> float:
    """Our checks on top of raw faiss, timed alone: the float32 view, the finite check and the collapse check."""
    res = spherical_kmeans(x, k, niter=1, seed=1234, gpu=False)
    t = time.perf_counter()
    view = np.ascontiguousarray(x, dtype=np.float32)
    _check_finite(view)
    _check_collapse(KMeansResult(res.centroids, res.assignment, res.similarity))
    return time.perf_counter() - t


def _time_sklearn(x: np.ndarray, k: int, niter: int) -> float:
    from sklearn.cluster import KMeans

    return timed(
        KMeans(
            n_clusters=k,
            n_init=1,
            init="random",
            max_iter=niter,
            tol=0.0,
            random_state=1234,
            algorithm="lloyd",
        ).fit,
        x,
    )


def main() -> None:
    args = _parse_args()
    import faiss

    x = clustered_data(args.n, args.d, args.k)
    print(
        f"data {args.n} x {args.d} float32, k={args.k}, niter={args.niter}, seed=1234, "
        f"faiss {faiss.__version__} threads={faiss.omp_get_max_threads()}"
    )
    ours, raw = _interleaved_runs(x, args.k, args.niter, args.repeats)
    t_raw, t_ours = min(raw), min(ours)
    print(f"raw faiss.Kmeans + search : {t_raw:8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in raw)})")
    print(f"spherical_kmeans (ours)   : {t_ours:8.2f} s   (runs: {', '.join(f'{t:.2f}' for t in ours)})")
    print(
        f"ours / raw faiss          : {t_ours / t_raw:8.3f}   (overhead {100 * (t_ours / t_raw - 1):+.1f}%, target <= +5%)"
    )
    summary("bench_kmeans", f"{args.n} x {args.d}, k={args.k}, ours / raw faiss", f"{t_ours:.2f} s / {t_raw:.2f} s")
    t_extra = _added_work_seconds(x, args.k)
    print(
        f"our added work alone (float32 view, finite check, collapse check): {1000 * t_extra:.1f} ms "
        f"= {100 * t_extra / t_raw:.2f}% of raw faiss (the whole-call ratio above also carries machine noise)"
    )
    if not args.skip_sklearn:
        t_sk = _time_sklearn(x, args.k, args.niter)
        print(f"sklearn KMeans (lloyd, n_init=1, max_iter={args.niter}): {t_sk:8.2f} s")
        print(f"sklearn / ours            : {t_sk / t_ours:8.2f}x")


if __name__ == "__main__":
    main()
