import math
from pathlib import Path

import numpy as np
import pytest

from progress_core.clustering.coincide import (
    CoincideError,
    cluster_density,
    cluster_transferability,
    cluster_wise_prune,
    coincide_selection,
    gaussian_kernel,
    greedy_mmd_selection,
    warmup_pools,
)
from progress_core.clustering.kmeans import spherical_kmeans
from progress_core.clustering.store import KMeansResult
from progress_core.features.store import PagedRows, load_features


def naive_greedy_mmd(K, M):
    """Literal MMD-critic greedy of docs/algorithm.md#warm-up-pools: re-evaluate every candidate subset."""
    n = len(K)
    selected = []
    kxx = K.mean()
    for _ in range(M):
        best, best_val = None, np.inf
        for j in range(n):
            if j in selected:
                continue
            s = selected + [j]
            val = kxx + K[np.ix_(s, s)].mean() - 2 * K[:, s].mean()
            if val < best_val:
                best, best_val = j, val
        selected.append(best)
    return np.array(selected, dtype=np.int64)


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def test_transferability_matches_hand_computation():
    c3 = unit([1.0, 0.3, 0.0])
    cents = np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 0, 1], c3], np.float32)
    s13 = float(np.dot([0.6, 0.8, 0], c3))
    assert np.dot([1, 0, 0], c3) > 0.9 and s13 < 0.9
    expected = [0.6 / 2, (0.6 + s13) / 3, 0.0, s13 / 2]
    np.testing.assert_allclose(cluster_transferability(cents), expected, rtol=1e-6)


def test_transferability_all_near_duplicates_is_zero():
    cents = np.array([[1, 0], [1, 1e-3]], np.float32)
    np.testing.assert_array_equal(cluster_transferability(cents), [0.0, 0.0])


def test_density_two_point_cluster_formula():
    d = 0.6
    x = np.array([[1, 0], [d, math.sqrt(1 - d * d)], [0, 1]], np.float32)
    dens = cluster_density(x, np.array([0, 0, 1]), 3)
    assert dens[0] == pytest.approx((2 + 2 * math.exp(-(1 - d))) / 4, rel=1e-6)
    assert dens[1] == pytest.approx(1.0)
    assert np.isnan(dens[2])


@pytest.mark.parametrize("seed", range(6))
def test_incremental_greedy_equals_naive(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(25, 4))
    K = gaussian_kernel(x, sigma=1.3)
    np.testing.assert_array_equal(greedy_mmd_selection(K, 12), naive_greedy_mmd(K, 12))
    np.testing.assert_array_equal(greedy_mmd_selection(K, 25), naive_greedy_mmd(K, 25))


def test_greedy_first_pick_is_the_kernel_medoid():
    angles = np.array([0.0, 0.1, 0.2, 2.5])
    x = np.stack([np.cos(angles), np.sin(angles)], 1)
    K = gaussian_kernel(x)
    picks = greedy_mmd_selection(K, 2)
    assert picks[0] == 1
    np.testing.assert_array_equal(picks, naive_greedy_mmd(K, 2))
    assert greedy_mmd_selection(K, 0).size == 0
    with pytest.raises(CoincideError):
        greedy_mmd_selection(K, 5)


def _three_clusters(sizes=(10, 10, 10)):
    """Identical points per cluster (density 1), transfer set so softmax(score/0.1) = (0.3, 0.6, 0.1)."""
    basis = np.eye(3, dtype=np.float32)
    feats = np.concatenate([np.repeat(basis[c : c + 1], s, 0) for c, s in enumerate(sizes)])
    assign = np.concatenate([np.full(s, c) for c, s in enumerate(sizes)])
    transfer = 1.0 + 0.1 * np.log(np.array([3.0, 6.0, 1.0]))
    return feats, assign, transfer


def test_prune_quotas_roll_down():
    feats, assign, transfer = _three_clusters()
    picks = cluster_wise_prune(feats, assign, transfer, n_target=13, temperature=0.1)
    # cluster 1: round(13*0.6)=8 -> 5 left; cluster 0: round(5*0.75)=4 -> 1 left; cluster 2: round(1*1)=1
    np.testing.assert_array_equal(picks, [10, 11, 12, 13, 14, 15, 16, 17, 0, 1, 2, 3, 20])
    assert cluster_wise_prune(feats, assign, transfer, fraction=0.5).size == 15


def test_prune_takes_whole_cluster_when_quota_exceeds_it():
    feats, assign, transfer = _three_clusters(sizes=(10, 5, 10))
    picks = cluster_wise_prune(feats, assign, transfer, n_target=16, temperature=0.1)
    # cluster 1 (5 rows) asked for round(9.6)=10 -> all 5; 11 left: cluster 0 round(8.25)=8; cluster 2 gets 3
    np.testing.assert_array_equal(picks, [10, 11, 12, 13, 14] + list(range(8)) + [15, 16, 17])


def test_prune_skips_empty_clusters():
    feats, assign, transfer = _three_clusters()
    with_empty = cluster_wise_prune(feats, assign, np.append(transfer, 5.0), fraction=0.5)
    np.testing.assert_array_equal(with_empty, cluster_wise_prune(feats, assign, transfer, fraction=0.5))


def test_prune_rejects_bad_fraction_and_shapes():
    feats, assign, transfer = _three_clusters()
    with pytest.raises(CoincideError):
        cluster_wise_prune(feats, assign, transfer, fraction=0.0)
    with pytest.raises(CoincideError):
        cluster_wise_prune(feats, assign[:-1], transfer, fraction=0.5)
    with pytest.raises(CoincideError):
        cluster_wise_prune(feats, assign, transfer[:2], fraction=0.5)


@pytest.fixture(scope="module")
def blob_clustering():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(12, 24))
    x = centres[rng.integers(0, 12, 2000)] + 0.4 * rng.normal(size=(2000, 24))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    return x, spherical_kmeans(x, 12, niter=20, seed=1234)


def test_warmup_pools_counts_disjointness_and_determinism(blob_clustering):
    x, fine = blob_clustering
    pools = warmup_pools(x, fine, (0.075, 0.09))
    assert pools.w1.size == int(0.075 * 2000) == 150
    assert pools.order.size == int(0.09 * 2000) == 180
    w1, w2, rem = set(pools.w1), set(pools.w2), set(pools.remaining)
    assert len(w1) == 150 and not (w1 & w2) and not (rem & (w1 | w2))
    assert w1 | w2 | rem == set(range(2000))
    assert w2 == set(pools.order) - w1
    assert len(w2) >= 180 - 150
    again = warmup_pools(x, fine, (0.075, 0.09))
    np.testing.assert_array_equal(pools.w1, again.w1)
    np.testing.assert_array_equal(pools.w2, again.w2)


def test_warmup_w1_equals_direct_prune_and_coincide_budget(blob_clustering):
    x, fine = blob_clustering
    pools = warmup_pools(x, fine, (0.075, 0.09))
    transfer = cluster_transferability(fine.centroids)
    np.testing.assert_array_equal(pools.w1, cluster_wise_prune(x, fine.assignment, transfer, 0.075))
    assert coincide_selection(x, fine, 321).size == 321


def test_warmup_rejects_mismatched_clustering(blob_clustering):
    x, fine = blob_clustering
    short = KMeansResult(fine.centroids, fine.assignment[:-1], fine.similarity[:-1])
    with pytest.raises(CoincideError):
        warmup_pools(x, short)
    with pytest.raises(CoincideError):
        warmup_pools(x, fine, (0.09, 0.075))


def _mapped_rss_kb(path) -> int:
    """Resident kB of this process's mappings of ``path`` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        first = line.split()[0]
        if "-" in first and not first.endswith(":"):
            inside = line.rstrip().endswith(str(path))
        elif inside and first == "Rss:":
            total += int(line.split()[1])
    return total


def test_paged_rows_prune_the_same_pools_as_the_array_in_memory(blob_clustering, tmp_path):
    x, fine = blob_clustering
    np.save(tmp_path / "features.npy", x)
    whole = warmup_pools(x, fine, (0.075, 0.09))
    paged = warmup_pools(
        PagedRows(load_features(tmp_path / "features.npy"), release_bytes=1 << 16), fine, (0.075, 0.09)
    )
    for name in ("w1", "w2", "remaining", "order"):
        np.testing.assert_array_equal(getattr(paged, name), getattr(whole, name))
    np.testing.assert_array_equal(
        coincide_selection(PagedRows(load_features(tmp_path / "features.npy")), fine, 321),
        coincide_selection(x, fine, 321),
    )


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc/self/smaps")
def test_paged_rows_hold_a_bounded_part_of_the_mapped_file(tmp_path):
    """Scattered gathers, as COINCIDE's cluster by cluster reads, keep at most ``release_bytes`` plus one gather's
    faults of the mapped file resident, not the file (the 3M-row memory goal); the rows are the file's rows."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24_000, 2048)).astype(np.float16)
    path = (tmp_path / "features.npy").resolve()
    np.save(path, x)
    rows = PagedRows(load_features(path), release_bytes=16 << 20)
    peak = 0
    for _ in range(100):
        ids = np.sort(rng.choice(len(x), 4, replace=False))
        np.testing.assert_array_equal(rows[ids], x[ids])
        peak = max(peak, _mapped_rss_kb(path))
    file_kb = path.stat().st_size // 1024
    assert 0 < peak <= 16 * 1024 < file_kb / 5, f"{peak} kB of the {file_kb} kB file resident at once"
