"""Configuration of per-round selection and the round schedule (docs/algorithm.md#selection)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from progress_core.base import StrictModel


class ProgressOptions(BaseModel):
    """Knobs of the ``progress`` strategy (PROGRESS §3.3, ``docs/algorithm.md#selection``).

    The run config's ``SelectionConfig`` extends this model, so each knob is defined once. The defaults keep
    the paper's formula (relative change, T = 0.5, 90 % exploitation) but spend the whole round budget:
    quota a cluster cannot fill goes to the other improving clusters, and a round in which no cluster
    improved explores with the whole budget. ``redistribute_overflow=False`` with
    ``fallback_when_no_progress='original'`` reproduces the original scripts, which drop both.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    temperature: float = Field(0.5, gt=0, description="Softmax temperature T over the progress scores.")
    exploit_fraction: float = Field(
        0.9,
        ge=0,
        le=1,
        validation_alias=AliasChoices("exploit_fraction", "exploit_frac"),
        description=(
            "Share of the budget spent on clusters that improved; the rest is uniform exploration over the "
            "samples of all other clusters."
        ),
    )
    progress_measure: Literal["relative_change", "relative_error_reduction"] = Field(
        "relative_change",
        description=(
            "relative_change: (a_now - a_prev) / a_prev with a_prev == 0 floored at 1/probe size (original). "
            "relative_error_reduction: (a_now - a_prev) / (1 - a_prev), the error denominator floored at "
            "1/probe size when a_prev == 1."
        ),
    )
    redistribute_overflow: bool = Field(
        True,
        description=(
            "Give the quota a cluster cannot fill (capped by its remaining samples) to the other improving "
            "clusters in proportion to their probabilities, then to exploration, so the round spends its "
            "budget. False = the original: the overflow is dropped and the round selects fewer samples."
        ),
    )
    fallback_when_no_progress: Literal["original", "explore"] = Field(
        "explore",
        description=(
            "When no cluster improved: 'explore' spends the whole budget uniformly over the remaining pool; "
            "'original' selects only the exploration share (as acc_sort.py)."
        ),
    )

    allocation: Literal["paper", "damped", "balanced"] = Field(
        "paper",
        description=(
            "paper: the softmax over clusters above (PROGRESS §3.3). damped: size-aware shares with a uniform "
            "share over samples and a bounded tilt by the probe change in standard errors "
            "(progress_core/selection/allocation.py); balanced: damped's signal and tilt with every "
            "cluster's untilted share equal instead of proportional to its size; the knobs below apply to these two."
        ),
    )
    uniform_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="damped: budget share spread uniformly over samples; balanced: evenly over clusters.",
    )
    max_tilt: float = Field(3.0, ge=1, description="damped, balanced: largest weight relative to an untilted cluster.")
    progress_signal: Literal["abs_change", "gain", "abs_change_2se"] = Field(
        "abs_change",
        description="damped, balanced: |change| / SE (forgetting re-attracts budget) or the signed gain / SE, minus "
        "1 SE; abs_change_2se: |change| / SE minus 2 SE.",
    )

    @property
    def exploit_frac(self) -> float:
        return self.exploit_fraction

    def progress_options(self) -> dict:
        """Just the ``progress`` strategy's knobs (for :func:`select`), whatever model this is."""
        return {name: getattr(self, name) for name in ProgressOptions.model_fields}


OracleRule = Literal["oracle", "oracle_every_round", "oracle_clean"]
Strategy = Literal["progress", "random", "coincide", "tfs", "full", "oracle", "oracle_every_round", "oracle_clean"]
LABEL_STRATEGIES = frozenset(OracleRule.__args__)
"""Benchmark-only strategies that read the pool's labels (progress_core/selection/oracle.py), never a default."""


class SelectionConfig(ProgressOptions):
    """Per-round selection (PROGRESS §3.3, ``docs/algorithm.md#selection``): the strategy, the round size and
    the ``progress`` knobs (defined once, in :class:`progress_core.selection.config.ProgressOptions`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    strategy: Strategy = Field(
        "progress",
        description="Strategy name: progress, random, coincide, tfs, full; oracle, oracle_every_round, oracle_clean "
        "(benchmark-only, read the bundled pool's labels).",
    )
    selection_num: int | None = Field(
        None,
        ge=1,
        description="SELECTION_NUM: samples drawn per round (rounded down to whole global batches); empty = "
        "pool_scale.selection_num scaled to the pool.",
    )


class ScheduleConfig(StrictModel):
    """How far the run goes and how rounds are cut (PROGRESS §3.4, ``docs/algorithm.md#round-schedule``)."""

    final_step: int | None = Field(None, ge=1, description="FINAL_STEP; empty = budget_fraction of the pool.")
    budget_fraction: float = Field(
        0.2, gt=0, le=1, description="Share of the pool trained on when final_step is empty."
    )
    max_rounds: int | None = Field(None, ge=0, description="Stop after this many selection rounds (empty = no limit).")
    min_round_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A last round smaller than this share of selection_num is merged into the round before it "
        "(no tiny tail rounds, each paying a full probe).",
    )
