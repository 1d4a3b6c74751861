"""The default ``progress`` quota rules spend the whole round budget while unselected samples remain
(PROGRESS §3.3 with the capped quota redistributed; ``docs/algorithm.md#selection``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from progress_core.selection.config import ProgressOptions, SelectionConfig
from progress_core.selection.context import SelectionHistory
from progress_core.selection.strategies import select


def table(d):
    return pd.DataFrame(
        [(c, n, k, 0, k / n) for c, (n, k) in d.items()], columns=["cluster_id", "n", "correct", "unjudged", "accuracy"]
    )


SIZES = [40, 10, 10, 10, 5]
CIDS = np.repeat(np.arange(len(SIZES)), SIZES)


@pytest.mark.parametrize(
    ("prev", "now", "budget"),
    [
        ({1: (10, 0)}, {1: (10, 9)}, 50),  # one-hot softmax on a cluster of 10: capped, overflow redistributed
        ({0: (10, 5), 1: (10, 5)}, {0: (10, 5), 1: (10, 2)}, 30),  # no cluster improved
        ({c: (10, 1) for c in range(5)}, {c: (10, 9) for c in range(5)}, 70),  # all improved: nothing to explore
        ({}, {4: (5, 5)}, 74),  # budget one short of the pool
    ],
)
def test_default_spends_the_whole_budget(prev, now, budget):
    remaining = np.arange(CIDS.size)
    history = SelectionHistory(table(prev) if prev else None, table(now))
    r = select("progress", remaining, CIDS, history, budget, 3)
    assert r.sample_ids.size == budget
    assert np.unique(r.sample_ids).size == budget
    original = select(
        "progress",
        remaining,
        CIDS,
        history,
        budget,
        3,
        redistribute_overflow=False,
        fallback_when_no_progress="original",
    )
    assert original.sample_ids.size <= budget


def test_original_mode_under_spends_on_a_capped_cluster_and_says_so():
    history = SelectionHistory(table({1: (10, 0)}), table({1: (10, 9)}))
    r = select(
        "progress",
        np.arange(CIDS.size),
        CIDS,
        history,
        50,
        0,
        redistribute_overflow=False,
        fallback_when_no_progress="original",
    )
    assert r.sample_ids.size == 10 + 5  # cluster 1 capped at 10, exploration int(0.1 * 50)
    assert any("dropped (original behaviour)" in n for n in r.notes)


def test_selection_config_is_the_progress_options():
    assert issubclass(SelectionConfig, ProgressOptions)
    cfg = SelectionConfig(temperature=1.0, exploit_frac=0.8)
    assert cfg.exploit_fraction == 0.8
    assert cfg.progress_options() == {
        "temperature": 1.0,
        "exploit_fraction": 0.8,
        "progress_measure": "relative_change",
        "redistribute_overflow": True,
        "fallback_when_no_progress": "explore",
        "allocation": "paper",
        "uniform_share": 0.5,
        "max_tilt": 3.0,
        "progress_signal": "abs_change",
    }
