"""Per-cluster accuracy tables: the learning-progress signal of PROGRESS (docs/algorithm.md#probe-and-judge).

One row per annotation cluster probed at a step: ``cluster_id:int64, n:int64, correct:int64,
unjudged:int64, accuracy:float64`` with ``accuracy = correct / (n - unjudged)`` (NaN when nothing in
the cluster could be judged). ``n`` is the probe size of the cluster; ``unjudged`` counts samples whose
verdict is missing (judge failure), which the original scripts count as incorrect (docs/algorithm.md#differences-from-the-original-scripts) and we keep
out of the denominator instead.

The original scripts store the same information as ``combined_results_internVL.json`` /
``1_0_internVL.json`` (``{"cluster_accuracies": {"<cid>": {"correct", "total", "accuracy"}}, ...}``,
string keys); :func:`read_accuracy_table` reads both, so a judge run with the original scripts plugs in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from progress_core.errors import ProgressError
from progress_core.io import write_json, write_parquet

ACCURACY_SCHEMA = pa.schema(
    [
        pa.field("cluster_id", pa.int64(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("correct", pa.int64(), nullable=False),
        pa.field("unjudged", pa.int64(), nullable=False),
        pa.field("accuracy", pa.float64()),
    ]
)
"""Parquet schema of an accuracy table (docs/architecture.md#file-kinds)."""

COLUMNS = tuple(ACCURACY_SCHEMA.names)


class AccuracyTableError(ProgressError):
    """An accuracy table (Parquet or the original's judge JSON) is missing, malformed or inconsistent."""


def empty_accuracy_table() -> pd.DataFrame:
    """An accuracy table with no cluster (nothing probed)."""
    return ACCURACY_SCHEMA.empty_table().to_pandas()


def validate_accuracy_table(table: pd.DataFrame, source: str = "accuracy table") -> pd.DataFrame:
    """Check an accuracy table and return it with the contract's column order and dtypes, sorted by cluster.

    Raises :class:`AccuracyTableError` naming the first offending row: missing columns, duplicate or
    negative cluster ids, ``correct + unjudged > n``, or an accuracy outside [0, 1].
    """
    if not isinstance(table, pd.DataFrame):
        raise AccuracyTableError(f"{source}: expected a pandas DataFrame, got {type(table).__name__}")
    df = table.copy()
    if "unjudged" not in df.columns and {"cluster_id", "n", "correct"} <= set(df.columns):
        df["unjudged"] = 0
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise AccuracyTableError(f"{source}: missing columns {missing} (need {list(COLUMNS)})")
    df = df[list(COLUMNS)]
    for col in ("cluster_id", "n", "correct", "unjudged"):
        if pd.api.types.is_integer_dtype(df[col].dtype):
            df[col] = df[col].astype(np.int64)
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy() | (values.to_numpy(dtype=float) % 1 != 0))
        if bad.size:
            raise AccuracyTableError(f"{source}: row {int(bad[0])}: {col}={df[col].iloc[bad[0]]!r} is not an integer")
        df[col] = values.astype(np.int64)
    df["accuracy"] = pd.to_numeric(df["accuracy"], errors="coerce").astype(np.float64)
    cid = df["cluster_id"].to_numpy()
    n = df["n"].to_numpy()
    correct = df["correct"].to_numpy()
    unjudged = df["unjudged"].to_numpy()
    acc = df["accuracy"].to_numpy()
    checks = [
        (cid < 0, "cluster_id is negative"),
        ((n < 0) | (correct < 0) | (unjudged < 0), "n/correct/unjudged is negative"),
        (correct + unjudged > n, "correct + unjudged exceeds n"),
        (~np.isnan(acc) & ((acc < 0) | (acc > 1)), "accuracy is outside [0, 1]"),
        (np.isnan(acc) & (n - unjudged > 0), "accuracy is missing although samples were judged"),
    ]
    for mask, what in checks:
        bad = np.flatnonzero(mask)
        if bad.size:
            i = int(bad[0])
            raise AccuracyTableError(f"{source}: row {i} (cluster {int(cid[i])}): {what}")
    dup = pd.Series(cid).duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise AccuracyTableError(f"{source}: row {i}: cluster_id {int(cid[i])} appears more than once")
    return df.sort_values("cluster_id", kind="stable").reset_index(drop=True)


def accuracy_from_verdicts(
    cluster_ids: Sequence[int] | np.ndarray, verdicts: Sequence[Any] | np.ndarray
) -> pd.DataFrame:
    """Per-cluster accuracy from one verdict per probed sample (docs/algorithm.md#probe-and-judge: correct/total per cluster).

    ``verdicts[i]`` is 1/True (correct), 0/False (incorrect) or None/NaN (unjudged: counted in ``n`` and
    ``unjudged``, not in the accuracy's denominator).
    """
    cids = np.asarray(cluster_ids)
    if cids.ndim != 1 or (cids.size and not np.issubdtype(cids.dtype, np.integer)):
        raise AccuracyTableError("cluster_ids must be a 1-D integer array")
    v = pd.to_numeric(
        pd.Series(list(verdicts) if not isinstance(verdicts, np.ndarray) else verdicts, dtype=object), errors="coerce"
    ).to_numpy(dtype=np.float64)
    if v.shape != cids.shape:
        raise AccuracyTableError(f"{len(v)} verdicts for {len(cids)} cluster ids")
    judged = ~np.isnan(v)
    bad = np.flatnonzero(judged & (v != 0) & (v != 1))
    if bad.size:
        raise AccuracyTableError(f"verdict {int(bad[0])}: {v[bad[0]]!r} is not 0, 1 or None")
    if cids.size and cids.min() < 0:
        raise AccuracyTableError(f"cluster id {int(cids.min())} is negative")
    if cids.size == 0:
        return empty_accuracy_table()
    clusters, inverse = np.unique(cids, return_inverse=True)
    n = np.bincount(inverse, minlength=clusters.size).astype(np.int64)
    correct = np.bincount(inverse, weights=np.where(judged, v, 0.0), minlength=clusters.size).astype(np.int64)
    unjudged = np.bincount(inverse, weights=(~judged).astype(np.float64), minlength=clusters.size).astype(np.int64)
    return _table_of_counts(clusters, n, correct, unjudged)


def _table_of_counts(clusters: np.ndarray, n: np.ndarray, correct: np.ndarray, unjudged: np.ndarray) -> pd.DataFrame:
    denom = n - unjudged
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(denom > 0, correct / np.maximum(denom, 1), np.nan)
    return pd.DataFrame(
        {
            "cluster_id": clusters.astype(np.int64),
            "n": n.astype(np.int64),
            "correct": correct.astype(np.int64),
            "unjudged": unjudged.astype(np.int64),
            "accuracy": acc.astype(np.float64),
        }
    )


def merge_accuracy_tables(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One table from the tables of disjoint parts of one probe (e.g. one per rank): per cluster the sums of
    ``n``, ``correct`` and ``unjudged`` and the accuracy of those sums, as the original's
    ``combine_results.py`` merges its per-GPU judge files (docs/algorithm.md#probe-and-judge)."""
    parts = [validate_accuracy_table(t, f"accuracy table {i}") for i, t in enumerate(tables)]
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_accuracy_table()
    cids = np.concatenate([p["cluster_id"].to_numpy() for p in parts])
    clusters, inverse = np.unique(cids, return_inverse=True)
    sums = {
        col: np.bincount(inverse, weights=np.concatenate([p[col].to_numpy() for p in parts]), minlength=clusters.size)
        for col in ("n", "correct", "unjudged")
    }
    return _table_of_counts(clusters, np.rint(sums["n"]), np.rint(sums["correct"]), np.rint(sums["unjudged"]))


def accuracy_table_from_original(obj: Any, source: str = "judge JSON") -> pd.DataFrame:
    """Convert the original's ``{"cluster_accuracies": {"<cid>": {"correct", "total", "accuracy"}}}``."""
    if not isinstance(obj, dict) or not isinstance(obj.get("cluster_accuracies"), dict):
        raise AccuracyTableError(
            f"{source}: expected an object with a 'cluster_accuracies' object (docs/algorithm.md#probe-and-judge)"
        )
    rows = []
    for key, entry in obj["cluster_accuracies"].items():
        try:
            cid = int(key)
        except (TypeError, ValueError):
            raise AccuracyTableError(f"{source}: cluster key {key!r} is not an integer") from None
        if not isinstance(entry, dict) or not {"correct", "total", "accuracy"} <= set(entry):
            raise AccuracyTableError(f"{source}: cluster {key!r} needs 'correct', 'total' and 'accuracy'")
        rows.append((cid, entry["total"], entry["correct"], 0, entry["accuracy"]))
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    if df.empty:
        return empty_accuracy_table()
    return validate_accuracy_table(df, source)


def accuracy_table_to_original(table: pd.DataFrame) -> dict:
    """The original's judge JSON for ``table`` (``combined_results_internVL.json``, sorted by accuracy desc).

    Unjudged samples are counted as incorrect in ``total``, as the original judge does (docs/algorithm.md#differences-from-the-original-scripts).
    """
    df = validate_accuracy_table(table)
    df = df.sort_values(["accuracy", "cluster_id"], ascending=[False, True], kind="stable")
    clusters = {}
    for cid, n, correct, _acc in zip(
        df["cluster_id"].tolist(), df["n"].tolist(), df["correct"].tolist(), df["accuracy"].tolist()
    ):
        clusters[str(cid)] = {"correct": int(correct), "total": int(n), "accuracy": (correct / n) if n else 0.0}
    total = int(df["n"].sum())
    correct_total = int(df["correct"].sum())
    return {
        "cluster_accuracies": clusters,
        "total_samples": total,
        "total_cluster_samples": total,
        "total_correct_samples": correct_total,
        "overall_accuracy": correct_total / total if total else 0.0,
    }


def read_accuracy_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read an accuracy table from our Parquet or the original's judge JSON (docs/algorithm.md#probe-and-judge), validated."""
    p = Path(path)
    if not p.is_file():
        raise AccuracyTableError(f"accuracy table not found: {str(p)!r}")
    if p.suffix.lower() == ".json":
        try:
            with open(p, encoding="utf-8") as f:
                obj = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise AccuracyTableError(f"{str(p)!r} is not valid JSON: {exc}") from None
        return accuracy_table_from_original(obj, source=str(p))
    try:
        df = pq.read_table(p).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        raise AccuracyTableError(f"{str(p)!r} is neither Parquet nor the original's judge JSON: {exc}") from None
    return validate_accuracy_table(df, source=str(p))


def write_accuracy_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``table`` atomically: Parquet with :data:`ACCURACY_SCHEMA`, or the original's JSON for ``.json``."""
    df = validate_accuracy_table(table)
    if Path(path).suffix.lower() == ".json":
        return write_json(accuracy_table_to_original(df), path)
    return write_parquet(pa.Table.from_pandas(df, schema=ACCURACY_SCHEMA, preserve_index=False), path)


def accuracy_se(table: pd.DataFrame) -> pd.Series:
    """Binomial standard error ``sqrt(a (1 - a) / (n - unjudged))`` of each cluster's probe accuracy, by
    cluster id (docs/algorithm.md#probe-noise): NaN where nothing was judged, 0 where every judged answer
    agreed (the plug-in estimate, not a bound)."""
    df = validate_accuracy_table(table)
    judged = (df["n"] - df["unjudged"]).to_numpy(dtype=np.float64)
    acc = df["accuracy"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.where(judged > 0, np.sqrt(acc * (1 - acc) / np.maximum(judged, 1)), np.nan)
    return pd.Series(se, index=pd.Index(df["cluster_id"].to_numpy(), name="cluster_id"), name="se")


def probe_standard_errors(acc_prev: pd.DataFrame | None, acc_now: pd.DataFrame | None) -> pd.DataFrame:
    """Per cluster of either probe: ``se_prev``, ``se_now`` (:func:`accuracy_se`) and ``se_change``, the
    standard error of ``a_now - a_prev`` as two independent binomial draws, ``sqrt(se_prev² + se_now²)``
    (NaN unless the cluster has both). Indexed by cluster id, sorted."""
    prev = accuracy_se(acc_prev) if acc_prev is not None else pd.Series(dtype=np.float64)
    now = accuracy_se(acc_now) if acc_now is not None else pd.Series(dtype=np.float64)
    index = prev.index.union(now.index).astype(np.int64).rename("cluster_id")
    out = pd.DataFrame({"se_prev": prev.reindex(index), "se_now": now.reindex(index)}, index=index)
    out["se_change"] = np.sqrt(out["se_prev"] ** 2 + out["se_now"] ** 2)
    return out.astype(np.float64)
