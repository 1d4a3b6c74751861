import numpy as np
import pytest

from progress_core.selection.context import SelectionError
from progress_core.selection.proxy import ProxyData, ProxySettings, probe_ids, run_proxy


def test_probe_takes_the_smallest_keys_of_remaining_samples_per_cluster():
    clusters = np.array([0, 0, 0, 1, 1, 2])
    keys = np.array([5, 1, 3, 0, 4, 2])
    ids = probe_ids(np.array([0, 1, 2, 3, 4]), clusters, keys, per_cluster=2)
    assert sorted(ids.tolist()) == [1, 2, 3, 4]
    assert sorted(probe_ids(np.array([0, 2, 5]), clusters, keys, 1).tolist()) == [2, 5]


def _data(n=480, seed=0):
    """Four concepts whose answer is readable from the features, one unlearnable (random answers)."""
    rng = np.random.default_rng(seed)
    concept = rng.integers(5, size=n + 100)
    answer = rng.integers(3, size=n + 100)
    x = rng.normal(size=(n + 100, 16)).astype(np.float32)
    x[np.arange(n + 100), answer] += 3.0 * (concept < 4)
    x[np.arange(n + 100), 3 + concept] += 3.0
    label = np.where(concept < 4, answer, rng.integers(3, size=n + 100))
    oracle = np.where(concept[:n] < 4, concept[:n], -1)
    return ProxyData(
        x[:n], label[:n], x[n:], label[n:], concept[n:].astype(str), x[:0], label[:0], concept[:n], oracle, 3, oracle
    )


SETTINGS = ProxySettings(global_batch=8, selection_num=40, annotation_k=5, samples_per_cluster=4, hidden=16)


def test_every_strategy_selects_and_trains_the_same_samples_and_steps_at_a_budget():
    data = _data()
    runs = [
        run_proxy(data, "random", 0.3, 1, SETTINGS),
        run_proxy(data, "oracle", 0.3, 1, SETTINGS),
        run_proxy(data, "oracle_every_round", 0.3, 1, SETTINGS),
        run_proxy(data, "oracle_clean", 0.3, 1, SETTINGS),
        run_proxy(data, "progress", 0.3, 1, SETTINGS, {"allocation": "damped"}),
        run_proxy(data, "progress", 0.3, 1, SETTINGS, {"allocation": "balanced"}),
        run_proxy(data, "progress", 0.3, 1, SETTINGS),
    ]
    # warm-up 14 + 10 (2 + 2 steps), then rounds of 40, 40 and the 32 left before step ceil(0.3 * 480 / 8) = 18
    assert {r["n_selected"] for r in runs} == {136} and {r["steps"] for r in runs} == {18}
    assert {r["rounds"] for r in runs} == {3}
    assert run_proxy(data, "random", 0.3, 1, SETTINGS) == runs[0]


def test_the_student_learns_and_full_trains_the_whole_pool():
    data = _data()
    full = run_proxy(data, "full", 1.0, 0, SETTINGS)
    assert full["n_selected"] == 480 and full["steps"] == 2 + 2 + 57
    assert full["accuracy"] > 0.6
    assert full["accuracy"] > run_proxy(data, "random", 0.05, 0, SETTINGS)["accuracy"]


def test_labels_are_refused_by_a_strategy_that_takes_no_options():
    data = _data()
    with pytest.raises(SelectionError, match="takes no options"):
        run_proxy(data, "random", 0.3, 0, SETTINGS, {"concepts": data.oracle})
