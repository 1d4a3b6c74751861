"""A synthetic pool with headroom for selection (README "Does selection pay off?", headroom pool defaults).

The bundled pool (:mod:`progress_core.synthetic`) is the null case, ``headroom: none``: concepts in equal
shares, i.i.d. samples within each, no near-duplicates, no label noise beyond the ``random`` family, nothing
the aligned start already knows. No allocator can beat ``random`` there. Real instruction pools have all of
these, so :func:`generate_headroom_pool` adds them to the same generator, each with a default fixed from
LLaVA-1.5's 665K mix before any strategy was run on it (the README's registration table):

- a skewed pool composition (family shares from the mix's source sizes) against a concept-balanced,
  clean evaluation split;
- label noise: a share of each image family's answers replaced by another answer of the same family;
- near-duplicates: rows that repeat another row's conversation on a jittered copy of its image;
- already-known families, with a separate ``known`` split for a start that already answers them.

``labels.parquet`` gains ``duplicate_of`` (the id a near-duplicate copies, empty otherwise), ``noisy``
and ``known``; :func:`progress_core.selection.oracle.oracle_concepts` turns them into what the benchmark-only ``oracle``
strategy reads.
Selection itself never reads labels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from progress_core.data.synthetic import FAMILIES, TEXT_FAMILY, SyntheticConfig, write_split
from progress_core.errors import ConfigError
from progress_core.io import write_json, write_parquet

LLAVA_665K_SOURCES = (158, 86, 83, 80, 72, 66, 48, 22, 9)
"""Thousands of rows of LLaVA-1.5's 665K mix by image source, largest first (LLaVA 158K, VG 86K, VQAv2 83K,
OCR-VQA 80K, GQA 72K, A-OKVQA 66K, RefCOCO 48K, TextCaps 22K, OK-VQA 9K); ShareGPT's 40K is text-only."""
LLAVA_665K_TEXT = 40

DEFAULT_FAMILY_SHARES = {
    **{family: float(k) for family, k in zip(FAMILIES, LLAVA_665K_SOURCES)},
    TEXT_FAMILY: float(LLAVA_665K_TEXT),
}
"""Families in the order of ``synthetic.py``'s speed table (fastest first) take the source sizes, largest first."""

NOISY_FAMILIES = tuple(f for f in FAMILIES if f != "random")
KNOWN_SPLIT_CODE = 3
"""Generator stream of the ``known`` split (pool 0, eval 1, captions 2)."""


class HeadroomConfig(BaseModel):
    """What makes a pool have headroom; the defaults are the README's registered ones (never tuned to a result)."""

    model_config = ConfigDict(extra="forbid")

    family_shares: dict[str, float] | None = Field(
        default_factory=lambda: dict(DEFAULT_FAMILY_SHARES),
        description="pool share per family (normalised); None = the bundled equal shares",
    )
    label_noise: dict[str, float] = Field(
        default_factory=lambda: {f: 0.15 for f in NOISY_FAMILIES},
        description="share of a family's pool rows whose answer is replaced by another answer of the family",
    )
    near_duplicate_share: float = Field(0.30, ge=0, lt=1, description="share of pool rows that copy another row")
    jitter: int = Field(8, ge=0, le=64, description="max pixel-value change of a near-duplicate's image copy")
    known_families: tuple[str, ...] = Field(("colour",), description="families the start already answers")

    @classmethod
    def none(cls) -> HeadroomConfig:
        """The null case: the bundled pool unchanged."""
        return cls(family_shares=None, label_noise={}, near_duplicate_share=0.0, known_families=())


def resolve_headroom(value: str | dict | HeadroomConfig) -> HeadroomConfig:
    """``"none"``, ``"default"``, a dict of fields or a config: one clear error for anything else."""
    if isinstance(value, HeadroomConfig):
        return value
    if value == "none":
        return HeadroomConfig.none()
    if value == "default":
        return HeadroomConfig()
    if isinstance(value, dict):
        try:
            return HeadroomConfig(**value)
        except ValueError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"headroom: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    raise ConfigError(f"headroom must be 'none', 'default' or a mapping of fields, got {value!r}")


class HeadroomPool(BaseModel):
    """Where :func:`generate_headroom_pool` wrote the pool; ``known_json`` is empty when nothing is known."""

    pool_json: Path
    eval_json: Path
    known_json: Path
    image_root: Path
    labels_path: Path
    n: int
    n_eval: int
    n_known: int


def _answer(row: dict) -> str:
    return row["conversations"][1]["value"]


def _near_duplicates(rows: list[dict], labels: list[dict], cfg: HeadroomConfig, root: Path, rng) -> None:
    """Turn ``near_duplicate_share`` of the image rows into jittered copies of other (original) image rows."""
    with_image = np.array([i for i, r in enumerate(rows) if "image" in r], dtype=np.int64)
    n_dup = int(round(cfg.near_duplicate_share * len(rows)))
    if n_dup == 0 or with_image.size < 2:
        return
    n_dup = min(n_dup, with_image.size - 1)
    picked = rng.permutation(with_image)
    copies, originals = picked[:n_dup], picked[n_dup:]
    sources = originals[rng.integers(originals.size, size=n_dup)]
    for i, j in zip(copies.tolist(), sources.tolist()):
        with Image.open(root / rows[j]["image"]) as im:
            pixels = np.asarray(im.convert("RGB"), dtype=np.int16)
        noise = rng.integers(-cfg.jitter, cfg.jitter + 1, size=pixels.shape)
        rel = f"{labels[j]['family']}/{rows[i]['id']}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(root / rel, format="PNG")
        old = root / rows[i]["image"]
        if old != root / rel:
            old.unlink(missing_ok=True)
        rows[i] = {"id": rows[i]["id"], "image": rel, "conversations": [dict(t) for t in rows[j]["conversations"]]}
        labels[i] = {**labels[j], "id": rows[i]["id"], "duplicate_of": rows[j]["id"]}


def _label_noise(rows: list[dict], labels: list[dict], cfg: HeadroomConfig, rng) -> None:
    """Replace the first answer of ``label_noise[family]`` of each family's rows by another answer of the family."""
    families = np.array([lab["family"] for lab in labels], dtype=object)
    answers = np.array([_answer(r) for r in rows], dtype=object)
    for family, rate in sorted(cfg.label_noise.items()):
        members = np.flatnonzero(families == family)
        vocab = np.unique(answers[members].astype(str))
        if members.size == 0 or vocab.size < 2 or rate <= 0:
            continue
        noisy = members[rng.random(members.size) < rate]
        true_idx = np.searchsorted(vocab, answers[noisy].astype(str))
        draw = rng.integers(vocab.size - 1, size=noisy.size)
        replaced = vocab[draw + (draw >= true_idx)]
        for i, answer in zip(noisy.tolist(), replaced.tolist()):
            rows[i]["conversations"][1]["value"] = str(answer)
            labels[i]["noisy"] = True


def _check_families(cfg: HeadroomConfig) -> None:
    known = set(FAMILIES) | {TEXT_FAMILY}
    named = set(cfg.family_shares or {}) | set(cfg.label_noise) | set(cfg.known_families)
    unknown = sorted(named - known)
    if unknown:
        raise ConfigError(f"headroom: unknown families {unknown}; known: {sorted(known)}")
    if cfg.family_shares is not None and sum(cfg.family_shares.values()) <= 0:
        raise ConfigError("headroom: family_shares must have a positive sum")


def _labels_table(labels: list[dict], known: set[str]) -> pa.Table:
    frame = pd.DataFrame(labels)
    for column, empty in (("duplicate_of", ""), ("noisy", False)):
        frame[column] = frame[column].fillna(empty) if column in frame else empty
    frame["noisy"] = frame["noisy"].astype(bool)
    frame["known"] = frame["family"].isin(known)
    return pa.Table.from_pandas(frame, preserve_index=False)


def generate_headroom_pool(
    out_dir: str | os.PathLike,
    n: int = 3000,
    n_eval: int = 600,
    seed: int = 0,
    headroom: str | dict | HeadroomConfig = "default",
    *,
    n_known: int = 1000,
    image_size: int = 32,
) -> HeadroomPool:
    """Write ``pool.json`` (skewed, noisy, with near-duplicates), a clean balanced ``eval.json``, ``known.json``
    (only the known families, for the start) and ``labels.parquet``, deterministic in ``seed``.

    With ``headroom="none"`` pool and eval rows are those of :func:`progress_core.synthetic.generate_pool`.
    """
    cfg = resolve_headroom(headroom)
    _check_families(cfg)
    syn = SyntheticConfig(n=n, n_eval=n_eval, seed=seed, image_size=image_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pool_rows, pool_labels = write_split(out, "pool", 0, syn.n, syn, None, cfg.family_shares)
    eval_rows, eval_labels = write_split(out, "eval", 1, syn.n_eval, syn, None)
    known_shares = {f: 1.0 for f in cfg.known_families} or None
    k_known = n_known if known_shares else 0
    known_rows, known_labels = (
        write_split(out, "known", KNOWN_SPLIT_CODE, k_known, syn, None, known_shares) if k_known else ([], [])
    )
    rng = np.random.default_rng([seed, 17])
    _near_duplicates(pool_rows, pool_labels, cfg, out / "images", rng)
    _label_noise(pool_rows, pool_labels, cfg, rng)
    write_json(pool_rows, out / "pool.json")
    write_json(eval_rows, out / "eval.json")
    write_json(known_rows, out / "known.json")
    write_parquet(
        _labels_table(pool_labels + eval_labels + known_labels, set(cfg.known_families)), out / "labels.parquet"
    )
    return HeadroomPool(
        pool_json=out / "pool.json",
        eval_json=out / "eval.json",
        known_json=out / "known.json",
        image_root=out / "images",
        labels_path=out / "labels.parquet",
        n=syn.n,
        n_eval=syn.n_eval,
        n_known=k_known,
    )
