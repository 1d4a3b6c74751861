"""Export to the original scripts' file names and JSON format (docs/architecture.md#file-kinds).

The sets a run keeps as ``sample_id`` Parquet files (:mod:`progress_core.selection.rounds`) written as the original
scripts' ``Top_50K.json``, ``Selected_until_*.json``, ``combined_results_internVL.json`` ..., so the original
training and probing scripts can take over at any round.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from progress_core.data.manifest import export_llava, read_manifest
from progress_core.errors import ProgressError
from progress_core.io import atomic_path, write_json
from progress_core.probe.accuracy_table import accuracy_table_to_original
from progress_core.selection.rounds import warmup_sets


class ExportError(ProgressError):
    """The inputs of the original-format export do not fit together (e.g. assignment vs manifest rows)."""


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


STEP_LIST_FILE = "step_list.txt"
SUMMARY_FILE = "export_summary.json"


COPY_ROWS = 8192
"""Rows copied per write when a file is assembled from the all-rows file."""
MAX_READ_BYTES = 64 << 20
"""A chunk of rows lying within this many bytes is read in one piece, otherwise row by row."""


def count_label(n: int) -> str:
    """A set's size as the original's file names write it: thousands as ``50K`` from 10,000 rows (LLaVA-665K's
    49,897 W1 rows give ``Top_50K``), the exact count below that (a 300-row pool's 45 give ``Top_45``)."""
    return f"{round(n / 1000)}K" if n >= 10_000 else str(int(n))


def all_rows_file_name(n_all: int) -> str:
    """``llava_665k_with_cluster_id.json`` on LLaVA-665K, ``llava_300_with_cluster_id.json`` on 300 rows."""
    return f"llava_{count_label(n_all).lower()}_with_cluster_id.json"


def warmup_file_names(n_w1: int, n_union: int, n_pool: int) -> dict[str, str]:
    """The warm-up export's file names from the real counts, the paper's names on LLaVA-665K
    (``Top_50K``, ``Top_50K_to_60K``, ``Top_60K``, ``Remaining_605K``).

    Where W1 and W1 ∪ W2 would round to the same label the exact counts are used, so no file overwrites another.
    """
    w1, union = count_label(n_w1), count_label(n_union)
    if w1 == union:
        w1, union = str(n_w1), str(n_union)
    return {
        "w1": f"Top_{w1}.json",
        "w2": f"Top_{w1}_to_{union}.json",
        "warmup": f"Top_{union}.json",
        "pool": f"Remaining_{count_label(n_pool)}.json",
    }


def _row_bytes(source, spans: np.ndarray) -> list:
    lo, hi = int(spans[:, 0].min()), int(spans[:, 1].max())
    if hi - lo <= MAX_READ_BYTES:
        source.seek(lo)
        view = memoryview(source.read(hi - lo))
        return [view[a:b] for a, b in (spans - lo).tolist()]
    out = []
    for a, b in spans.tolist():
        source.seek(a)
        out.append(source.read(b - a))
    return out


def copy_json_rows(source: Path, spans: np.ndarray, ids: np.ndarray, out_json: str | os.PathLike) -> Path:
    """Write the rows ``ids`` of the JSON list ``source`` (row ``i`` at bytes ``spans[i]``) as a JSON list.

    The bytes are what serialising the same rows writes, at the cost of a copy: the original file set
    repeats most of the pool several times (docs/architecture.md#file-kinds), and JSON encoding dominated it.
    """
    with open(source, "rb") as src, atomic_path(out_json) as tmp, open(tmp, "wb") as f:
        f.write(b"[")
        for start in range(0, ids.size, COPY_ROWS):
            rows = _row_bytes(src, spans[ids[start : start + COPY_ROWS]])
            f.write((b", " if start else b"") + b", ".join(rows))
        f.write(b"]")
    return Path(out_json)


class OriginalExporter:
    """Writes subsets of the manifest in the original's JSON format (docs/algorithm.md#warm-up-pools, docs/architecture.md#file-kinds).

    Every row carries the original LLaVA keys plus ``cluster_id`` (annotation cluster), ``dist_to_cent``
    (the similarity to the centre, which is what the original's field really holds, docs/algorithm.md#concept-clustering) and
    ``index`` (= sample_id). File names carry the real counts (:func:`warmup_file_names`), which are the
    original's names on LLaVA-665K; every file's row count is recorded in ``export_summary.json``.
    """

    def __init__(self, out_dir: str | os.PathLike, manifest, assignment) -> None:
        self.out_dir = Path(out_dir)
        self._table = manifest if isinstance(manifest, pa.Table) else None
        self._manifest_path = None if self._table is not None else Path(manifest)
        ids = self._table if self._table is not None else read_manifest(manifest, columns=["sample_id"])
        n = self._n = ids.num_rows
        sid = ids.column("sample_id").to_numpy()
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
        self._all_rows: tuple[Path, np.ndarray] | None = None

    @property
    def n_samples(self) -> int:
        return self._n

    @property
    def manifest(self) -> pa.Table:
        """The whole manifest table, read on first use (the byte-copy path after :meth:`write_all` never needs it)."""
        if self._table is None:
            self._table = read_manifest(self._manifest_path)
        return self._table

    def write_rows(self, ids, relative_path: str) -> Path:
        """Write the rows of ``ids`` (in that order) to ``out_dir/relative_path`` atomically.

        After :meth:`write_all` every row is serialised once, in the all-rows file; later files copy their
        rows' bytes from there (the same bytes, since a row's annotation does not depend on the file).
        """
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_samples):
            raise ExportError(f"{relative_path}: sample_id outside 0..{self.n_samples - 1}")
        if self._all_rows is None:
            path = self._serialise(ids, relative_path)
        else:
            path = copy_json_rows(*self._all_rows, ids, self.out_dir / relative_path)
        self.counts[relative_path] = int(ids.size)
        return path

    def _serialise(self, ids: np.ndarray, relative_path: str) -> Path:
        extra = {"cluster_id": self.cluster_id[ids], "dist_to_cent": self.dist_to_cent[ids], "index": ids}
        return export_llava(self.manifest.take(pa.array(ids)), self.out_dir / relative_path, extra_fields=extra)

    def write_all(self) -> Path:
        """``llava_665k_with_cluster_id.json``: every row, annotated (COINCIDE_Indices_to_Accuracy.py).

        Given a manifest file, its rows are streamed batch by batch, so the whole table is never in memory.
        """
        spans = np.empty((self.n_samples, 2), dtype=np.int64)
        source = self._table if self._table is not None else self._manifest_path
        extra = {"cluster_id": self.cluster_id, "dist_to_cent": self.dist_to_cent, "index": np.arange(self.n_samples)}
        name = all_rows_file_name(self.n_samples)
        path = export_llava(source, self.out_dir / name, extra_fields=extra, row_spans=spans)
        self.counts[name] = self.n_samples
        self._all_rows = (path, spans)
        return path

    def write_warmup(self, w1, w2, remaining: bool = True) -> None:
        """``Top_50K.json`` (W1), ``Top_50K_to_60K.json`` (W2 \\ W1), ``Top_60K.json`` (W1 ∪ W2) and, with
        ``remaining``, ``Remaining_605K.json`` (the pool left for selection) on LLaVA-665K, named by the real counts
        elsewhere (:func:`warmup_file_names`), docs/algorithm.md#warm-up-pools."""
        w2_only, union, pool = warmup_sets(self.n_samples, w1, w2)
        names = warmup_file_names(len(w1), union.size, pool.size)
        self.write_rows(w1, names["w1"])
        self.write_rows(w2_only, names["w2"])
        self.write_rows(union, names["warmup"])
        if remaining:
            self.write_rows(pool, names["pool"])

    def write_round(self, r: RoundExport, remaining: bool = True) -> None:
        """One round's files: ``Selected_until_{step}.json``, ``Remaining_after_{step}.json`` (with ``remaining``),
        ``selection_step_{step}/fastest_acc_data_{num}.json`` and
        ``selection_step_{step}/fastest_selected_cluster_accuracies_{num}.json`` ({cid: probability})."""
        self.write_rows(r.selected_until, f"Selected_until_{r.step}.json")
        if remaining:
            self.write_rows(r.remaining_after, f"Remaining_after_{r.step}.json")
        self.write_rows(r.new_ids, f"selection_step_{r.step}/fastest_acc_data_{r.num}.json")
        probs = {str(int(c)): float(p) for c, p in sorted(r.probabilities.items(), key=lambda kv: (-kv[1], kv[0]))}
        name = f"selection_step_{r.step}/fastest_selected_cluster_accuracies_{r.num}.json"
        write_json(probs, self.out_dir / name)
        self.counts[name] = len(probs)

    def write_accuracy(self, step: int, table: pd.DataFrame) -> Path:
        """``selection_step_{step}/combined_results_internVL.json`` from an accuracy table (docs/algorithm.md#probe-and-judge)."""
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
    remaining: Literal["every_round", "last"] = "every_round",
) -> dict[str, int]:
    """Export a run (warm-up pools, rounds, step list, accuracy tables) to the original's files.

    Returns ``{relative file name: rows}``. The per-round pieces are methods of
    :class:`OriginalExporter`, so the orchestration can also export round by round. ``remaining="last"`` writes
    the remaining pool only after the last set (``Remaining_after_<last step>.json``, or ``Remaining_605K.json``
    without rounds): each such file is nearly the whole pool, and the original scripts continue from the last.
    """
    if remaining not in ("every_round", "last"):
        raise ExportError(f"remaining must be every_round or last, got {remaining!r}")
    every = remaining == "every_round"
    exporter = OriginalExporter(out_dir, manifest, assignment)
    exporter.write_all()
    exporter.write_warmup(w1, w2, remaining=every or not rounds)
    for k, r in enumerate(rounds):
        exporter.write_round(r, remaining=every or k == len(rounds) - 1)
    for step, table in sorted((accuracy_tables or {}).items()):
        exporter.write_accuracy(step, table)
    if step_list is not None:
        exporter.write_step_list(step_list)
    exporter.write_summary()
    return dict(exporter.counts)
