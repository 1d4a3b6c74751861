"""Stage-1 alignment of the tiny starting model (progress_core/model/alignment.py, PROGRESS §4.1): what it trains,
that it is deterministic for a seed, that its captions are not pool images, and that the init-model stage
rebuilds when it is switched on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tasks.model_init as training_mod
from progress_core.data.captions import caption_set
from progress_core.data.scenes import PALETTE, SHAPES
from progress_core.data.synthetic import generate_pool
from progress_core.model.alignment import CAPTION_PROMPT, align_tiny_model, caption_texts
from progress_core.model.config import ModelConfig
from progress_core.model.tiny import build_tiny_model
from tasks.model_init import init_model_stage
from tasks.stage import StageRecord

TEXTS = ["<image>\nWhat colour is the image?", "red", "<image>\nWhat shape is shown?", "circle"]
TINY = {"align_captions": 12, "align_batch_size": 4}


def _state(path: Path) -> dict:
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(path)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _changed(before: dict, after: dict, part: str) -> bool:
    keys = [k for k in before if part in k]
    assert keys, part
    return any(not np.array_equal(before[k].numpy(), after[k].numpy()) for k in keys)


def test_caption_set_is_seeded_and_describes_the_drawn_scene(tmp_path):
    a, b = caption_set(20, seed=3), caption_set(20, seed=3)
    assert [c for _, c in a] == [c for _, c in b]
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for (x, _), (y, _) in zip(a, b))
    assert [c for _, c in caption_set(20, seed=4)] != [c for _, c in a]
    objects = [(im, c) for im, c in a if " on a " in c]
    assert objects and all(any(s in c for s in SHAPES) for _, c in objects)
    plain = [(im, c) for im, c in caption_set(60, seed=3) if c.endswith(" image")]
    assert plain and all((np.asarray(im) == PALETTE[c.split()[1]]).all() for im, c in plain)
    pool = generate_pool(tmp_path / "pool", n=20, n_eval=0, seed=3)
    from PIL import Image

    pool_images = {Image.open(p).tobytes() for p in pool.image_root.rglob("*.png")}
    assert not pool_images & {im.tobytes() for im, c in a if " on a " in c or "panels" in c}


def test_alignment_off_adds_no_words():
    assert caption_texts(ModelConfig()) == []
    words = caption_texts(ModelConfig(align_steps=1, **TINY))
    assert words[0] == CAPTION_PROMPT and len(words) == 13


def test_alignment_trains_vision_and_projector_deterministically(tmp_path):
    cfg = ModelConfig(align_steps=3, **TINY)
    one = _state(build_tiny_model(TEXTS, cfg, tmp_path / "a"))
    two = _state(build_tiny_model(TEXTS, cfg, tmp_path / "b"))
    assert one.keys() == two.keys() and all(np.array_equal(one[k].numpy(), two[k].numpy()) for k in one)
    other = _state(build_tiny_model(TEXTS, cfg.model_copy(update={"init_seed": 1}), tmp_path / "c"))
    assert _changed(one, other, "multi_modal_projector")


@pytest.mark.parametrize("train, language_model_changes", [("vision_projector", False), ("all", True)])
def test_alignment_trains_what_align_train_names(tmp_path, train, language_model_changes):
    from transformers import LlavaForConditionalGeneration

    from progress_core.model.loading import load_processor

    cfg = ModelConfig(align_steps=2, align_train=train, **TINY)
    # A start built with the caption words in its vocabulary, then aligned in place.
    path = build_tiny_model([*TEXTS, *caption_texts(cfg)], ModelConfig(), tmp_path / "start")
    before = _state(path)
    model = LlavaForConditionalGeneration.from_pretrained(path)
    losses = align_tiny_model(model, load_processor(path), cfg)
    after = {k: v.detach() for k, v in model.state_dict().items()}
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert _changed(before, after, "vision_tower") and _changed(before, after, "multi_modal_projector")
    assert _changed(before, after, "language_model") is language_model_changes
    assert all(p.requires_grad for p in model.parameters()) and not model.training


def test_init_stage_rebuilds_when_alignment_changes(tmp_path, monkeypatch):
    table = pa.table({"conversations": [json.dumps([{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}])]})
    pq.write_table(table, tmp_path / "manifest.parquet")
    manifest = StageRecord(
        stage="manifest",
        out_dir=str(tmp_path),
        files={"manifest": str(tmp_path / "manifest.parquet")},
        rows={"manifest": 1},
        content_hash="m",
    )
    built: list[int] = []

    def build(texts, cfg, out_dir):
        built.append(cfg.align_steps)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "weights.bin").write_bytes(bytes([cfg.align_steps]))
        return Path(out_dir)

    monkeypatch.setattr(training_mod, "build_tiny_model", build)
    out = str(tmp_path / "model_init")
    plain = init_model_stage.fn(manifest=manifest, settings=ModelConfig(), out_dir=out)
    aligned = init_model_stage.fn(manifest=manifest, settings=ModelConfig(align_steps=5), out_dir=out)
    again = init_model_stage.fn(manifest=manifest, settings=ModelConfig(align_steps=5), out_dir=out)
    assert plain.key != aligned.key == again.key
    assert built == [0, 5]
