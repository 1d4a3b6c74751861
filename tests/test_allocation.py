import numpy as np
import pandas as pd
import pytest

from progress_core.selection.allocation import capped_quotas, probe_change_signal, sample_rates
from progress_core.selection.config import ProgressOptions
from progress_core.selection.context import MissingHistoryError, SelectionHistory
from progress_core.selection.strategies import select

DAMPED = {"allocation": "damped"}


def table(d):
    """{cluster: (probed, correct)} -> accuracy table."""
    return pd.DataFrame(
        [(c, n, k, 0, k / n) for c, (n, k) in d.items()], columns=["cluster_id", "n", "correct", "unjudged", "accuracy"]
    )


def test_paper_rule_stays_the_default():
    assert ProgressOptions().allocation == "paper"


def test_signal_ignores_changes_within_the_probe_noise():
    prev = table({0: (12, 0), 1: (12, 2), 2: (100, 10), 3: (100, 60)})
    now = table({0: (12, 1), 1: (12, 3), 2: (100, 40), 3: (100, 30), 4: (12, 6)})
    out = probe_change_signal(prev, now).set_index("cluster_id")
    assert out.loc[0, "signal"] < 0.1  # 0 -> 1/12: the paper's floor makes this rel = 0, here ~1 SE
    assert out.loc[1, "signal"] == 0.0
    assert out.loc[2, "signal"] > 3 and out.loc[3, "signal"] > 3  # |Δ|: a drop attracts budget too
    assert out.loc[4, "signal"] == 0.0  # probed once: no change to measure
    gain = probe_change_signal(prev, now, "gain").set_index("cluster_id")
    assert gain.loc[3, "signal"] == 0.0 and gain.loc[2, "signal"] == out.loc[2, "signal"]


def test_rates_are_bounded_and_average_one_over_samples():
    avail = np.array([1000, 100, 10, 0])
    rates = sample_rates(avail, np.array([0.0, 0.0, 50.0, 9.0]), uniform_share=0.5, max_tilt=3.0)
    assert np.isclose((avail * rates).sum() / avail.sum(), 1.0)
    assert rates[2] / rates[0] <= 3.0 + 1e-9 and rates[2] > rates[0]
    assert np.allclose(sample_rates(avail, np.zeros(4), 0.5, 3.0), 1.0)


def test_quotas_scale_with_size_spend_the_budget_and_respect_availability():
    assert capped_quotas(40, np.array([100, 300]), np.ones(2)).tolist() == [10, 30]
    q = capped_quotas(100, np.array([5, 300, 200]), np.array([3.0, 1.0, 1.0]))
    assert q.sum() == 100 and q[0] <= 5 and abs(q[1] - 1.5 * q[2]) <= 1
    assert capped_quotas(1000, np.array([5, 7]), np.ones(2)).tolist() == [5, 7]


SIZES = [400, 300, 30, 20]
CIDS = np.repeat(np.arange(4), SIZES)


def test_floor_jump_of_a_small_cluster_no_longer_takes_the_round():
    prev = table({0: (12, 6), 1: (12, 6), 2: (12, 0), 3: (12, 3)})
    now = table({0: (12, 6), 1: (12, 7), 2: (12, 2), 3: (12, 3)})
    history = SelectionHistory(prev, now, np.empty(0, dtype=np.int64))
    remaining = np.arange(CIDS.size)
    paper = select("progress", remaining, CIDS, history, 100, 0)
    damped = select("progress", remaining, CIDS, history, 100, 0, **DAMPED)
    paper_picks = np.bincount(CIDS[paper.sample_ids], minlength=4)
    damped_picks = np.bincount(CIDS[damped.sample_ids], minlength=4)
    assert paper_picks[2] >= 30  # the paper's rule: rel = 12 * 2/12 - 1 = 1 wins the softmax
    assert damped_picks.sum() == 100 and damped_picks[2] <= 3 * 100 * 30 / 750
    assert damped_picks[0] >= 0.5 * 100 * 400 / 750
    again = select("progress", remaining, CIDS, history, 100, 0, **DAMPED)
    assert np.array_equal(damped.sample_ids, again.sample_ids)
    assert damped.cluster_table["quota"].sum() == 100 and damped.cluster_table["probability"].sum() == pytest.approx(1)


def test_damped_without_signal_is_stratified_random_and_needs_a_probe():
    flat = table({0: (12, 6), 1: (12, 6), 2: (12, 6), 3: (12, 6)})
    r = select("progress", np.arange(CIDS.size), CIDS, SelectionHistory(flat, flat), 75, 1, **DAMPED)
    assert np.bincount(CIDS[r.sample_ids], minlength=4).tolist() == [40, 30, 3, 2]
    with pytest.raises(MissingHistoryError, match="two probes"):
        select("progress", np.arange(CIDS.size), CIDS, SelectionHistory(), 10, 0, **DAMPED)


def test_balanced_gives_every_cluster_the_same_untilted_share_whatever_its_size():
    flat = table({0: (12, 6), 1: (12, 6), 2: (12, 6), 3: (12, 6)})
    history = SelectionHistory(flat, flat)
    r = select("progress", np.arange(CIDS.size), CIDS, history, 80, 1, allocation="balanced")
    assert np.bincount(CIDS[r.sample_ids], minlength=4).tolist() == [20, 20, 20, 20]
    full = select("progress", np.arange(CIDS.size), CIDS, history, 200, 1, allocation="balanced")
    picks = np.bincount(CIDS[full.sample_ids], minlength=4)
    assert picks.tolist()[2:] == [30, 20] and picks[0] == picks[1] == 75, "an exhausted cluster's quota moves on"
    assert "balanced allocation" in " ".join(full.notes)


def test_balanced_tilts_towards_a_moving_cluster_by_at_most_max_tilt():
    prev = table({0: (100, 50), 1: (100, 50), 2: (100, 10), 3: (100, 50)})
    now = table({0: (100, 50), 1: (100, 50), 2: (100, 60), 3: (100, 50)})
    r = select("progress", np.arange(CIDS.size), CIDS, SelectionHistory(prev, now), 60, 0, allocation="balanced")
    picks = np.bincount(CIDS[r.sample_ids], minlength=4)
    assert picks[2] > picks[0] and picks[2] <= 3 * picks[0] + 1 and picks.sum() == 60
    assert r.cluster_table["probability"].sum() == pytest.approx(1)


def test_two_se_threshold_keeps_only_changes_beyond_two_standard_errors():
    prev = table({0: (100, 50), 1: (100, 50), 2: (100, 10)})
    now = table({0: (100, 60), 1: (100, 35), 2: (100, 60)})  # z ≈ 1.4, -2.1, 7.5
    one = probe_change_signal(prev, now).set_index("cluster_id")["signal"]
    two = probe_change_signal(prev, now, "abs_change_2se").set_index("cluster_id")["signal"]
    assert one[0] > 0.3, "1.4 SE passes the one-SE threshold"
    assert two[0] == 0.0 and 0 < two[1] < one[1] and np.isclose(one[2] - two[2], 1.0)
    picks = select(
        "progress",
        np.arange(CIDS.size),
        CIDS,
        SelectionHistory(prev, now),
        60,
        0,
        allocation="damped",
        progress_signal="abs_change_2se",
    )
    assert picks.cluster_table.set_index("cluster_id").loc[0, "rel"] == 0.0
