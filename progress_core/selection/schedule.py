"""The round schedule of a PROGRESS run as pure functions (PROGRESS §3.4, ``docs/algorithm.md#round-schedule``).

A run is: warm-up round 0 trains W1, warm-up round 1 trains W2, then selection rounds each select a budget of
new samples from the remaining pool and train on them, until FINAL_STEP or an exhausted pool. The rules:

- A round trains ``ceil(new / global_batch)`` steps, so every selected sample is trained; a piece that does
  not fill its last batch cycles a few of its own samples (only the warm-up pools and a pool's last
  samples can do that: selection budgets are whole global batches).
- A selection round's budget is ``selection_num`` rounded down to whole global batches (at least one), cut
  to what fits before FINAL_STEP. A tail smaller than ``min_round_fraction * selection_num`` is merged into
  the round before it, so no round of a handful of samples pays a full probe.
- The run stops when FINAL_STEP is reached, the remaining pool is empty or ``max_rounds`` selection rounds
  ran. ``full`` takes the whole remaining pool in its first selection round.

:func:`next_round` decides one round from where the run stands (the flow calls it after each round, so a
round that selected less than planned, e.g. in the original quota mode, re-plans the rest);
:func:`plan_rounds` applies it from the start assuming every round spends its budget, which is what the
default selection modes do while samples remain.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from progress_core.errors import ConfigError


@dataclass(frozen=True)
class RoundPlan:
    """One round: ``budget`` new samples trained from ``from_step`` to ``to_step``.

    ``kind`` is ``warmup`` (``pool`` names W1 or W2) or ``select``; ``budget`` is the samples the round
    selects, ``to_step`` where training stops if it selects all of them.
    """

    index: int
    kind: Literal["warmup", "select"]
    budget: int
    from_step: int
    to_step: int
    pool: str | None = None

    @property
    def steps(self) -> int:
        return self.to_step - self.from_step


@dataclass(frozen=True)
class ScheduleState:
    """Where a run stands before its next round, and the schedule's settings."""

    round_index: int
    step: int
    remaining: int
    final_step: int
    global_batch: int
    selection_num: int
    warmup_sizes: tuple[int, int]
    min_round_fraction: float = 0.5
    max_rounds: int | None = None
    takes_all: bool = False


def steps_for_new(n_new: int, global_batch: int) -> int:
    """Steps that train every one of ``n_new`` samples at least once: ``ceil(n_new / global_batch)``."""
    if global_batch <= 0:
        raise ConfigError(f"global batch must be positive, got {global_batch}")
    return -(-int(n_new) // int(global_batch))


def whole_batches(selection_num: int, global_batch: int) -> int:
    """SELECTION_NUM rounded down to whole global batches (at least one), so every selected sample trains."""
    return max(global_batch, selection_num // global_batch * global_batch)


def round_budget(state: ScheduleState) -> int:
    """Samples the next selection round selects (module docstring rules); 0 = the run is over."""
    gb = state.global_batch
    left = (state.final_step - state.step) * gb
    if left <= 0 or state.remaining <= 0:
        return 0
    if state.takes_all:
        return state.remaining
    per_round = whole_batches(state.selection_num, gb)
    budget = min(per_round, left)
    if 0 < left - budget < state.min_round_fraction * per_round:
        budget = left
    return min(budget, state.remaining)


def next_round(state: ScheduleState) -> RoundPlan | None:
    """The next round from ``state``, or None when the run is done (FINAL_STEP, empty pool, max_rounds)."""
    i, step, gb = state.round_index, state.step, state.global_batch
    if i < 2:
        size = min(state.warmup_sizes[i], state.remaining)
        if size <= 0:
            return None
        return RoundPlan(i, "warmup", size, step, step + steps_for_new(size, gb), pool=("w1", "w2")[i])
    if step >= state.final_step:
        return None
    if state.max_rounds is not None and i - 2 >= state.max_rounds:
        return None
    budget = round_budget(state)
    if budget <= 0:
        return None
    return RoundPlan(i, "select", budget, step, step + steps_for_new(budget, gb))


def advance(state: ScheduleState, n_new: int) -> ScheduleState:
    """The state after a round that selected and trained ``n_new`` samples."""
    return replace(
        state,
        round_index=state.round_index + 1,
        step=state.step + steps_for_new(n_new, state.global_batch),
        remaining=state.remaining - int(n_new),
    )


def warmup_sizes(fractions: tuple[float, float], pool_size: int) -> tuple[int, int]:
    """|W1| = int(f1 * N) and |W2 \\ W1| = int(f2 * N) - |W1|, the COINCIDE targets
    (``docs/algorithm.md#warm-up-pools``)."""
    w1 = int(fractions[0] * pool_size)
    return w1, max(int(fractions[1] * pool_size) - w1, 0)


def initial_state(config, pool_size: int, warmup: tuple[int, int] | None = None) -> ScheduleState:
    """The schedule state before round 0 of ``config`` (a :class:`~progress_core.run.config.RunConfig`; an
    empty SELECTION_NUM scaled to the pool, docs/algorithm.md#pool-scale)."""
    config, _ = config.sized_to_pool(pool_size)
    sizes = warmup if warmup is not None else warmup_sizes(tuple(config.warmup.fractions), pool_size)
    return ScheduleState(
        round_index=0,
        step=0,
        remaining=pool_size,
        final_step=config.final_step(pool_size),
        global_batch=config.training.global_batch_size,
        selection_num=config.selection.selection_num,
        warmup_sizes=(int(sizes[0]), int(sizes[1])),
        min_round_fraction=config.schedule.min_round_fraction,
        max_rounds=config.schedule.max_rounds,
        takes_all=config.selection.strategy == "full",
    )


def plan_from(state: ScheduleState) -> list[RoundPlan]:
    """Every round from ``state`` on, assuming each spends its budget."""
    plans = []
    while (plan := next_round(state)) is not None:
        plans.append(plan)
        state = advance(state, plan.budget)
    return plans


def plan_rounds(config, pool_size: int, warmup: tuple[int, int] | None = None) -> list[RoundPlan]:
    """The planned rounds of ``config`` on a pool of ``pool_size`` (warm-up sizes from the config's fractions
    unless given). The last plan's ``to_step`` is the training schedule's horizon."""
    return plan_from(initial_state(config, pool_size, warmup))


def horizon(plans: list[RoundPlan], fallback: int) -> int:
    """The last planned step (the cosine schedule's end), or ``fallback`` when nothing is planned."""
    return max((p.to_step for p in plans), default=fallback) or fallback


def planned_final_step(config, pool_size: int, warmup: tuple[int, int]) -> int:
    """The step the run trains to: the last planned round's end, else FINAL_STEP (the trainer's horizon)."""
    return horizon(plan_from(initial_state(config, pool_size, warmup)), config.final_step(pool_size))


def coincide_budget(final_step: int, global_batch: int, pool_size: int, warmup: tuple[int, int]) -> int:
    """Samples the ``coincide`` baseline orders at once (docs/algorithm.md#selection), at most the pool: every
    sample the run trains up to ``final_step`` (the planned last step), plus room for the warm-up samples,
    which the order, drawn from the whole pool, may contain although they are already selected."""
    return min(pool_size, final_step * global_batch + sum(warmup))
