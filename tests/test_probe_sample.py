"""Held-out probe sampling: one seeded key per sample id keeps the probe set stable while the pool shrinks."""

from __future__ import annotations

import numpy as np
import pytest

from progress_core.probe.accuracy import ProbeError, probe_sample


def test_keys_per_id_keep_the_probe_set_while_samples_remain():
    ids = np.arange(200)
    first = probe_sample(ids, ids % 5, 4, 11, n_samples=200)
    assert np.bincount(first % 5).tolist() == [4] * 5
    removed = first[:3]
    rest = np.setdiff1d(ids, removed)
    second = probe_sample(rest, rest % 5, 4, 11, n_samples=200)
    assert set(first) - set(removed) <= set(second), "samples still in the pool stay probed"
    assert len(set(second) - set(first)) == 3, "only the selected ones are replaced"
    shuffled = np.random.default_rng(0).permutation(rest)
    assert np.array_equal(probe_sample(shuffled, shuffled % 5, 4, 11, n_samples=200), second), "order-free"


def test_zero_per_cluster_and_ids_outside_the_manifest():
    assert probe_sample(np.arange(10), np.zeros(10, int), 0, 1, n_samples=10).size == 0
    with pytest.raises(ProbeError, match="0..9"):
        probe_sample(np.array([3, 12]), np.array([0, 0]), 1, 1, n_samples=10)
