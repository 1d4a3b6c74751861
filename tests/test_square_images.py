"""Non-square images are padded to a square of the processor's mean colour (LLaVA-1.5 ``pad``), or cropped."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_model import make_pool, pool_texts

from progress_core.model.config import ModelConfig
from progress_core.model.loading import load_model
from progress_core.model.tiny import build_tiny_model
from progress_core.training.samples import Encoder, samples_rows

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("square")
    pool = make_pool(root, n=6)
    init = build_tiny_model(pool_texts(pool), ModelConfig(patch_size=8), root / "init")
    wide = np.zeros((32, 64, 3), np.uint8) + np.array(GREEN, np.uint8)
    wide[:, :8] = RED
    wide[:, -8:] = BLUE
    Image.fromarray(wide).save(root / "images" / "wide.png")
    row = {"conversations": '[{"from": "human", "value": "<image>\\nWhat?"}, {"from": "gpt", "value": "red"}]'}
    return root, init, [{**row, "image": "wide.png"}]


def _picture(root, init, rows, aspect: str) -> np.ndarray:
    """The 2:1 picture as the vision tower sees it: (height, width, RGB) in 0-255 after undoing normalisation."""
    model, processor = load_model(init, ModelConfig(patch_size=8, image_aspect_ratio=aspect), trainable=False)
    encoder = Encoder(processor, model.config.image_token_index, root / "images", 512)
    ((conv, image),) = samples_rows(rows)
    pixels = encoder.pixel_values([encoder.encode(conv, image, 0)], [0])[0].numpy()
    ip = processor.image_processor
    std, mean = np.array(ip.image_std)[:, None, None], np.array(ip.image_mean)[:, None, None]
    return ((pixels * std + mean) * 255).transpose(1, 2, 0)


def _close(colour, expected, tol: float = 40.0) -> bool:
    return bool(np.abs(np.asarray(colour) - np.asarray(expected)).max() < tol)


def test_a_two_to_one_image_padded_keeps_both_edges_on_the_mean_colour(tiny):
    root, init, rows = tiny
    picture = _picture(root, init, rows, "pad")
    assert picture.shape[:2] == (32, 32)
    assert _close(picture[16, 0], RED) and _close(picture[16, -1], BLUE) and _close(picture[16, 16], GREEN)
    mean = np.array(load_model(init, ModelConfig(), trainable=False)[1].image_processor.image_mean) * 255
    assert _close(picture[0, 16], mean, 2.0) and _close(picture[-1, 16], mean, 2.0)


def test_crop_is_kept_as_the_option_and_loses_the_edges(tiny):
    root, init, rows = tiny
    picture = _picture(root, init, rows, "crop")
    assert _close(picture[16, 0], GREEN) and _close(picture[16, -1], GREEN) and _close(picture[0, 16], GREEN)


def test_pad_is_the_default_in_real_mode_and_crop_in_tiny_mode():
    assert ModelConfig(mode="real").aspect_ratio() == "pad"
    assert ModelConfig().aspect_ratio() == "crop"
    assert ModelConfig(mode="real", image_aspect_ratio="crop").aspect_ratio() == "crop"
