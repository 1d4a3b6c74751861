"""Round bookkeeping of the PROGRESS loop: the sample-id sets of every round (docs/algorithm.md#round-schedule).

Each round's sets are Parquet files of ``sample_id:int64`` in the run directory, named by step and round
so a person can open any round with pandas/duckdb/polars:

- ``new_<round>.parquet``: samples selected in round ``round`` (the original ``fastest_acc_data_7500.json``),
- ``selected_until_<step>.parquet``: everything selected so far, warm-up pools included,
- ``remaining_after_<step>.parquet``: the pool minus everything selected so far,

where ``step`` is the training step at which the round's selection was made (the original's ``cur``).
They are computed with set operations on ``sample_id`` instead of the original's O(N·M) list difference
of dicts (docs/algorithm.md#differences-from-the-original-scripts). :func:`progress_core.reporting.export.export_original` writes the same sets under the original
names and JSON format, so the original training/probing scripts can take over at any round.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from progress_core.errors import ConfigError, ProgressError
from progress_core.id_sets import write_ids


class RoundInvariantError(ProgressError):
    """A round's sets break an invariant (new ids not in the pool, overlap, sizes that do not add up)."""


def steps_for(cumulative_samples: int, global_batch: int) -> int:
    """Training step reached after ``cumulative_samples`` samples (docs/algorithm.md#training, docs/algorithm.md#round-schedule: step = samples // batch)."""
    if global_batch <= 0:
        raise ConfigError(f"global batch must be positive, got {global_batch}")
    if cumulative_samples < 0:
        raise ConfigError(f"cumulative samples must be >= 0, got {cumulative_samples}")
    return int(cumulative_samples) // int(global_batch)


def next_step(step: int, n_new: int, global_batch: int) -> int:
    """Stop step of the next round: ``step + n_new // global_batch`` (acc_sort.py's step_list append)."""
    return int(step) + steps_for(n_new, global_batch)


@dataclass(frozen=True)
class RoundFiles:
    """Names of a run's per-round sample-id files."""

    run_dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir))

    def selected_until(self, step: int) -> Path:
        return self.run_dir / f"selected_until_{int(step)}.parquet"

    def remaining_after(self, step: int) -> Path:
        return self.run_dir / f"remaining_after_{int(step)}.parquet"

    def new(self, round_index: int) -> Path:
        return self.run_dir / f"new_{int(round_index)}.parquet"


def _first_duplicate(ids: np.ndarray, universe: int) -> int | None:
    if ids.size < 2:
        return None
    counts = np.bincount(ids, minlength=universe)
    return int(np.argmax(counts)) if counts.max() > 1 else None


def apply_round(new_ids, selected_before, remaining_before) -> tuple[np.ndarray, np.ndarray]:
    """``(selected_before + new, remaining_before - new)`` as sample-id arrays, order kept, invariants checked.

    Invariants (else :class:`RoundInvariantError`): ids are non-negative and unique in each input,
    new ⊆ remaining_before, selected_before ∩ remaining_before = ∅, and the sizes add up. Membership uses
    boolean masks over the sample_id range (O(N), no sort).
    """
    new = np.asarray(new_ids, dtype=np.int64)
    sel = np.asarray(selected_before, dtype=np.int64)
    rem = np.asarray(remaining_before, dtype=np.int64)
    arrays = (("new", new), ("selected_before", sel), ("remaining_before", rem))
    for name, arr in arrays:
        if arr.ndim != 1:
            raise RoundInvariantError(f"{name} must be 1-D, got shape {arr.shape}")
        if arr.size and arr.min() < 0:
            raise RoundInvariantError(f"{name}: sample_id {int(arr.min())} is negative")
    universe = max((int(a.max()) + 1 for _, a in arrays if a.size), default=0)
    for name, arr in arrays:
        dup = _first_duplicate(arr, universe)
        if dup is not None:
            raise RoundInvariantError(f"{name}: sample_id {dup} appears more than once")
    in_remaining = np.zeros(universe, dtype=bool)
    in_remaining[rem] = True
    in_pool = in_remaining[new]
    if not in_pool.all():
        raise RoundInvariantError(
            f"new: sample_id {int(new[~in_pool][0])} is not in the remaining pool ({int((~in_pool).sum())} such ids)"
        )
    overlap = in_remaining[sel]
    if overlap.any():
        raise RoundInvariantError(
            f"sample_id {int(sel[overlap][0])} is both selected and remaining ({int(overlap.sum())} such ids)"
        )
    is_new = np.zeros(universe, dtype=bool)
    is_new[new] = True
    selected_until = np.concatenate([sel, new])
    remaining_after = rem[~is_new[rem]]
    if selected_until.size != sel.size + new.size or remaining_after.size != rem.size - new.size:
        raise RoundInvariantError("round sizes do not add up")
    return selected_until, remaining_after


def commit_round(
    run_dir: str | os.PathLike, round_index: int, step: int, new_ids, selected_before, remaining_before
) -> tuple[np.ndarray, np.ndarray]:
    """Apply a round's selection and write ``new_<round>``, ``remaining_after_<step>`` and
    ``selected_until_<step>`` (in that order, each atomically, so ``selected_until`` marks a committed
    round for resume). Returns ``(selected_until, remaining_after)``."""
    selected_until, remaining_after = apply_round(new_ids, selected_before, remaining_before)
    files = RoundFiles(Path(run_dir))
    write_ids(np.asarray(new_ids, dtype=np.int64), files.new(round_index))
    write_ids(remaining_after, files.remaining_after(step))
    write_ids(selected_until, files.selected_until(step))
    return selected_until, remaining_after


def warmup_sets(n_samples: int, w1, w2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(W2 \\ W1, W1 ∪ W2, all \\ (W1 ∪ W2))`` for the original's ``Top_50K_to_60K``, ``Top_60K`` and
    ``Remaining_605K`` (docs/algorithm.md#warm-up-pools); W1 ∪ W2 keeps W1's order then W2's new ids, the remaining pool is in
    sample_id order."""
    w1 = np.asarray(w1, dtype=np.int64)
    w2 = np.asarray(w2, dtype=np.int64)
    for name, arr in (("W1", w1), ("W2", w2)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_samples):
            raise RoundInvariantError(f"{name}: sample_id outside 0..{n_samples - 1}")
        dup = _first_duplicate(arr, n_samples)
        if dup is not None:
            raise RoundInvariantError(f"{name}: sample_id {dup} appears more than once")
    w2_only = w2[~np.isin(w2, w1)]
    union = np.concatenate([w1, w2_only])
    mask = np.ones(n_samples, dtype=bool)
    mask[union] = False
    return w2_only, union, np.flatnonzero(mask).astype(np.int64)
