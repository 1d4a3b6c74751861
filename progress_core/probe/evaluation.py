"""Held-out evaluation per concept: how a finished run's model does on the evaluation split.

Selection never reads concept labels; they exist to judge the outcome. Comparing strategies at equal
budgets (``docs/algorithm.md#selection``) means training each, then answering the same evaluation split with
each final checkpoint. The probe machinery of PROGRESS §3.2 is reused with the concept as the "cluster".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from progress_core.errors import ProgressError
from progress_core.probe.accuracy import probe
from progress_core.probe.config import ProbeConfig
from progress_core.probe.judges import make_judge


class EvaluationError(ProgressError):
    """The evaluation split or its labels are missing or inconsistent."""


def evaluate_concepts(
    checkpoint: str | os.PathLike,
    eval_json: str | os.PathLike,
    image_root: str | os.PathLike | None,
    labels: str | os.PathLike | pd.DataFrame,
    cfg: ProbeConfig,
    progress: bool = True,
) -> pd.DataFrame:
    """Accuracy per concept of ``checkpoint`` on every row of ``eval_json`` (first turn, the probe's judge).

    Returns one row per concept: concept, family, difficulty, n, correct, unjudged, accuracy.
    """
    path = Path(eval_json)
    if not path.is_file():
        raise EvaluationError(f"evaluation split not found: {path}")
    rows = json.loads(path.read_text())
    if not rows:
        raise EvaluationError(f"evaluation split is empty: {path}")
    label_table = labels if isinstance(labels, pd.DataFrame) else pd.read_parquet(labels)
    ids = pd.DataFrame({"id": [str(r["id"]) for r in rows]})
    merged = ids.merge(
        label_table.drop_duplicates("id")[["id", "concept", "family", "difficulty"]], on="id", how="left"
    )
    if merged["concept"].isna().any():
        missing = merged.loc[merged["concept"].isna(), "id"].iloc[0]
        raise EvaluationError(f"evaluation row id {missing!r} has no label")
    codes, concepts = pd.factorize(merged["concept"], sort=True)
    table = pa.table(
        {
            "sample_id": pa.array(np.arange(len(rows), dtype=np.int64)),
            "cluster_id": pa.array(codes.astype(np.int64)),
            "conversations": pa.array([json.dumps(r["conversations"]) for r in rows]),
            "image": pa.array([r.get("image") for r in rows], type=pa.string()),
        }
    )
    result = probe(checkpoint, table, image_root, make_judge(cfg.judge), cfg, progress=progress)
    per = result.per_cluster.copy()
    per["concept"] = np.asarray(concepts)[per["cluster_id"].to_numpy()]
    info = merged.drop_duplicates("concept").set_index("concept")[["family", "difficulty"]]
    per = per.join(info, on="concept")
    return per[["concept", "family", "difficulty", "n", "correct", "unjudged", "accuracy"]].reset_index(drop=True)
