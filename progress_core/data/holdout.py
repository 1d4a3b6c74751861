"""A held-out evaluation split of a user's pool, drawn uniformly at random, each row labelled with its concept so
accuracy is reported per concept (docs/architecture.md#file-kinds)."""

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


def read_concept_labels(path: str | os.PathLike) -> dict[str, str]:
    """``data.concept_labels``: a JSON object ``{id: concept}``, or a CSV / Parquet table with columns ``id`` and
    ``concept``; :class:`HoldoutError` in one line when it is missing or has another shape."""
    p = Path(path)
    if not p.is_file():
        raise HoldoutError(f"data.concept_labels: file not found: {str(p)!r}; fix the path or leave it empty")
    try:
        if p.suffix.lower() == ".json":
            obj = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("expected a JSON object {id: concept}")
            return {str(k): str(v) for k, v in obj.items()}
        table = pd.read_parquet(p) if p.suffix.lower() == ".parquet" else pd.read_csv(p, dtype=str)
        if not {"id", "concept"} <= set(table.columns):
            raise ValueError(f"needs columns id and concept, has {list(table.columns)}")
        return dict(zip(table["id"].astype(str), table["concept"].astype(str)))
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise HoldoutError(f"data.concept_labels: {str(p)!r} cannot be read ({exc})") from None


def row_concepts(rows: list[dict], labels: dict[str, str] | None = None, field: str | None = None) -> list[str]:
    """Concept of each row: from ``labels`` (id → concept), a JSON ``field`` of the row, or the image folder
    (:func:`concept_of_row`). Rows the chosen source does not name are one :class:`HoldoutError`."""
    if labels is None and field is None:
        return [concept_of_row(r) for r in rows]
    if labels is not None:
        concepts, where = [labels.get(str(r.get("id"))) for r in rows], "data.concept_labels has no entry for"
    else:
        concepts, where = [r.get(field) for r in rows], f"data.concept_field {field!r} is missing in"
    missing = [str(r.get("id")) for r, c in zip(rows, concepts) if c is None or c == ""]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise HoldoutError(f"{where} {len(missing)} of {len(rows)} held-out rows (ids {shown}); add them")
    return [str(c) for c in concepts]


def _labels_frame(rows: list[dict], split: str, concepts: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": [str(r["id"]) for r in rows], "split": split, "concept": concepts, "family": concepts, "difficulty": "-"}
    )


def split_holdout(
    pool_json: str | os.PathLike,
    out_dir: str | os.PathLike,
    fraction: float,
    seed: int = 0,
    eval_json: str | os.PathLike | None = None,
    concept_labels: str | os.PathLike | None = None,
    concept_field: str | None = None,
) -> dict[str, Path | int]:
    """A held-out split of a user's LLaVA pool for comparing strategies (``docs/algorithm.md#selection``).

    Without ``eval_json``: a seeded ``fraction`` of the rows (at least one) becomes ``eval.json`` and the rest
    ``pool.json``. With it, the pool stays as it is and ``eval.json`` is a copy of it. ``labels.parquet`` names
    each evaluation row's concept (:func:`row_concepts`): from ``concept_labels``, ``concept_field`` or, with
    neither, the image folder (:func:`concept_of_row`). Nothing is written unless every held-out row has its concept.
    """
    out = Path(out_dir)
    labels = read_concept_labels(concept_labels) if concept_labels else None
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
    concepts = row_concepts(held, labels, concept_field or None)
    if eval_json is None:
        kept_path = write_json([r for r, p in zip(rows, picked) if not p], out / "pool.json")
    eval_path = write_json(held, out / "eval.json")
    labels_path = write_parquet(_labels_frame(held, "eval", concepts), out / "labels.parquet")
    return {"pool_json": kept_path, "eval_json": eval_path, "labels": labels_path, "n_eval": len(held)}
