"""The round schedule as pure functions, on hand-made numbers (PROGRESS §3.4)."""

from __future__ import annotations

import pytest

from progress_core.run.config import load_config
from progress_core.selection.schedule import (
    ScheduleState,
    advance,
    next_round,
    plan_from,
    plan_rounds,
    round_budget,
    steps_for_new,
)


def paper_state(**kw) -> ScheduleState:
    base = dict(
        round_index=0,
        step=0,
        remaining=665_298,
        final_step=1039,
        global_batch=128,
        selection_num=7500,
        warmup_sizes=(50_000, 10_000),
    )
    base.update(kw)
    return ScheduleState(**base)


def test_paper_numbers():
    plans = plan_from(paper_state())
    assert plans[0].to_step == 391, "ceil(50000 / 128): every W1 sample trained"
    # W2 alone: ceil(10000 / 128) = 79 steps; the original stops at 469 and leaves 16 W2 samples untrained.
    assert plans[1].to_step == 470
    selection = plans[2:]
    assert [p.budget for p in selection[:-1]] == [7424] * 9, "7500 rounded down to whole batches of 128"
    assert [p.to_step for p in selection] == [528, 586, 644, 702, 760, 818, 876, 934, 992, 1039]
    assert selection[-1].budget == 47 * 128
    assert all(p.budget % 128 == 0 for p in selection)
    assert all(p.kind == "select" for p in selection) and plans[0].pool == "w1" and plans[1].pool == "w2"


def test_budget_not_divisible_by_batch_and_tail_merged():
    state = ScheduleState(0, 0, 1000, 30, 8, 50, (40, 8), min_round_fraction=0.5)
    plans = plan_from(state)
    assert [p.to_step for p in plans[:2]] == [5, 6]
    budgets = [p.budget for p in plans[2:]]
    # 24 steps left = 192 samples: 48, 48, 48 then a tail of 48 >= 24 stays a round
    assert budgets == [48, 48, 48, 48] and plans[-1].to_step == 30
    state = ScheduleState(0, 0, 1000, 28, 8, 50, (40, 8), min_round_fraction=0.5)
    budgets = [p.budget for p in plan_from(state)[2:]]
    # 22 steps = 176 samples: 48, 48, then 80 left = 48 + a tail of 32 >= 24: kept; with 0.75 it merges
    assert budgets == [48, 48, 48, 32]
    state = ScheduleState(0, 0, 1000, 28, 8, 50, (40, 8), min_round_fraction=0.75)
    assert [p.budget for p in plan_from(state)[2:]] == [48, 48, 80]


def test_round_smaller_than_a_batch_selects_one_batch():
    state = ScheduleState(2, 10, 100, 20, 16, 5, (0, 0))
    assert round_budget(state) == 16


def test_exhausted_pool_ends_with_the_rest_and_cycles_it():
    state = ScheduleState(0, 0, 130, 100, 8, 48, (40, 10))
    plans = plan_from(state)
    assert [p.budget for p in plans] == [40, 10, 48, 32]
    assert plans[-1].to_step == plans[-2].to_step + steps_for_new(32, 8)
    end = state
    for p in plans:
        end = advance(end, p.budget)
    assert end.remaining == 0 and next_round(end) is None


def test_stops_at_max_rounds_and_final_step():
    state = paper_state(max_rounds=2)
    assert len(plan_from(state)) == 4
    assert next_round(paper_state(round_index=5, step=1039)) is None


def test_next_round_replans_after_a_short_round():
    state = advance(advance(paper_state(), 50_000), 10_000)
    plan = next_round(state)
    short = advance(state, 1000)  # the original quota mode selected less than planned
    after = next_round(short)
    assert short.step == plan.from_step + 8 and after.from_step == short.step


def test_full_takes_the_whole_remaining_pool():
    state = ScheduleState(0, 0, 1000, 125, 8, 48, (40, 10), takes_all=True)
    plans = plan_from(state)
    assert len(plans) == 3 and plans[2].budget == 950


@pytest.mark.parametrize("strategy", ["progress", "random", "full"])
def test_plan_rounds_from_the_run_config(strategy):
    cfg = load_config(
        overrides={
            "selection": {"strategy": strategy, "selection_num": 50},
            "schedule": {"budget_fraction": 0.3},
            "warmup": {"fractions": (0.05, 0.1)},
            "training": {"global_batch_size": 8},
        }
    )
    plans = plan_rounds(cfg, 400)
    assert plans[0].budget == 20 and plans[1].budget == 20
    if strategy == "full":
        assert plans[-1].budget == 360
    else:
        # FINAL_STEP ceil(0.3 * 400 / 8) = 15; the warm-up pools of 20 take 3 steps each
        assert plans[-1].to_step == 15 and [p.budget for p in plans[2:]] == [48, 24]
