"""A held-out evaluation split of a user's pool, stratified by concept (docs/architecture.md#file-kinds)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from progress_core.errors import ProgressError
from progress_core.io import write_json, write_parquet


class HoldoutError(ProgressError):
    """A pool cannot be split into a training pool and a held-out evaluation split."""


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
        raise HoldoutError(f"{pool_json}: expected a non-empty JSON list of LLaVA rows")
    if eval_json is not None:
        held = json.loads(Path(eval_json).read_text())
        kept_path = Path(pool_json)
    else:
        if not 0 < fraction < 1:
            raise HoldoutError(f"holdout fraction must be in (0, 1) for a pool without eval_json, got {fraction}")
        n_eval = max(1, int(round(fraction * len(rows))))
        if n_eval >= len(rows):
            raise HoldoutError(f"holding out {n_eval} of {len(rows)} rows leaves nothing to select from")
        picked = np.zeros(len(rows), dtype=bool)
        picked[np.random.default_rng(seed).choice(len(rows), size=n_eval, replace=False)] = True
        held = [r for r, p in zip(rows, picked) if p]
        kept_path = write_json([r for r, p in zip(rows, picked) if not p], out / "pool.json")
    eval_path = write_json(held, out / "eval.json")
    labels = write_parquet(_labels_frame(held, "eval"), out / "labels.parquet")
    return {"pool_json": kept_path, "eval_json": eval_path, "labels": labels, "n_eval": len(held)}
