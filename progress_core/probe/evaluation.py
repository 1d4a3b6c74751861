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
from progress_core.io import write_json, write_parquet
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


def concept_of_row(row: dict) -> str:
    """Concept of a row of a pool without labels: the image's top-level folder (the manifest's ``source``),
    ``text`` for rows without an image."""
    image = row.get("image")
    if not image:
        return "text"
    parts = Path(str(image)).parts
    return parts[0] if len(parts) > 1 else "images"


def _labels_frame(rows: list[dict], split: str) -> pd.DataFrame:
    concepts = [concept_of_row(r) for r in rows]
    return pd.DataFrame(
        {"id": [str(r["id"]) for r in rows], "split": split, "concept": concepts, "family": concepts, "difficulty": "-"}
    )


def split_holdout(
    pool_json: str | os.PathLike,
    out_dir: str | os.PathLike,
    fraction: float,
    seed: int = 0,
    eval_json: str | os.PathLike | None = None,
) -> dict[str, Path | int]:
    """A held-out split of a user's LLaVA pool for comparing strategies (``docs/algorithm.md#selection``).

    Without ``eval_json``: a seeded ``fraction`` of the rows (at least one) becomes ``eval.json`` and the rest
    ``pool.json``. With it, the pool stays as it is and ``eval.json`` is a copy of it. ``labels.parquet`` names
    each evaluation row's concept by its image folder (:func:`concept_of_row`).
    """
    out = Path(out_dir)
    rows = json.loads(Path(pool_json).read_text())
    if not isinstance(rows, list) or not rows:
        raise EvaluationError(f"{pool_json}: expected a non-empty JSON list of LLaVA rows")
    if eval_json is not None:
        held = json.loads(Path(eval_json).read_text())
        kept_path = Path(pool_json)
    else:
        if not 0 < fraction < 1:
            raise EvaluationError(f"holdout fraction must be in (0, 1) for a pool without eval_json, got {fraction}")
        n_eval = max(1, int(round(fraction * len(rows))))
        if n_eval >= len(rows):
            raise EvaluationError(f"holding out {n_eval} of {len(rows)} rows leaves nothing to select from")
        picked = np.zeros(len(rows), dtype=bool)
        picked[np.random.default_rng(seed).choice(len(rows), size=n_eval, replace=False)] = True
        held = [r for r, p in zip(rows, picked) if p]
        kept_path = write_json([r for r, p in zip(rows, picked) if not p], out / "pool.json")
    eval_path = write_json(held, out / "eval.json")
    labels = write_parquet(_labels_frame(held, "eval"), out / "labels.parquet")
    return {"pool_json": kept_path, "eval_json": eval_path, "labels": labels, "n_eval": len(held)}
