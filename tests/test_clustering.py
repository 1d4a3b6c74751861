import numpy as np
import pyarrow.parquet as pq
import pytest

from progress_core.clustering.config import ClusteringConfig
from progress_core.clustering.kmeans import (
    CollapsedClusteringError,
    KTooLargeError,
    NonFiniteFeaturesError,
    resolve_k,
    scaled_k,
    spherical_kmeans,
)
from progress_core.clustering.store import ClusteringError, load_clustering, save_clustering


def blobs(n_per=80, k=5, d=16, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(d, d)))[0][:k]
    labels = np.repeat(np.arange(k), n_per)
    x = centres[labels] + noise * rng.normal(size=(k * n_per, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    perm = rng.permutation(len(labels))
    return x[perm].astype(np.float32), labels[perm]


def test_recovers_well_separated_blobs_exactly():
    x, labels = blobs()
    res = spherical_kmeans(x, 5, niter=20, seed=1234)
    pairs = set(zip(labels.tolist(), res.assignment.tolist()))
    assert len(pairs) == 5 and len({p[1] for p in pairs}) == 5
    assert res.centroids.shape == (5, 16) and res.centroids.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(res.centroids, axis=1), 1.0, atol=1e-5)
    expected_sim = np.einsum("ij,ij->i", x, res.centroids[res.assignment])
    np.testing.assert_allclose(res.similarity, expected_sim, atol=1e-5)
    assert res.similarity.min() > 0.9


def test_same_seed_same_centroids_and_float16_input():
    x, _ = blobs(k=8, noise=0.3, seed=1)
    a = spherical_kmeans(x, 8, niter=10, seed=7)
    b = spherical_kmeans(x, 8, niter=10, seed=7)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.assignment, b.assignment)
    c = spherical_kmeans(x.astype(np.float16), 8, niter=10, seed=7)
    assert c.assignment.dtype == np.int64 and c.assignment.shape == (len(x),)


def _faiss_on_the_whole_matrix(x: np.ndarray, k: int, niter: int, seed: int, mpc: int):
    """The reference: faiss given every row in float32 at once (it samples its training rows itself)."""
    import faiss

    params = faiss.ClusteringParameters()
    params.niter, params.seed, params.spherical, params.max_points_per_centroid = niter, seed, True, mpc
    clus = faiss.Clustering(x.shape[1], k, params)
    index = faiss.IndexFlatIP(x.shape[1])
    clus.train(x, index)
    centroids = faiss.vector_to_array(clus.centroids).reshape(k, x.shape[1])
    index.reset()
    index.add(centroids)
    sim, idx = index.search(x, 1)
    return centroids, idx[:, 0], sim[:, 0]


@pytest.mark.parametrize("mpc", [8, 256])
def test_blockwise_kmeans_on_a_memory_mapped_file_equals_faiss_on_the_whole_matrix(tmp_path, monkeypatch, mpc):
    """Training sample (faiss's own draw, or every row) and block-wise assignment give the same centres and
    assignment; the similarity may differ in its last bit (BLAS sums blocks of another size)."""
    import progress_core.clustering.kmeans as clustering

    monkeypatch.setattr(clustering, "ASSIGN_ROWS", 4096)
    x, _ = blobs(n_per=1000, k=10, d=24, noise=0.4, seed=3)
    np.save(tmp_path / "f.npy", x.astype(np.float16))
    stored = np.load(tmp_path / "f.npy", mmap_mode="r")
    centroids, assignment, similarity = _faiss_on_the_whole_matrix(np.asarray(stored, np.float32), 12, 8, 5, mpc)
    res = spherical_kmeans(stored, 12, niter=8, seed=5, max_points_per_centroid=mpc, gpu=False)
    np.testing.assert_array_equal(res.centroids, centroids)
    np.testing.assert_array_equal(res.assignment, assignment)
    np.testing.assert_allclose(res.similarity, similarity, rtol=2e-6, atol=0)


def test_k_larger_than_pool():
    x, _ = blobs(n_per=2, k=3)
    with pytest.raises(KTooLargeError, match="k=7"):
        spherical_kmeans(x, 7)


def test_nan_and_inf_features_name_the_row():
    x, _ = blobs()
    x[17, 3] = np.nan
    with pytest.raises(NonFiniteFeaturesError, match="row 17"):
        spherical_kmeans(x, 3)
    x[17, 3] = 0
    x[40, 0] = np.inf
    with pytest.raises(NonFiniteFeaturesError, match="row 40"):
        spherical_kmeans(x, 3)


def test_collapsed_clustering_is_an_error():
    x = np.tile(np.array([[0.6, 0.8, 0.0]], np.float32), (50, 1))
    with pytest.raises(CollapsedClusteringError):
        spherical_kmeans(x, 4, niter=5)
    assert issubclass(CollapsedClusteringError, ClusteringError)


def test_scaled_k_keeps_paper_ratio():
    assert scaled_k(665_298, 1000) == 1000
    assert scaled_k(665_298, 5000) == 5000
    assert scaled_k(10_000, 5000) == 75
    assert scaled_k(100_000, 1000) == 150
    assert scaled_k(1000, 1000) == 2
    assert scaled_k(1, 1000) == 1
    assert resolve_k(None, 10_000, 1000) == 15 and resolve_k(9, 10_000, 1000) == 9
    with pytest.raises(ClusteringError):
        scaled_k(0, 1000)
    cfg = ClusteringConfig()
    assert (cfg.niter, cfg.seed, cfg.max_points_per_centroid, cfg.spherical) == (50, 1234, 256, True)


def test_save_and_load_round_trip(tmp_path):
    x, _ = blobs()
    res = spherical_kmeans(x, 5, niter=10)
    a_path, c_path = save_clustering(res, tmp_path, "annotation")
    schema = pq.read_schema(a_path)
    assert [(f.name, str(f.type)) for f in schema] == [
        ("sample_id", "int64"),
        ("cluster_id", "int64"),
        ("similarity", "float"),
    ]
    back = load_clustering(tmp_path, "annotation")
    np.testing.assert_array_equal(back.assignment, res.assignment)
    np.testing.assert_array_equal(back.centroids, res.centroids)
    np.testing.assert_array_equal(back.similarity, res.similarity)
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ClusteringError):
        load_clustering(tmp_path, "selection")


def test_same_clustering_as_faiss_kmeans_on_the_cpu():
    import faiss

    x = np.random.default_rng(3).normal(size=(600, 12)).astype(np.float32)
    ours = spherical_kmeans(x, 7, niter=10, seed=5, gpu="auto")
    km = faiss.Kmeans(12, 7, niter=10, seed=5, spherical=True, max_points_per_centroid=256)
    km.train(x)
    sim, idx = km.index.search(x, 1)
    assert ours.device == "cpu"
    np.testing.assert_array_equal(ours.centroids, km.centroids)
    np.testing.assert_array_equal(ours.assignment, idx[:, 0])
    np.testing.assert_allclose(ours.similarity, sim[:, 0], rtol=1e-6)


class FakeFaiss:
    """faiss's GPU entry points, recording calls; ``n_gpus`` None = a CPU-only build without get_num_gpus."""

    def __init__(self, n_gpus):
        self.calls = []
        if n_gpus is not None:
            self.get_num_gpus = lambda: n_gpus

    def IndexFlatIP(self, d):
        return ("cpu-ip", d)

    def IndexFlatL2(self, d):
        return ("cpu-l2", d)

    def StandardGpuResources(self):
        self.calls.append("resources")
        return "res"

    def GpuMultipleClonerOptions(self):
        return type("Options", (), {"shard": False})()

    def index_cpu_to_gpu(self, res, device, index):
        self.calls.append(("to_gpu", res, device, index))
        return ("gpu", index)

    def index_cpu_to_all_gpus(self, index, co=None, ngpu=-1):
        self.calls.append(("to_all_gpus", co.shard, ngpu, index))
        return ("sharded", index)


@pytest.mark.parametrize(
    "n_gpus, gpu, device, calls",
    [
        (None, "auto", "cpu", []),
        (0, "auto", "cpu", []),
        (0, True, "cpu", []),
        (4, False, "cpu", []),
        (1, "auto", "gpu", ["resources", ("to_gpu", "res", 0, ("cpu-ip", 8))]),
        (4, "auto", "gpu-sharded-4", [("to_all_gpus", True, 4, ("cpu-ip", 8))]),
        (2, True, "gpu-sharded-2", [("to_all_gpus", True, 2, ("cpu-ip", 8))]),
    ],
)
def test_gpu_index_selection(n_gpus, gpu, device, calls, caplog):
    from progress_core.clustering.kmeans import flat_index

    fake = FakeFaiss(n_gpus)
    with caplog.at_level("WARNING"):
        index, used = flat_index(8, spherical=True, gpu=gpu, faiss_module=fake)
    assert used == device and fake.calls == calls
    assert (index == ("cpu-ip", 8)) == (device == "cpu")
    assert ("faiss sees no GPU" in caplog.text) == (gpu is True and not n_gpus)
    assert flat_index(8, spherical=False, gpu=False, faiss_module=fake) == (("cpu-l2", 8), "cpu")
