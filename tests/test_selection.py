import math

import numpy as np
import pandas as pd
import pytest

from progress_core.selection.context import MissingHistoryError, SelectionError, SelectionHistory
from progress_core.selection.strategies import available_strategies, select

ORIGINAL = {"redistribute_overflow": False, "fallback_when_no_progress": "original"}
"""The original scripts' quota rules (the hand-computed numbers below follow acc_sort.py)."""


def table(d):
    """{cluster: (probed, correct)} -> accuracy table."""
    return pd.DataFrame(
        [(c, n, k, 0, k / n) for c, (n, k) in d.items()], columns=["cluster_id", "n", "correct", "unjudged", "accuracy"]
    )


SIZES = [50, 50, 5, 30, 20, 10]
CIDS = np.repeat(np.arange(6), SIZES)
REMAINING = np.flatnonzero(CIDS != 5)
# c0: 0.5 -> 0.75; c1: 0 -> 0.5 (zero previous accuracy); c2: never probed before -> 0.75, only 5 left;
# c3: 0.8 -> 0.6 (declined); c4: not probed now; c5: improved but nothing left in the pool.
PREV = table({0: (4, 2), 1: (4, 0), 3: (5, 4), 5: (4, 1)})
NOW = table({0: (4, 3), 1: (4, 2), 2: (4, 3), 3: (5, 3), 5: (4, 4)})
HISTORY = SelectionHistory(PREV, NOW, np.flatnonzero(CIDS == 5))


def per_cluster(ids):
    return np.bincount(CIDS[ids], minlength=6).tolist()


def test_registry_lists_all_strategies():
    assert available_strategies() == ["coincide", "full", "progress", "random", "tfs"]
    with pytest.raises(SelectionError, match="unknown strategy 'nope'"):
        select("nope", REMAINING, CIDS, HISTORY, 10, 0)
    with pytest.raises(SelectionError, match="option bogus"):
        select("progress", REMAINING, CIDS, HISTORY, 10, 0, bogus=1)
    with pytest.raises(SelectionError, match="takes no options"):
        select("random", REMAINING, CIDS, HISTORY, 10, 0, temperature=1.0)


def test_progress_hand_computed_relative_change():
    # rel = (a_now - a_prev') / a_prev', a_prev' = a_prev or 1/n_now when a_prev == 0:
    #   c0: (0.75 - 0.5) / 0.5 = 0.5;  c1: (0.5 - 0.25) / 0.25 = 1.0;  c2: (0.75 - 0.25) / 0.25 = 2.0
    #   c3: (0.6 - 0.8) / 0.8 = -0.25 (out);  c5: (1 - 0.25) / 0.25 = 3 but nothing left (out)
    # softmax(rel / 0.5) over {c0, c1, c2} = exp([1, 2, 4] - 4) / (e^-3 + e^-2 + 1)
    z = math.exp(-3) + math.exp(-2) + 1
    p = [math.exp(-3) / z, math.exp(-2) / z, 1 / z]
    assert [round(x, 6) for x in p] == [0.04201, 0.114195, 0.843795]
    # quotas = min(int(0.9 * 100 * p), avail): int(3.78) = 3, int(10.28) = 10, min(int(75.94), 5) = 5
    # exploration = int(0.1 * 100) = 10 over the 50 samples of c3 and c4.
    r = select("progress", REMAINING, CIDS, HISTORY, 100, 0, **ORIGINAL)
    counts = per_cluster(r.sample_ids)
    assert counts[:3] == [3, 10, 5]
    assert counts[3] + counts[4] == 10 and counts[5] == 0
    assert (r.n_exploit, r.n_explore) == (18, 10)
    assert list(r.sample_ids[:18]) == sorted(r.sample_ids[:18], key=lambda s: -[p[0], p[1], p[2]][CIDS[s]])
    t = r.cluster_table.set_index("cluster_id")
    assert t.loc[[0, 1, 2], "rel"].tolist() == [0.5, 1.0, 2.0]
    assert t.loc[[0, 1, 2], "delta"].tolist() == [0.25, 0.5, 0.75]
    assert t.loc[[0, 1, 2], "baseline"].tolist() == [0.5, 0.25, 0.25]
    assert np.isnan(t.loc[2, "acc_prev"]) and t.loc[1, "acc_prev"] == 0.0
    assert t.loc[[0, 1, 2], "probability"].tolist() == pytest.approx(p, abs=1e-12)
    assert t.loc[[0, 1, 2, 3, 4, 5], "quota"].tolist() == [3, 10, 5, 0, 0, 0]
    assert t.loc[5, "available"] == 0 and np.isnan(t.loc[5, "probability"])
    assert np.isnan(t.loc[4, "acc_now"])
    assert list(r.probabilities) == [0, 1, 2]
    assert any("capped" in n and "70" in n for n in r.notes)
    assert len(set(r.sample_ids.tolist())) == 28 and np.isin(r.sample_ids, REMAINING).all()


def test_progress_redistribute_overflow():
    # c2's quota 75 is capped at 5: overflow 70 goes to c0/c1 in proportion p0:p1 = 0.26894:0.73106
    # -> c0 += int(18.83) = 18 (21), c1 += int(51.17) = 51 capped at room 40 (50); 88 - 76 = 12 left -> c0 = 33.
    # the default also lets exploration take the rest of the budget: 100 - 88 = 12 over c3/c4
    r = select("progress", REMAINING, CIDS, HISTORY, 100, 0)
    assert per_cluster(r.sample_ids)[:3] == [33, 50, 5]
    assert (r.n_exploit, r.n_explore) == (88, 12) and r.sample_ids.size == 100


def test_progress_relative_error_reduction():
    # rel = (a_now - a_prev) / (1 - a_prev): c0 0.25/0.5 = 0.5, c1 0.5/1 = 0.5, c2 0.75/1 = 0.75, c3 -0.2/0.2 = -1
    # softmax([1, 1, 1.5]) -> e^-0.5 / (2 e^-0.5 + 1) = 0.274069 (c0, c1), 0.451863 (c2)
    # quotas int(24.67) = 24, 24, min(int(40.67), 5) = 5
    r = select("progress", REMAINING, CIDS, HISTORY, 100, 0, progress_measure="relative_error_reduction", **ORIGINAL)
    assert per_cluster(r.sample_ids)[:3] == [24, 24, 5]
    t = r.cluster_table.set_index("cluster_id")
    assert t.loc[[0, 1, 2, 3], "rel"].tolist() == pytest.approx([0.5, 0.5, 0.75, -1.0])


def test_relative_error_reduction_floors_perfect_previous_accuracy():
    prev = table({0: (4, 4), 1: (4, 4)})
    now = table({0: (4, 2), 1: (4, 4)})
    r = select(
        "progress", REMAINING, CIDS, SelectionHistory(prev, now), 10, 0, progress_measure="relative_error_reduction"
    )
    t = r.cluster_table.set_index("cluster_id")
    assert t.loc[0, "baseline"] == 0.25 and t.loc[0, "rel"] == -2.0 and t.loc[1, "rel"] == 0.0


def test_temperature_changes_the_quotas():
    r = select("progress", REMAINING, CIDS, HISTORY, 100, 0, temperature=100.0, **ORIGINAL)
    # softmax([0.005, 0.01, 0.02]) ~ [0.3317, 0.3333, 0.3350] -> int(29.85)=29, int(30.0)=29 or 30, c2 capped 5
    z = np.exp(np.array([0.5, 1.0, 2.0]) / 100)
    q = np.floor(90 * z / z.sum()).astype(int)
    assert per_cluster(r.sample_ids)[:3] == [q[0], q[1], 5]


def test_no_cluster_improved_original_and_fallback():
    flat = SelectionHistory(table({0: (4, 2), 1: (4, 3)}), table({0: (4, 2), 1: (4, 1)}))
    r = select("progress", REMAINING, CIDS, flat, 100, 0, **ORIGINAL)
    assert r.sample_ids.size == 10 and r.n_exploit == 0
    assert any("no cluster improved" in n for n in r.notes)
    r2 = select("progress", REMAINING, CIDS, flat, 100, 0)
    assert r2.sample_ids.size == 100 and r2.n_explore == 100


def test_every_cluster_improved_leaves_no_exploration():
    pool = np.flatnonzero(np.isin(CIDS, [0, 1]))
    r = select("progress", pool, CIDS, HISTORY, 40, 0, **ORIGINAL)
    # p over {c0, c1} = softmax([1, 2]) = [0.268941, 0.731059]: int(36 * p) = 9, 26
    assert per_cluster(r.sample_ids)[:2] == [9, 26]
    assert r.n_explore == 0
    assert any("only 0 samples lie outside" in n for n in r.notes)


def test_budget_larger_than_pool_and_empty_pool():
    r = select("progress", REMAINING, CIDS, HISTORY, 1000, 0)
    assert sorted(r.sample_ids.tolist()) == REMAINING.tolist()
    assert r.notes == ["budget 1000 >= remaining 155: taking all"]
    e = select("progress", np.empty(0, dtype=np.int64), CIDS, HISTORY, 100, 0)
    assert e.sample_ids.size == 0 and e.notes == ["remaining pool is empty: nothing to select"]
    for s in ("random", "tfs", "full"):
        assert select(s, np.empty(0, dtype=np.int64), CIDS, HISTORY, 5, 0).sample_ids.size == 0


def test_progress_needs_two_probes():
    with pytest.raises(MissingHistoryError, match="acc_now"):
        select("progress", REMAINING, CIDS, SelectionHistory(acc_prev=PREV), 10, 0)
    # no previous probe at all: every cluster counts as never probed (a_prev = 0, floored)
    r = select("progress", REMAINING, CIDS, SelectionHistory(acc_now=NOW), 100, 0)
    t = r.cluster_table.set_index("cluster_id")
    assert t.loc[[0, 1, 2, 3], "rel"].tolist() == pytest.approx([2.0, 1.0, 2.0, 2.0])


def test_seeds_reproduce_and_differ():
    a = select("progress", REMAINING, CIDS, HISTORY, 100, 7).sample_ids
    b = select("progress", REMAINING, CIDS, HISTORY, 100, np.random.default_rng(7)).sample_ids
    c = select("progress", REMAINING, CIDS, HISTORY, 100, 8).sample_ids
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    for s in ("random", "tfs"):
        x = select(s, REMAINING, CIDS, HISTORY, 30, 1).sample_ids
        y = select(s, REMAINING, CIDS, HISTORY, 30, 1).sample_ids
        z = select(s, REMAINING, CIDS, HISTORY, 30, 2).sample_ids
        assert x.tolist() == y.tolist() and x.tolist() != z.tolist()


def test_bad_inputs_are_named_errors():
    with pytest.raises(SelectionError, match="appears more than once"):
        select("random", np.array([1, 1]), CIDS, None, 1, 0)
    with pytest.raises(SelectionError, match="outside"):
        select("random", np.array([1, 999]), CIDS, None, 1, 0)
    with pytest.raises(SelectionError, match="budget"):
        select("random", REMAINING, CIDS, None, -1, 0)


def test_random_is_uniform_subset():
    r = select("random", REMAINING, CIDS, None, 40, 3)
    assert r.sample_ids.size == 40 and len(set(r.sample_ids.tolist())) == 40
    assert np.isin(r.sample_ids, REMAINING).all()
    counts = np.zeros(CIDS.size)
    for seed in range(200):
        counts[select("random", REMAINING, CIDS, None, 40, seed).sample_ids] += 1
    per_sample = counts[REMAINING] / 200
    assert abs(per_sample.mean() - 40 / 155) < 1e-12 and per_sample.min() > 0.1 and counts[CIDS == 5].sum() == 0


def test_coincide_takes_order_restricted_to_pool():
    order = np.array([150, 3, 152, 0, 7, 2, 9])
    pool = np.array([0, 2, 3, 7, 9, 11])
    r = select("coincide", pool, CIDS, SelectionHistory(coincide_order=order), 3, 0)
    assert r.sample_ids.tolist() == [3, 0, 7]
    r = select("coincide", pool, CIDS, SelectionHistory(coincide_order=order), 6, 0)
    assert r.sample_ids.tolist() == [3, 0, 7, 2, 9]
    assert any("covers only 5" in n for n in r.notes)
    with pytest.raises(MissingHistoryError, match="coincide_order"):
        select("coincide", pool, CIDS, SelectionHistory(), 3, 0)
    with pytest.raises(SelectionError, match="sample_id 3 appears more than once"):
        select("coincide", pool, CIDS, SelectionHistory(coincide_order=np.array([3, 3])), 1, 0)


def test_full_takes_everything():
    r = select("full", REMAINING, CIDS, None, 5, 0)
    assert r.sample_ids.tolist() == REMAINING.tolist()


def test_tfs_prefers_the_tail():
    # selected so far: 10 in cluster A, 2 in B, 0 in C; left: A 10, B 10, C 3; budget 10.
    # Drawing from the least represented: C fills 0->3 (exhausted), B 2->9; level 9 costs 3 + 7 = 10.
    cids = np.repeat([0, 1, 2], [20, 12, 3])
    selected = np.r_[np.arange(10), np.arange(20, 22)]
    pool = np.setdiff1d(np.arange(35), selected)
    for seed in range(5):
        r = select("tfs", pool, cids, SelectionHistory(selected=selected), 10, seed)
        assert np.bincount(cids[r.sample_ids], minlength=3).tolist() == [0, 7, 3]
        assert np.isin(r.sample_ids, pool).all() and len(set(r.sample_ids.tolist())) == 10
        levels = []
        running = np.bincount(cids[selected], minlength=3).astype(int)
        for s in r.sample_ids:
            levels.append(running[cids[s]])
            running[cids[s]] += 1
        assert levels == sorted(levels)


def test_tfs_breaks_ties_at_random():
    cids = np.repeat([0, 1], 5)
    seen = set()
    for seed in range(20):
        r = select("tfs", np.arange(10), cids, None, 3, seed)
        c = np.bincount(cids[r.sample_ids], minlength=2).tolist()
        assert sorted(c) == [1, 2]
        seen.add(tuple(c))
    assert seen == {(1, 2), (2, 1)}
