"""Tiny LLaVA: built locally, saved and loaded as a plain HF directory (docs/architecture.md#the-bundled-demo)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from progress_core.model.config import ModelConfig
from progress_core.model.loading import load_model
from progress_core.model.prompt import IGNORE_INDEX, encode_conversation, image_token_count, normalise_turns
from progress_core.model.tiny import build_tiny_model, build_word_tokenizer

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
RANDOM_ANSWERS = ["alpha", "beta", "gamma", "delta"]


def make_pool(root: Path, n: int = 64, seed: int = 0) -> pd.DataFrame:
    """A manifest-like frame: whole-image colour (learnable), random answers (unlearnable), text-only rows.

    Rows follow the manifest schema (conversations is JSON text, image relative to ``root / 'images'``).
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    rows = []
    for i in range(n):
        kind = ("colour", "random", "text")[i % 3]
        if kind == "text":
            a = names[int(rng.integers(4))]
            conv = [{"from": "human", "value": f"Say the word {a} ."}, {"from": "gpt", "value": a}]
            image = None
        else:
            colour = names[int(rng.integers(4))]
            pixels = np.zeros((32, 32, 3), np.uint8) + np.array(COLOURS[colour], np.uint8)
            pixels = np.clip(pixels.astype(int) + rng.integers(-20, 20, pixels.shape), 0, 255).astype(np.uint8)
            image = f"{kind}/{i}.png"
            (img_dir / kind).mkdir(exist_ok=True)
            Image.fromarray(pixels).save(img_dir / image)
            if kind == "colour":
                conv = [
                    {"from": "human", "value": "<image>\nWhat colour is the picture?"},
                    {"from": "gpt", "value": colour},
                    {"from": "human", "value": "Is it bright?"},
                    {"from": "gpt", "value": "yes"},
                ]
            else:
                conv = [
                    {"from": "human", "value": "What code is hidden here?\n<image>"},
                    {"from": "gpt", "value": RANDOM_ANSWERS[int(rng.integers(4))]},
                ]
        rows.append(
            {
                "sample_id": i,
                "id": f"s{i}",
                "image": image,
                "conversations": json.dumps(conv),
                "concept": kind,
                "cluster_id": ("colour", "random", "text").index(kind),
            }
        )
    return pd.DataFrame(rows)


def pool_texts(pool: pd.DataFrame) -> list[str]:
    return [t["value"] for c in pool["conversations"] for t in json.loads(c)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    pool = make_pool(root, n=12)
    model_dir = build_tiny_model(pool_texts(pool), ModelConfig(patch_size=8), root / "init")
    return root, pool, model_dir


def test_tokenizer_is_word_level_with_single_image_token():
    tok = build_word_tokenizer(["USER: <image>\nWhat colour? red", "ASSISTANT: blue"])
    ids = tok("USER: <image><image> What colour?", add_special_tokens=True)["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens == ["<s>", "USER:", "<image>", "<image>", "What", "colour?"]
    assert tok.convert_tokens_to_ids("never-seen") == tok.unk_token_id


def test_checkpoint_round_trips_as_plain_hf_directory(tiny):
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    root, pool, model_dir = tiny
    assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
    model = LlavaForConditionalGeneration.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    image = Image.open(root / "images" / pool.image[0])
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the picture?"}]}],
        add_generation_prompt=True,
    )
    assert text == "USER: <image>\nWhat colour is the picture? ASSISTANT:"
    batch = processor(text=[text + " red"], images=[image], return_tensors="pt")
    assert int((batch["input_ids"] == model.config.image_token_index).sum()) == image_token_count(processor) == 16
    with torch.no_grad():
        loss1 = model(**batch, labels=batch["input_ids"]).loss
    loaded, loaded_proc = load_model(model_dir, ModelConfig())
    loaded.eval()
    with torch.no_grad():
        loss2 = loaded(**batch, labels=batch["input_ids"]).loss
    assert torch.isfinite(loss1) and float(loss1) == pytest.approx(float(loss2), abs=0)
    assert loaded_proc.tokenizer.padding_side == "left"


def test_encoding_masks_human_turns_and_trains_every_answer(tiny):
    root, pool, model_dir = tiny
    _, processor = load_model(model_dir, ModelConfig(), trainable=False)
    tok = processor.tokenizer
    conv = json.loads(pool.conversations[0])
    pairs = normalise_turns(conv, has_image=True)
    ids, labels = encode_conversation(tok, pairs, 16, tok.convert_tokens_to_ids("<image>"))
    trained = [t for t, lab in zip(tok.convert_ids_to_tokens(ids), labels) if lab != IGNORE_INDEX]
    assert trained == [conv[1]["value"], "</s>", "yes", "</s>"]
    assert ids.count(tok.convert_tokens_to_ids("<image>")) == 16
    prompt, _ = encode_conversation(tok, pairs, 16, tok.convert_tokens_to_ids("<image>"), prompt_only=True)
    assert tok.convert_ids_to_tokens(prompt)[-1] == "ASSISTANT:" and len(prompt) < len(ids)
    text_pairs = normalise_turns(
        [{"from": "human", "value": "<image>\nSay red"}, {"from": "gpt", "value": "red"}], False
    )
    assert "<image>" not in text_pairs[0][0]


def test_lora_wraps_language_model_and_keeps_projector_trainable(tiny):
    root, pool, model_dir = tiny
    model, _ = load_model(
        model_dir, ModelConfig(mode="real", base_model=str(model_dir), lora_r=4, lora_alpha=8, dtype="float32")
    )
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n and "language_model" in n for n in trainable)
    assert any("multi_modal_projector" in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)
    assert not any("embed_tokens" in n for n in trainable)


def test_vocabulary_from_manifest_conversation_json_equals_from_turn_texts(tiny):
    root, pool, model_dir = tiny
    from_json = build_word_tokenizer(pool["conversations"].tolist())
    from_turns = build_word_tokenizer(pool_texts(pool))
    assert from_json.get_vocab() == from_turns.get_vocab()
    assert "What" in from_json.get_vocab() and not any('"' in w for w in from_json.get_vocab())
