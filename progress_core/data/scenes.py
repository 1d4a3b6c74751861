"""Drawing primitives shared by the synthetic pool and the stage-1 captions (docs/architecture.md#the-bundled-demo)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 220, 30),
    "purple": (140, 50, 190),
    "orange": (245, 140, 20),
}
"""Answer colours; far apart in RGB and all distinct from the neutral backgrounds."""


NEUTRALS: tuple[tuple[int, int, int], ...] = ((255, 255, 255), (200, 200, 200), (90, 90, 90))


GRID_BACKGROUND = (0, 0, 0)


START_CELL = (255, 255, 255)


DIVIDER = (128, 128, 128)


SHAPES = ("square", "circle", "triangle", "diamond")


SIZES = {"small": 8, "large": 14}


QUADRANTS = {(0, 0): "top left", (0, 1): "top right", (1, 0): "bottom left", (1, 1): "bottom right"}


BASE_SIZE = 32


def canvas(background: tuple[int, int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (BASE_SIZE, BASE_SIZE), background)
    return image, ImageDraw.Draw(image)


def draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, x0: int, y0: int, size: int, colour: tuple[int, int, int]
) -> None:
    """Draw a filled, non-antialiased shape in the box ``[x0, x0+size) x [y0, y0+size)``."""
    x1, y1 = x0 + size - 1, y0 + size - 1
    if shape == "square":
        draw.rectangle([x0, y0, x1, y1], fill=colour)
    elif shape == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=colour)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=colour)
    elif shape == "diamond":
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def pick(rng: np.random.Generator, options: Sequence) -> Any:
    return options[int(rng.integers(len(options)))]


def colour_names(rng: np.random.Generator, k: int = 1) -> list[str]:
    return [str(c) for c in rng.choice(list(PALETTE), size=k, replace=True)]


def grid_cell_box(k: int, cells: int) -> tuple[int, int]:
    """Pixel span ``(start, stop)`` of cell ``k`` along one axis of a ``cells``-wide grid (2 or 3)."""
    pitch = 16 if cells == 2 else 10
    size = 15 if cells == 2 else 9
    start = 1 + pitch * k
    return start, start + size


def draw_grid(colours: np.ndarray, cells: int, start: tuple[int, int] | None = None) -> Image.Image:
    image, draw = canvas(GRID_BACKGROUND)
    for r in range(cells):
        for c in range(cells):
            y0, y1 = grid_cell_box(r, cells)
            x0, x1 = grid_cell_box(c, cells)
            fill = START_CELL if start == (r, c) else PALETTE[colours[r][c]]
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)
    return image
