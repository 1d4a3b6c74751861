"""Bundled synthetic visual-QA pool in LLaVA format (docs/architecture.md#the-bundled-demo "Data").

The demo, the tests and the benchmarks need a pool whose concepts are learned at clearly different
speeds by a tiny LLaVA, because that is what PROGRESS (arXiv 2506.01085, §3) detects: selection should
spend budget on concepts that are learnable now, not on those already learned or never learnable.

Families (``family`` in the labels; the image's top-level folder, hence the manifest ``source``):

=============  =========================================================  ===================
family         question                                                   expected speed
=============  =========================================================  ===================
colour         colour of the whole image                                  fast
object_colour  colour of the one shape                                    medium
shape          square / circle / triangle / diamond                       medium
count          how many squares (1-4)                                     slow
position       simple: left/right; hard: quadrant                          slow
table          simple: one cell of a 2x2 grid; hard: 2-3 consecutive      slow
               cells of a 3x3 grid (VLM_S2H table readout)
navigation     colour of the cell a path of moves ends on; simple: 1-2     slow
               moves, hard: 3-5 moves (VLM_S2H grid navigation)
analogy        which attribute changes between two panels; simple: one,   slow
               hard: two (VLM_S2H visual analogy)
random         a code word drawn at random, unrelated to the image        never
text           text-only arithmetic ("What is 2 plus 3?")                 fast (no image)
=============  =========================================================  ===================

``concept`` is ``family`` or ``family_simple``/``family_hard``. Labels go to ``labels.parquet`` and are
for evaluation only: selection must never read them. Every sample is drawn from its own seeded
generator (seed, split, index), and Pillow writes PNGs without timestamps, so the same seed gives
byte-identical files.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image
from pydantic import BaseModel, Field

from progress_core.data.scenes import (
    BASE_SIZE,
    DIVIDER,
    NEUTRALS,
    PALETTE,
    QUADRANTS,
    SHAPES,
    SIZES,
    canvas,
    colour_names,
    draw_grid,
    draw_shape,
    pick,
)
from progress_core.errors import ConfigError
from progress_core.io import write_bytes_if_changed, write_json, write_parquet

RANDOM_WORDS = ("apple", "river", "stone", "cloud", "lamp")
MOVES = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}

FAMILIES = ("colour", "object_colour", "shape", "count", "position", "table", "navigation", "analogy", "random")
GRADED_FAMILIES = frozenset(("position", "table", "navigation", "analogy"))
TEXT_FAMILY = "text"

LABEL_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("split", pa.string()),
        ("concept", pa.string()),
        ("family", pa.string()),
        ("difficulty", pa.string()),
    ]
)


class SyntheticConfig(BaseModel):
    """Sizes and mix of the bundled pool (docs/architecture.md#the-bundled-demo)."""

    n: int = Field(3000, ge=1, description="samples in the selection pool (pool.json)")
    n_eval: int = Field(600, ge=0, description="samples in the separate evaluation split (eval.json)")
    seed: int = Field(0, ge=0, description="generator seed; the same seed gives byte-identical files")
    image_size: int = Field(32, ge=32, description="PNG side in pixels (drawn at 32 px, upscaled nearest)")
    text_fraction: float = Field(0.03, ge=0, le=1, description="share of text-only arithmetic rows")
    multi_turn_fraction: float = Field(
        0.03, ge=0, le=1, description="share of object_colour/shape rows with a second turn"
    )


class SyntheticPool(BaseModel):
    """Where :func:`generate_pool` wrote the pool (docs/architecture.md#file-kinds)."""

    pool_json: Path = Field(description="LLaVA JSON list of the selection pool")
    eval_json: Path = Field(description="LLaVA JSON list of the evaluation split")
    image_root: Path = Field(description="folder the rows' image paths are relative to")
    labels_path: Path = Field(description="labels.parquet: id, split, concept, family, difficulty")
    n: int = Field(description="rows in pool.json")
    n_eval: int = Field(description="rows in eval.json")
    seed: int = Field(description="generator seed")


class _Sample:
    __slots__ = ("image", "turns", "family", "difficulty")

    def __init__(self, image: Image.Image | None, turns: list[tuple[str, str]], family: str, difficulty: str = "-"):
        self.image = image
        self.turns = turns
        self.family = family
        self.difficulty = difficulty


def _image_question(rng: np.random.Generator, templates: Sequence[str], **kw) -> str:
    return "<image>\n" + pick(rng, templates).format(**kw)


def _whole_colour(rng: np.random.Generator) -> _Sample:
    name = colour_names(rng)[0]
    image, _ = canvas(PALETTE[name])
    q = _image_question(
        rng, ("What colour is the image?", "Which colour fills the picture?", "What is the colour of this image?")
    )
    return _Sample(image, [(q, name)], "colour")


def _one_object(rng: np.random.Generator) -> tuple[Image.Image, str, str]:
    colour = colour_names(rng)[0]
    shape = pick(rng, SHAPES)
    size = int(rng.integers(12, 17))
    image, draw = canvas(pick(rng, NEUTRALS))
    x0, y0 = (int(v) for v in rng.integers(1, BASE_SIZE - size, size=2))
    draw_shape(draw, shape, x0, y0, size, PALETTE[colour])
    return image, colour, shape


COLOUR_TEMPLATES = ("What colour is the shape?", "Which colour is the object?", "What is the colour of the shape?")
SHAPE_TEMPLATES = ("What shape is shown?", "Which shape is in the picture?", "What is the shape of the object?")


def _object_colour(rng: np.random.Generator, multi_turn: bool) -> _Sample:
    image, colour, shape = _one_object(rng)
    turns = [(_image_question(rng, COLOUR_TEMPLATES), colour)]
    if multi_turn:
        turns.append(("And what shape is it?", shape))
    return _Sample(image, turns, "object_colour")


def _shape(rng: np.random.Generator, multi_turn: bool) -> _Sample:
    image, colour, shape = _one_object(rng)
    turns = [(_image_question(rng, SHAPE_TEMPLATES), shape)]
    if multi_turn:
        turns.append(("And what colour is it?", colour))
    return _Sample(image, turns, "shape")


def _count(rng: np.random.Generator) -> _Sample:
    k = int(rng.integers(1, 5))
    image, draw = canvas(pick(rng, NEUTRALS))
    slots = rng.choice(16, size=k, replace=False)
    for slot in slots:
        size = int(rng.integers(5, 7))
        ox, oy = (int(v) for v in rng.integers(1, 8 - size, size=2))
        x0, y0 = int(slot % 4) * 8 + ox, int(slot // 4) * 8 + oy
        draw_shape(draw, "square", x0, y0, size, PALETTE[colour_names(rng)[0]])
    q = _image_question(
        rng, ("How many squares are there?", "Count the squares in the picture.", "How many objects do you see?")
    )
    return _Sample(image, [(q, str(k))], "count")


def _position(rng: np.random.Generator, hard: bool) -> _Sample:
    size = 10
    image, draw = canvas(pick(rng, NEUTRALS))
    col = int(rng.integers(2))
    x0 = int(rng.integers(1, 6)) + 16 * col
    if hard:
        row = int(rng.integers(2))
        y0 = int(rng.integers(1, 6)) + 16 * row
        answer = QUADRANTS[(row, col)]
        templates = (
            "In which corner is the shape?",
            "Which quadrant holds the object?",
            "Where is the shape: top left, top right, bottom left or bottom right?",
        )
    else:
        y0 = int(rng.integers(1, BASE_SIZE - size))
        answer = ("left", "right")[col]
        templates = (
            "Is the shape on the left or the right?",
            "Which side is the object on?",
            "Where is the shape, left or right?",
        )
    draw_shape(draw, pick(rng, SHAPES), x0, y0, size, PALETTE[colour_names(rng)[0]])
    return _Sample(image, [(_image_question(rng, templates), answer)], "position", "hard" if hard else "simple")


def _table(rng: np.random.Generator, hard: bool) -> _Sample:
    cells = 3 if hard else 2
    colours = np.array(colour_names(rng, cells * cells)).reshape(cells, cells)
    image = draw_grid(colours, cells)
    if not hard:
        r, c = (int(v) for v in rng.integers(cells, size=2))
        q = _image_question(
            rng,
            (
                "What colour is the cell in row {r}, column {c}?",
                "Read the table: which colour is at row {r}, column {c}?",
                "In the grid, what is the colour of row {r} column {c}?",
            ),
            r=r + 1,
            c=c + 1,
        )
        return _Sample(image, [(q, str(colours[r][c]))], "table", "simple")
    length = int(rng.integers(2, 4))
    first = int(rng.integers(0, cells - length + 1))
    line = int(rng.integers(cells))
    if rng.integers(2):
        answer = " ".join(colours[line, first : first + length])
        q = _image_question(
            rng,
            (
                "List the colours in row {l}, columns {a} to {b}.",
                "Read row {l} of the table from column {a} to column {b}.",
            ),
            l=line + 1,
            a=first + 1,
            b=first + length,
        )
    else:
        answer = " ".join(colours[first : first + length, line])
        q = _image_question(
            rng,
            (
                "List the colours in column {l}, rows {a} to {b}.",
                "Read column {l} of the table from row {a} to row {b}.",
            ),
            l=line + 1,
            a=first + 1,
            b=first + length,
        )
    return _Sample(image, [(q, answer)], "table", "hard")


def walk(start: tuple[int, int], moves: Sequence[str]) -> tuple[int, int]:
    """Cell reached from ``start`` by applying ``moves`` (row grows downwards)."""
    r, c = start
    for m in moves:
        dr, dc = MOVES[m]
        r, c = r + dr, c + dc
    return r, c


def _navigation(rng: np.random.Generator, hard: bool) -> _Sample:
    cells = 3
    colours = np.array(colour_names(rng, cells * cells)).reshape(cells, cells)
    n_moves = int(rng.integers(3, 6)) if hard else int(rng.integers(1, 3))
    while True:
        start = tuple(int(v) for v in rng.integers(cells, size=2))
        pos, moves = start, []
        for _ in range(n_moves):
            options = [m for m, (dr, dc) in MOVES.items() if 0 <= pos[0] + dr < cells and 0 <= pos[1] + dc < cells]
            m = pick(rng, options)
            moves.append(m)
            pos = walk(pos, [m])
        if pos != start:
            break
    image = draw_grid(colours, cells, start=start)
    path = ", ".join(moves)
    q = _image_question(
        rng,
        (
            "Start at the white cell and move {p}. What colour is the cell you reach?",
            "From the white cell, go {p}. Which colour is the cell where you stop?",
            "Moves: {p}. Starting on the white cell, what colour do you end on?",
        ),
        p=path,
    )
    return _Sample(image, [(q, str(colours[pos]))], "navigation", "hard" if hard else "simple")


ANALOGY_ATTRIBUTES = ("colour", "shape", "size")


def _analogy(rng: np.random.Generator, hard: bool) -> _Sample:
    changed = sorted(rng.choice(3, size=2 if hard else 1, replace=False).tolist())
    left = {"colour": colour_names(rng)[0], "shape": pick(rng, SHAPES), "size": pick(rng, list(SIZES))}
    right = dict(left)
    for i in changed:
        attribute = ANALOGY_ATTRIBUTES[i]
        options = {"colour": list(PALETTE), "shape": list(SHAPES), "size": list(SIZES)}[attribute]
        right[attribute] = pick(rng, [o for o in options if o != left[attribute]])
    image, draw = canvas((255, 255, 255))
    draw.rectangle([15, 0, 16, BASE_SIZE - 1], fill=DIVIDER)
    for panel_x, spec in ((0, left), (16, right)):
        size = SIZES[spec["size"]]
        x0, y0 = panel_x + (16 - size) // 2, (BASE_SIZE - size) // 2
        draw_shape(draw, spec["shape"], x0, y0, size, PALETTE[spec["colour"]])
    answer = " and ".join(ANALOGY_ATTRIBUTES[i] for i in changed)
    q = _image_question(
        rng,
        (
            "What changes from the left panel to the right panel?",
            "Which attribute differs between the two panels?",
            "Compare the two shapes: what is different?",
        ),
    )
    return _Sample(image, [(q, answer)], "analogy", "hard" if hard else "simple")


def _random(rng: np.random.Generator) -> _Sample:
    image, _, _ = _one_object(rng)
    q = _image_question(
        rng,
        (
            "What is the code word for this picture?",
            "Which secret word goes with this image?",
            "Name the password of this picture.",
        ),
    )
    return _Sample(image, [(q, pick(rng, RANDOM_WORDS))], "random")


def _arithmetic(rng: np.random.Generator) -> _Sample:
    a, b = (int(v) for v in rng.integers(0, 10, size=2))
    if rng.integers(2):
        q = pick(rng, ("What is {a} plus {b}?", "Add {a} and {b}.")).format(a=a, b=b)
        answer = a + b
    else:
        q = pick(rng, ("What is {a} times {b}?", "Multiply {a} by {b}.")).format(a=a, b=b)
        answer = a * b
    return _Sample(None, [(q, str(answer))], TEXT_FAMILY)


def _make(family: str, rng: np.random.Generator, multi_turn_fraction: float) -> _Sample:
    hard = bool(rng.integers(2)) if family in GRADED_FAMILIES else False
    multi = family in ("object_colour", "shape") and rng.random() < multi_turn_fraction
    builders: dict[str, Callable[[], _Sample]] = {
        "colour": lambda: _whole_colour(rng),
        "object_colour": lambda: _object_colour(rng, multi),
        "shape": lambda: _shape(rng, multi),
        "count": lambda: _count(rng),
        "position": lambda: _position(rng, hard),
        "table": lambda: _table(rng, hard),
        "navigation": lambda: _navigation(rng, hard),
        "analogy": lambda: _analogy(rng, hard),
        "random": lambda: _random(rng),
        TEXT_FAMILY: lambda: _arithmetic(rng),
    }
    return builders[family]()


def family_counts(n: int, shares: dict[str, float]) -> dict[str, int]:
    """Rows per family for ``n`` rows split by ``shares`` (largest remainder, so the counts sum to ``n``)."""
    names = sorted(shares)
    weights = np.array([shares[f] for f in names], dtype=np.float64)
    exact = n * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(counts - exact, kind="stable")[: n - int(counts.sum())]] += 1
    return dict(zip(names, counts.tolist()))


def _families(
    n: int, seed: int, split_code: int, text_fraction: float, shares: dict[str, float] | None = None
) -> list[str]:
    rng = np.random.default_rng([seed, split_code, 0])
    n_text = int(round(n * text_fraction))
    image_families = [FAMILIES[i % len(FAMILIES)] for i in range(n - n_text)] + [TEXT_FAMILY] * n_text
    if shares is not None:
        image_families = [f for f, k in family_counts(n, shares).items() for _ in range(k)]
    order = rng.permutation(n)
    families = np.array(image_families, dtype=object)[order]
    return families.tolist()


def write_split(
    out_dir: Path, split: str, split_code: int, n: int, cfg: SyntheticConfig, progress, shares=None
) -> tuple[list[dict], list[dict]]:
    rows, labels = [], []
    for i, family in enumerate(_families(n, cfg.seed, split_code, cfg.text_fraction, shares)):
        rng = np.random.default_rng([cfg.seed, split_code, 1, i])
        sample = _make(family, rng, cfg.multi_turn_fraction)
        sample_id = f"{split}-{i:06d}"
        row: dict[str, Any] = {"id": sample_id}
        if sample.image is not None:
            rel = f"{family}/{sample_id}.png"
            image = sample.image
            if cfg.image_size != BASE_SIZE:
                image = image.resize((cfg.image_size, cfg.image_size), Image.NEAREST)
            png = io.BytesIO()
            image.save(png, format="PNG")
            write_bytes_if_changed(png.getvalue(), out_dir / "images" / rel)
            row["image"] = rel
        conversations = []
        for question, answer in sample.turns:
            conversations.append({"from": "human", "value": question})
            conversations.append({"from": "gpt", "value": answer})
        row["conversations"] = conversations
        rows.append(row)
        concept = family if sample.difficulty == "-" else f"{family}_{sample.difficulty}"
        labels.append(
            {"id": sample_id, "split": split, "concept": concept, "family": family, "difficulty": sample.difficulty}
        )
        if progress is not None:
            progress.update(1)
    return rows, labels


def generate_pool(
    out_dir: str | os.PathLike,
    n: int = 3000,
    n_eval: int = 600,
    seed: int = 0,
    *,
    image_size: int = 32,
    text_fraction: float = 0.03,
    multi_turn_fraction: float = 0.03,
    verbose: bool = False,
) -> SyntheticPool:
    """Write the bundled pool: ``pool.json``, ``eval.json``, ``images/<family>/<id>.png``, ``labels.parquet``.

    Families appear in equal shares (text-only arithmetic at ``text_fraction``), difficulty is a fair coin
    for graded families. Deterministic in ``seed`` (docs/architecture.md#the-bundled-demo).
    """
    try:
        cfg = SyntheticConfig(
            n=n,
            n_eval=n_eval,
            seed=seed,
            image_size=image_size,
            text_fraction=text_fraction,
            multi_turn_fraction=multi_turn_fraction,
        )
    except ValueError as exc:
        raise ConfigError(f"synthetic pool: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    progress = None
    if verbose:
        from tqdm import tqdm

        progress = tqdm(total=cfg.n + cfg.n_eval, unit="sample", desc="synthetic pool")
    try:
        pool_rows, pool_labels = write_split(out, "pool", 0, cfg.n, cfg, progress)
        eval_rows, eval_labels = write_split(out, "eval", 1, cfg.n_eval, cfg, progress)
    finally:
        if progress is not None:
            progress.close()
    write_json(pool_rows, out / "pool.json")
    write_json(eval_rows, out / "eval.json")
    labels = pa.Table.from_pylist(pool_labels + eval_labels, schema=LABEL_SCHEMA)
    write_parquet(labels, out / "labels.parquet")
    return SyntheticPool(
        pool_json=out / "pool.json",
        eval_json=out / "eval.json",
        image_root=out / "images",
        labels_path=out / "labels.parquet",
        n=cfg.n,
        n_eval=cfg.n_eval,
        seed=cfg.seed,
    )
