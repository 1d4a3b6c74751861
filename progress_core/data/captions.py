"""Synthetic captioned scenes for stage-1 alignment (PROGRESS §4.1, docs/algorithm.md#training)."""

from __future__ import annotations

import numpy as np
from PIL import Image

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

CAPTION_SPLIT_CODE = 2
"""Generator stream of caption scenes; the pool (0) and eval split (1) use their own, so no image is shared."""


NEUTRAL_NAMES = {(255, 255, 255): "white", (200, 200, 200): "grey", (90, 90, 90): "dark grey"}


CAPTION_SCENES = ("plain", "object", "squares", "grid", "panels")


def _caption_quadrant(x0: int, y0: int, size: int) -> str:
    row = int(y0 + size / 2 >= BASE_SIZE / 2)
    col = int(x0 + size / 2 >= BASE_SIZE / 2)
    return QUADRANTS[(row, col)]


def _caption_grid_rows(colours: np.ndarray) -> str:
    return " , ".join(f"row {r + 1} " + " ".join(str(c) for c in colours[r]) for r in range(len(colours)))


def _caption_scene(rng: np.random.Generator) -> tuple[Image.Image, str]:
    kind = pick(rng, CAPTION_SCENES)
    if kind == "plain":
        name = colour_names(rng)[0]
        return canvas(PALETTE[name])[0], f"a {name} image"
    if kind == "object":
        colour, shape, size = colour_names(rng)[0], pick(rng, SHAPES), int(rng.integers(8, 17))
        background = pick(rng, NEUTRALS)
        image, draw = canvas(background)
        x0, y0 = (int(v) for v in rng.integers(1, BASE_SIZE - size, size=2))
        draw_shape(draw, shape, x0, y0, size, PALETTE[colour])
        where = _caption_quadrant(x0, y0, size)
        return image, f"a {colour} {shape} in the {where} on a {NEUTRAL_NAMES[background]} background"
    if kind == "squares":
        k = int(rng.integers(1, 5))
        image, draw = canvas(pick(rng, NEUTRALS))
        colours = colour_names(rng, k)
        for slot, colour in zip(sorted(rng.choice(16, size=k, replace=False).tolist()), colours):
            size = int(rng.integers(5, 7))
            ox, oy = (int(v) for v in rng.integers(1, 8 - size, size=2))
            draw_shape(draw, "square", int(slot % 4) * 8 + ox, int(slot // 4) * 8 + oy, size, PALETTE[colour])
        return image, f"{k} square{'s' if k > 1 else ''} : " + " ".join(colours)
    if kind == "grid":
        cells = int(rng.integers(2, 4))
        colours = np.array(colour_names(rng, cells * cells)).reshape(cells, cells)
        start = tuple(int(v) for v in rng.integers(cells, size=2)) if cells == 3 and rng.integers(2) else None
        if start is not None:
            colours[start] = "white"
        image = draw_grid(colours if start is None else np.where(colours == "white", "red", colours), cells, start)
        return image, f"a table of {cells} by {cells} cells : " + _caption_grid_rows(colours)
    specs = []
    for _ in range(2):
        specs.append((pick(rng, list(SIZES)), colour_names(rng)[0], pick(rng, SHAPES)))
    image, draw = canvas((255, 255, 255))
    draw.rectangle([15, 0, 16, BASE_SIZE - 1], fill=DIVIDER)
    for panel_x, (size_name, colour, shape) in zip((0, 16), specs):
        size = SIZES[size_name]
        draw_shape(draw, shape, panel_x + (16 - size) // 2, (BASE_SIZE - size) // 2, size, PALETTE[colour])
    left, right = (" ".join(spec) for spec in specs)
    return image, f"two panels : a {left} on the left and a {right} on the right"


def caption_set(n: int, seed: int, image_size: int = BASE_SIZE) -> list[tuple[Image.Image, str]]:
    """``n`` (image, caption) pairs for stage-1 alignment (PROGRESS §4.1, docs/algorithm.md#training).

    The scenes are those the pool's families draw (a plain colour, one shape on a neutral background,
    several squares, a 2x2 or 3x3 colour table, two panels), each captioned with what was drawn: colours,
    shapes, sizes, quadrant, count and the table's cells row by row. They come from their own generator
    stream (:data:`CAPTION_SPLIT_CODE`), so no caption image is a pool or eval image; captions state no
    question and no answer format of the pool. Deterministic in ``seed``.
    """
    pairs = []
    for i in range(n):
        image, caption = _caption_scene(np.random.default_rng([seed, CAPTION_SPLIT_CODE, i]))
        if image_size != BASE_SIZE:
            image = image.resize((image_size, image_size), Image.NEAREST)
        pairs.append((image, caption))
    return pairs
