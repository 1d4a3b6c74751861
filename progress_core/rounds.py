"""Round bookkeeping of the PROGRESS loop and export to the original scripts' files (docs/algorithm.md#round-schedule, docs/architecture.md#file-kinds).

Each round's sets are Parquet files of ``sample_id:int64`` in the run directory, named by step and round
so a person can open any round with pandas/duckdb/polars:

- ``new_<round>.parquet``: samples selected in round ``round`` (the original ``fastest_acc_data_7500.json``),
- ``selected_until_<step>.parquet``: everything selected so far, warm-up pools included,
- ``remaining_after_<step>.parquet``: the pool minus everything selected so far,

where ``step`` is the training step at which the round's selection was made (the original's ``cur``).
They are computed with set operations on ``sample_id`` instead of the original's O(N·M) list difference
of dicts (docs/algorithm.md#differences-from-the-original-scripts). :func:`export_original` writes the same sets under the original names and JSON
format, so the original training/probing scripts can take over at any round.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from progress_core.errors import ConfigError, ProgressError
from progress_core.io import atomic_path, parquet_schema, write_json, write_parquet


class RoundInvariantError(ProgressError):
    """A round's sets break an invariant (new ids not in the pool, overlap, sizes that do not add up)."""


class IdSetFileError(ProgressError):
    """A sample-id Parquet file is missing or has no ``sample_id`` integer column."""


class ExportError(ProgressError):
    """The inputs of the original-format export do not fit together (e.g. assignment vs manifest rows)."""


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


def write_ids(ids: np.ndarray, path: str | os.PathLike, extra: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write a sample-id set as Parquet (``sample_id:int64`` plus optional columns), atomically."""
    columns = {"sample_id": pa.array(np.asarray(ids, dtype=np.int64), type=pa.int64())}
    for name, values in (extra or {}).items():
        columns[name] = pa.array(np.asarray(values))
    return write_parquet(pa.table(columns), path)


def read_ids(path: str | os.PathLike) -> np.ndarray:
    """Read the ``sample_id`` column of a sample-id Parquet file, in file order."""
    p = Path(path)
    schema = parquet_schema(p, IdSetFileError, "sample-id file")
    if "sample_id" not in schema.names or not pa.types.is_integer(schema.field("sample_id").type):
        raise IdSetFileError(f"{str(p)!r} has no integer 'sample_id' column (columns: {schema.names})")
    col = pq.read_table(p, columns=["sample_id"]).column("sample_id")
    if col.null_count:
        raise IdSetFileError(f"{str(p)!r}: sample_id has {col.null_count} null values")
    return col.to_numpy().astype(np.int64, copy=False)


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


@dataclass
class RoundExport:
    """One selection round as the original files see it (docs/architecture.md#file-kinds).

    ``step``: step at which the selection was made; ``new_ids``: the selection (``fastest_acc_data``);
    ``probabilities``: ``{cluster_id: softmax probability}``; ``selected_until``/``remaining_after``: the
    sets after the round; ``num``: the selection budget used in the file names (the original's 7500).
    """

    step: int
    new_ids: np.ndarray
    selected_until: np.ndarray
    remaining_after: np.ndarray
    num: int
    probabilities: Mapping[int, float] = field(default_factory=dict)


ALL_ROWS_FILE = "llava_665k_with_cluster_id.json"
W1_FILE = "Top_50K.json"
W2_FILE = "Top_50K_to_60K.json"
WARMUP_FILE = "Top_60K.json"
POOL_FILE = "Remaining_605K.json"
STEP_LIST_FILE = "step_list.txt"
SUMMARY_FILE = "export_summary.json"


class OriginalExporter:
    """Writes subsets of the manifest in the original's JSON format (docs/algorithm.md#warm-up-pools, docs/architecture.md#file-kinds).

    Every row carries the original LLaVA keys plus ``cluster_id`` (annotation cluster), ``dist_to_cent``
    (the similarity to the centre, which is what the original's field really holds, docs/algorithm.md#concept-clustering) and
    ``index`` (= sample_id). File names are the original's even when the sizes differ on a small pool;
    the actual counts are recorded in ``export_summary.json``.
    """

    def __init__(self, out_dir: str | os.PathLike, manifest, assignment) -> None:
        from progress_core.manifest import read_manifest

        self.out_dir = Path(out_dir)
        self.manifest = manifest if isinstance(manifest, pa.Table) else read_manifest(manifest)
        n = self.manifest.num_rows
        sid = self.manifest.column("sample_id").to_numpy()
        if not np.array_equal(sid, np.arange(n)):
            raise ExportError("manifest sample_id is not dense 0..N-1 in row order")
        if isinstance(assignment, (str, os.PathLike)):
            assignment = pq.read_table(assignment)
        if isinstance(assignment, pa.Table):
            assignment = assignment.to_pandas()
        missing = [c for c in ("sample_id", "cluster_id", "similarity") if c not in assignment.columns]
        if missing:
            raise ExportError(f"cluster assignment is missing columns {missing}")
        a = assignment.sort_values("sample_id", kind="stable")
        if not np.array_equal(a["sample_id"].to_numpy(), np.arange(n)):
            raise ExportError(f"cluster assignment does not cover the manifest's {n} sample_ids exactly once")
        self.cluster_id = a["cluster_id"].to_numpy().astype(np.int64)
        self.dist_to_cent = a["similarity"].to_numpy().astype(np.float64)
        self.counts: dict[str, int] = {}

    @property
    def n_samples(self) -> int:
        return self.manifest.num_rows

    def write_rows(self, ids, relative_path: str) -> Path:
        """Write the rows of ``ids`` (in that order) to ``out_dir/relative_path`` atomically."""
        from progress_core.manifest import export_llava

        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_samples):
            raise ExportError(f"{relative_path}: sample_id outside 0..{self.n_samples - 1}")
        extra = {"cluster_id": self.cluster_id[ids], "dist_to_cent": self.dist_to_cent[ids], "index": ids}
        path = export_llava(self.manifest.take(pa.array(ids)), self.out_dir / relative_path, extra_fields=extra)
        self.counts[relative_path] = int(ids.size)
        return path

    def write_all(self) -> Path:
        """``llava_665k_with_cluster_id.json``: every row, annotated (COINCIDE_Indices_to_Accuracy.py)."""
        return self.write_rows(np.arange(self.n_samples), ALL_ROWS_FILE)

    def write_warmup(self, w1, w2) -> None:
        """``Top_50K.json`` (W1), ``Top_50K_to_60K.json`` (W2 \\ W1), ``Top_60K.json`` (W1 ∪ W2) and
        ``Remaining_605K.json`` (the pool left for selection), docs/algorithm.md#warm-up-pools."""
        w2_only, union, pool = warmup_sets(self.n_samples, w1, w2)
        self.write_rows(w1, W1_FILE)
        self.write_rows(w2_only, W2_FILE)
        self.write_rows(union, WARMUP_FILE)
        self.write_rows(pool, POOL_FILE)

    def write_round(self, r: RoundExport) -> None:
        """One round's files: ``Selected_until_{step}.json``, ``Remaining_after_{step}.json``,
        ``selection_step_{step}/fastest_acc_data_{num}.json`` and
        ``selection_step_{step}/fastest_selected_cluster_accuracies_{num}.json`` ({cid: probability})."""
        self.write_rows(r.selected_until, f"Selected_until_{r.step}.json")
        self.write_rows(r.remaining_after, f"Remaining_after_{r.step}.json")
        self.write_rows(r.new_ids, f"selection_step_{r.step}/fastest_acc_data_{r.num}.json")
        probs = {str(int(c)): float(p) for c, p in sorted(r.probabilities.items(), key=lambda kv: (-kv[1], kv[0]))}
        name = f"selection_step_{r.step}/fastest_selected_cluster_accuracies_{r.num}.json"
        write_json(probs, self.out_dir / name)
        self.counts[name] = len(probs)

    def write_accuracy(self, step: int, table: pd.DataFrame) -> Path:
        """``selection_step_{step}/combined_results_internVL.json`` from an accuracy table (docs/algorithm.md#probe-and-judge)."""
        from progress_core.accuracy_table import accuracy_table_to_original

        name = f"selection_step_{int(step)}/combined_results_internVL.json"
        obj = accuracy_table_to_original(table)
        self.counts[name] = len(obj["cluster_accuracies"])
        return write_json(obj, self.out_dir / name)

    def write_step_list(self, steps: Sequence[int]) -> Path:
        """``step_list.txt``: stop steps one per line, no trailing newline (docs/algorithm.md#round-schedule)."""
        path = self.out_dir / STEP_LIST_FILE
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(str(int(s)) for s in steps), encoding="utf-8")
        self.counts[STEP_LIST_FILE] = len(steps)
        return path

    def write_summary(self, **info) -> Path:
        """``export_summary.json``: rows per written file (the original names promise 50K/60K/605K/7500;
        a scaled-down pool has other sizes) plus ``info``."""
        return write_json(
            {"n_samples": self.n_samples, "rows_per_file": dict(sorted(self.counts.items())), **info},
            self.out_dir / SUMMARY_FILE,
            indent=2,
        )


def export_original(
    out_dir: str | os.PathLike,
    manifest,
    assignment,
    w1,
    w2,
    rounds: Sequence[RoundExport] = (),
    step_list: Sequence[int] | None = None,
    accuracy_tables: Mapping[int, pd.DataFrame] | None = None,
) -> dict[str, int]:
    """Export a run (warm-up pools, rounds, step list, accuracy tables) to the original's files.

    Returns ``{relative file name: rows}``. The per-round pieces are methods of
    :class:`OriginalExporter`, so the orchestration can also export round by round.
    """
    exporter = OriginalExporter(out_dir, manifest, assignment)
    exporter.write_all()
    exporter.write_warmup(w1, w2)
    for r in rounds:
        exporter.write_round(r)
    for step, table in sorted((accuracy_tables or {}).items()):
        exporter.write_accuracy(step, table)
    if step_list is not None:
        exporter.write_step_list(step_list)
    exporter.write_summary()
    return dict(exporter.counts)
