import numpy as np
import pytest

from progress_core.selection.context import SelectionError, SelectionHistory
from progress_core.selection.oracle import oracle_select
from progress_core.selection.strategies import available_strategies

CONCEPTS = np.repeat([0, 1, 2, -1], [100, 20, 50, 80])
CLUSTERS = np.zeros(CONCEPTS.size, dtype=np.int64)


def test_oracle_fills_learnable_concepts_evenly_counting_earlier_rounds():
    history = SelectionHistory(selected=np.arange(10))
    remaining = np.arange(10, CONCEPTS.size)
    r = oracle_select(remaining, CLUSTERS, history, 60, 0, CONCEPTS)
    picks = np.bincount(CONCEPTS[r.sample_ids] + 1, minlength=4)
    assert picks.tolist() == [0, 15, 20, 25]  # level 25: concept 0 had 10 already, concept 1 has only 20
    assert np.unique(r.sample_ids).size == 60


def test_oracle_takes_waste_only_once_learnable_rows_are_gone():
    remaining = np.arange(CONCEPTS.size)
    r = oracle_select(remaining, CLUSTERS, SelectionHistory(), 200, 0, CONCEPTS)
    assert (CONCEPTS[r.sample_ids] >= 0).sum() == 170 and (CONCEPTS[r.sample_ids] < 0).sum() == 30


def test_oracle_is_not_a_configurable_strategy_and_checks_its_labels():
    assert "oracle" not in available_strategies()
    with pytest.raises(SelectionError, match="concepts has 3 entries"):
        oracle_select(np.arange(5), CLUSTERS, None, 2, 0, np.zeros(3, dtype=np.int64))
    with pytest.raises(SelectionError, match="1-D integer"):
        oracle_select(np.arange(5), CLUSTERS, None, 2, 0, np.zeros(CONCEPTS.size))


def test_oracle_every_round_levels_this_round_only():
    history = SelectionHistory(selected=np.flatnonzero(CONCEPTS == 0)[:40])
    remaining = np.setdiff1d(np.arange(CONCEPTS.size), history.selected)
    r = oracle_select(remaining, CLUSTERS, history, 45, 0, CONCEPTS, rule="oracle_every_round")
    assert np.bincount(CONCEPTS[r.sample_ids] + 1, minlength=4).tolist() == [0, 15, 15, 15]
    assert r.strategy == "oracle_every_round"
    cumulative = oracle_select(remaining, CLUSTERS, history, 45, 0, CONCEPTS)
    assert np.bincount(CONCEPTS[cumulative.sample_ids] + 1, minlength=4).tolist() == [0, 0, 20, 25]


def test_oracle_clean_draws_learnable_rows_in_the_pools_proportions_then_waste():
    remaining = np.arange(CONCEPTS.size)
    half = oracle_select(remaining, CLUSTERS, SelectionHistory(), 85, 3, CONCEPTS, rule="oracle_clean")
    picks = np.bincount(CONCEPTS[half.sample_ids] + 1, minlength=4)
    assert picks[0] == 0 and np.abs(picks[1:] - [50, 10, 25]).max() <= 10, picks
    everything = oracle_select(remaining, CLUSTERS, SelectionHistory(), 200, 3, CONCEPTS, rule="oracle_clean")
    assert (CONCEPTS[everything.sample_ids] >= 0).sum() == 170 and everything.strategy == "oracle_clean"
    with pytest.raises(SelectionError, match="strategy 'oracle_best': option rule"):
        oracle_select(remaining, CLUSTERS, None, 2, 0, CONCEPTS, rule="oracle_best")


def test_every_oracle_rule_is_a_label_strategy_of_the_config():
    from progress_core.selection.config import LABEL_STRATEGIES, SelectionConfig
    from progress_core.selection.oracle import ORACLE_RULES

    assert set(ORACLE_RULES) == LABEL_STRATEGIES
    assert {SelectionConfig(strategy=name).strategy for name in ORACLE_RULES} == LABEL_STRATEGIES
