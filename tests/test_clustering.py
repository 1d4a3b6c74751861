import numpy as np
import pyarrow.parquet as pq
import pytest

from progress_core.clustering import (
    ClusteringConfig,
    ClusteringError,
    CollapsedClusteringError,
    KTooLargeError,
    NonFiniteFeaturesError,
    load_clustering,
    resolve_k,
    save_clustering,
    scaled_k,
    spherical_kmeans,
)


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
