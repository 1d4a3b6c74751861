"""Per-concept statistics of a labelled pool: size, share, answer vocabulary and chance level."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from progress_core.data.manifest import ManifestFileError, read_manifest


def _answers_by_id(manifest_or_pool: Any) -> pd.DataFrame:
    if isinstance(manifest_or_pool, pa.Table):
        return manifest_or_pool.select(["id", "answer"]).to_pandas()
    if isinstance(manifest_or_pool, pd.DataFrame):
        return manifest_or_pool[["id", "answer"]]
    if isinstance(manifest_or_pool, (str, os.PathLike)):
        path = Path(manifest_or_pool)
        if path.suffix == ".parquet":
            return read_manifest(path, columns=["id", "answer"]).to_pandas()
        if not path.is_file():
            raise ManifestFileError(f"pool not found: {str(path)!r}")
        with open(path, encoding="utf-8") as f:
            manifest_or_pool = json.load(f)
    rows = list(manifest_or_pool)
    return pd.DataFrame({"id": [str(r["id"]) for r in rows], "answer": [r["conversations"][1]["value"] for r in rows]})


def pool_statistics(manifest_or_pool: Any, labels: Any) -> pd.DataFrame:
    """Per-concept table of a pool: size, share, difficulty, answer vocabulary and chance level.

    ``majority_rate`` is the accuracy of always answering the concept's most frequent answer, the floor a
    model reaches without looking at the image (the ``random`` concept stays at it). ``manifest_or_pool``
    is a manifest (path or table), a pool JSON path or a list of LLaVA rows; ``labels`` a labels.parquet
    path or DataFrame. Rows without a label are reported as concept ``unlabelled``.
    """
    answers = _answers_by_id(manifest_or_pool)
    if not isinstance(labels, pd.DataFrame):
        labels = pd.read_parquet(labels)
    merged = answers.merge(labels[["id", "concept", "family", "difficulty"]].drop_duplicates("id"), on="id", how="left")
    merged[["concept", "family", "difficulty"]] = merged[["concept", "family", "difficulty"]].fillna("unlabelled")
    grouped = merged.groupby("concept", sort=True)
    stats = pd.DataFrame(
        {
            "family": grouped["family"].first(),
            "difficulty": grouped["difficulty"].first(),
            "n": grouped.size(),
            "answer_vocab": grouped["answer"].nunique(),
            "majority_answer": grouped["answer"].agg(lambda s: s.value_counts().index[0]),
            "majority_rate": grouped["answer"].agg(lambda s: s.value_counts().iloc[0] / len(s)),
        }
    )
    stats["share"] = stats["n"] / max(len(merged), 1)
    return stats[["family", "difficulty", "n", "share", "answer_vocab", "majority_answer", "majority_rate"]]


def majority_baseline(eval_json: str | os.PathLike, labels: str | os.PathLike | pd.DataFrame) -> float:
    """Accuracy of answering each concept's most frequent first answer on the evaluation split: what a model
    reaches without looking at the image (exact match)."""
    stats = pool_statistics(eval_json, labels)
    return float((stats["majority_rate"] * stats["n"]).sum() / max(stats["n"].sum(), 1))
