"""Dual spherical k-means with faiss (docs/algorithm.md#concept-clustering).

Two clusterings of the same features: the *annotation* clustering (paper: k=1000 on 665K) gives every
sample the ``cluster_id`` that accuracy is tracked by, and the *selection* clustering (paper: k=5000)
feeds the COINCIDE warm-up pruning. Both run ``faiss.Kmeans(spherical=True, niter=50, seed=1234)`` and
assign each sample with ``kmeans.index.search(x, 1)``; since the index is an ``IndexFlatIP`` the returned
score is the cosine similarity to the centre (the original calls it ``dist_to_cent``).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from progress_core.clustering.faiss_gpu import device_capabilities, first_line, unsupported_gpu_reason
from progress_core.clustering.store import ClusteringError, KMeansResult
from progress_core.features.store import release_pages

log = logging.getLogger(__name__)

PAPER_N = 665_298
PAPER_ANNOTATION_K = 1000
PAPER_SELECTION_K = 5000


class KTooLargeError(ClusteringError):
    """More centres were requested than there are samples."""


class NonFiniteFeaturesError(ClusteringError):
    """The feature matrix holds NaN or inf."""


class CollapsedClusteringError(ClusteringError):
    """All centroids coincide or every sample fell into one cluster (COINCIDE issue #7)."""


def scaled_k(n_samples: int, paper_k: int, paper_n: int = PAPER_N, minimum: int = 2) -> int:
    """Number of centres keeping the paper's samples-per-centre ratio (``paper_k`` per ``paper_n``).

    Rounded, at least ``minimum`` and at most ``n_samples``.
    """
    if n_samples < 1:
        raise ClusteringError(f"cannot cluster an empty pool (n_samples={n_samples})")
    k = int(round(n_samples * paper_k / paper_n))
    return int(min(max(k, minimum), n_samples))


def resolve_k(k: int | None, n_samples: int, paper_k: int) -> int:
    """``k`` if set, otherwise :func:`scaled_k` of the paper's value."""
    return int(k) if k is not None else scaled_k(n_samples, paper_k)


def faiss_gpu_count(faiss_module=None) -> int:
    """GPUs the installed faiss can use: 0 for a CPU-only build (no ``get_num_gpus``) or no visible GPU."""
    if faiss_module is None:
        import faiss as faiss_module
    get = getattr(faiss_module, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def faiss_gpu_available() -> bool:
    """True when the installed faiss has GPU support and sees at least one GPU."""
    return faiss_gpu_count() > 0


def flat_index(d: int, spherical: bool, gpu: bool | Literal["auto"] = "auto", faiss_module=None):
    """``(index, device)``: the exact inner-product (spherical) or L2 index k-means assigns with.

    On GPUs (``faiss.get_num_gpus() > 0`` and ``gpu`` not False) the index lives on one GPU through
    ``StandardGpuResources`` or, with several GPUs, is sharded over all of them (665K x 5000 on a node);
    otherwise it stays on the CPU. ``device`` says which ("cpu", "gpu", "gpu-sharded-4"), and is logged.
    """
    if faiss_module is None:
        import faiss as faiss_module
    cpu_index = faiss_module.IndexFlatIP(d) if spherical else faiss_module.IndexFlatL2(d)
    n_gpus = faiss_gpu_count(faiss_module) if gpu is not False else 0
    if gpu is True and n_gpus == 0:
        log.warning("clustering.use_gpu is true but faiss sees no GPU (CPU-only faiss build?); using the CPU")
    reason = unsupported_gpu_reason(device_capabilities(n_gpus)) if gpu == "auto" and n_gpus else None
    if reason:
        log.warning("faiss k-means runs on the CPU: %s", reason)
        n_gpus = 0
    if n_gpus == 0:
        return cpu_index, "cpu"
    if n_gpus == 1:
        resources = faiss_module.StandardGpuResources()
        return faiss_module.index_cpu_to_gpu(resources, 0, cpu_index), "gpu"
    options = faiss_module.GpuMultipleClonerOptions()
    options.shard = True
    return faiss_module.index_cpu_to_all_gpus(cpu_index, co=options, ngpu=n_gpus), f"gpu-sharded-{n_gpus}"


ASSIGN_ROWS = 1 << 16
"""Rows converted to float32 and assigned at a time (a multiple of faiss's 4096-row BLAS query block)."""


def _float32_rows(features: np.ndarray, start: int, stop: int) -> np.ndarray:
    rows = np.ascontiguousarray(features[start:stop], dtype=np.float32)
    release_pages(features)
    return rows


def _check_finite(x: np.ndarray, chunk: int = ASSIGN_ROWS) -> None:
    for s in range(0, x.shape[0], chunk):
        ok = np.isfinite(x[s : s + chunk]).all(axis=1)
        release_pages(x)
        if not ok.all():
            raise NonFiniteFeaturesError(f"features hold NaN/inf, first at row {s + int(np.flatnonzero(~ok)[0])}")


def _training_rows(features: np.ndarray, k: int, max_points_per_centroid: int, seed: int, faiss) -> np.ndarray:
    """The rows faiss trains on, as float32: all of them, or the ``k × max_points_per_centroid`` that
    ``faiss.Clustering`` would sample itself (its ``rand_perm`` with the same seed), gathered without ever
    holding the whole matrix in float32."""
    n = features.shape[0]
    if n <= k * max_points_per_centroid:
        return _float32_rows(features, 0, n)
    perm = np.empty(n, dtype=np.int32)
    faiss.rand_perm(faiss.swig_ptr(perm), n, seed)
    return _gather_rows(features, perm[: k * max_points_per_centroid].astype(np.int64))


def _gather_rows(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``features[rows]`` as float32, read block by block in file order (a random gather from a memory map
    would fault in, through read-ahead, most of the file at once)."""
    order = np.argsort(rows, kind="stable")
    in_file_order = rows[order]
    out = np.empty((rows.size, features.shape[1]), dtype=np.float32)
    bounds = np.searchsorted(in_file_order, np.arange(0, features.shape[0] + ASSIGN_ROWS, ASSIGN_ROWS))
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        if a < b:
            out[order[a:b]] = features[in_file_order[a:b]]
            release_pages(features)
    return out


def _assign(index, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre and its similarity for every row, ``ASSIGN_ROWS`` rows at a time."""
    n = features.shape[0]
    assignment = np.empty(n, dtype=np.int64)
    similarity = np.empty(n, dtype=np.float32)
    for start in range(0, n, ASSIGN_ROWS):
        stop = min(start + ASSIGN_ROWS, n)
        sim, idx = index.search(_float32_rows(features, start, stop), 1)
        assignment[start:stop], similarity[start:stop] = idx[:, 0], sim[:, 0]
    return assignment, similarity


def _check_shape(features: np.ndarray, k: int) -> None:
    if features.ndim != 2:
        raise ClusteringError(f"features must be 2-D, got shape {features.shape}")
    if k < 1:
        raise ClusteringError(f"k must be >= 1, got {k}")
    if k > features.shape[0]:
        raise KTooLargeError(f"k={k} centres requested for only {features.shape[0]} samples")


def _fit(faiss, params, features: np.ndarray, rows: np.ndarray, k: int, index, device: str) -> KMeansResult:
    """Train the centres on ``rows`` with ``index``, then assign every row of ``features`` to its nearest."""
    d = features.shape[1]
    clus = faiss.Clustering(d, k, params)
    clus.train(rows, index)
    centroids = faiss.vector_to_array(clus.centroids).reshape(k, d).astype(np.float32)
    index.reset()
    index.add(centroids)
    assignment, similarity = _assign(index, features)
    return KMeansResult(centroids=centroids, assignment=assignment, similarity=similarity, device=device)


def spherical_kmeans(
    features: np.ndarray,
    k: int,
    niter: int = 50,
    seed: int = 1234,
    max_points_per_centroid: int = 256,
    gpu: bool | Literal["auto"] = "auto",
    spherical: bool = True,
    verbose: bool = False,
) -> KMeansResult:
    """faiss k-means + nearest-centre search with the original's parameters (``docs/algorithm.md#concept-clustering``).

    The same ``faiss.Clustering`` that ``faiss.Kmeans`` runs, on the index :func:`flat_index` chooses (GPU,
    sharded over the node's GPUs, when faiss has them; CPU otherwise), with the centres and assignment of
    handing faiss the whole matrix (similarities equal up to the last float bit); but only the training rows
    are held in float32, and the other rows are converted and assigned in blocks. ``features`` may be a
    memory-mapped float16 file (as stored): its pages are released after each block, so memory stays near
    the training sample's size.

    Raises :class:`KTooLargeError`, :class:`NonFiniteFeaturesError` or :class:`CollapsedClusteringError`
    instead of returning a meaningless clustering.
    """
    try:
        import faiss
    except ImportError as exc:
        raise ClusteringError(
            "faiss is not installed: pip install 'progress-flows[cpu]' (or '[gpu]' on GPU machines)"
        ) from exc

    _check_shape(features, k)
    n, d = features.shape
    _check_finite(features)
    params = faiss.ClusteringParameters()
    params.niter, params.seed, params.spherical = int(niter), int(seed), bool(spherical)
    params.verbose, params.max_points_per_centroid = bool(verbose), int(max_points_per_centroid)
    rows = _training_rows(features, int(k), int(max_points_per_centroid), int(seed), faiss)
    device = None
    try:
        index, device = flat_index(d, spherical, gpu)
        log.info("k-means k=%d on %d x %d features: faiss index on %s", k, n, d, device)
        result = _fit(faiss, params, features, rows, int(k), index, device)
    except RuntimeError as exc:
        if device == "cpu":
            raise
        where = device or "the GPU"
        log.warning("faiss k-means on %s failed (%s); running it again on the CPU", where, first_line(exc))
        result = _fit(faiss, params, features, rows, int(k), flat_index(d, spherical, False)[0], "cpu")
    _check_collapse(result)
    return result


def _check_collapse(result: KMeansResult, tol: float = 1e-6) -> None:
    if result.k < 2:
        return
    c = result.centroids
    if not np.isfinite(c).all():
        raise CollapsedClusteringError("k-means produced non-finite centroids")
    spread = float(np.max(np.linalg.norm(c - c[0], axis=1)))
    if spread < tol:
        raise CollapsedClusteringError(
            f"all {result.k} centroids are equal (max distance {spread:.2e}); check the features' dimensions"
        )
    if np.unique(result.assignment).size == 1:
        raise CollapsedClusteringError(f"all samples fell into one of {result.k} clusters")
