"""Stage-1 vision-language alignment of the tiny starting model (PROGRESS §4.1, docs/algorithm.md#training).

PROGRESS selects instruction data for a model that has already been through LLaVA-1.5's stage 1: the
projector was pretrained on image-caption pairs, so image features mean something to the language model
before the first selected sample is seen. The tiny demo model starts from random weights; without this
stage it learns nothing visual for the first thousand or so samples, and selection has no signal to
follow.

:func:`align_tiny_model` is that stage at tiny size: captioning of synthetic scenes drawn from their own
generator stream (:func:`progress_core.data.captions.caption_set`, never pool or eval images), seeded by
``init_seed``, run once when the initial model is built, so every strategy of a seed starts from the same
aligned weights. What trains (``ModelConfig.align_train``):

- ``vision_projector``: LLaVA-1.5's stage-1 recipe (the language model frozen) extended to the vision
  tower, because our vision tower is random rather than a pretrained CLIP;
- ``all`` (default): vision tower, projector and language model. Our language model is random too (LLaVA
  starts from a pretrained Vicuna), and a frozen random language model cannot learn to emit caption words,
  so stage 1 here also teaches it the vocabulary it has to speak.
"""

from __future__ import annotations

import logging

import numpy as np

from progress_core.data.captions import caption_set
from progress_core.model.config import ModelConfig
from progress_core.model.prompt import encode_conversation, image_token_count, normalise_turns

log = logging.getLogger(__name__)

CAPTION_PROMPT = "Describe the image briefly."


def caption_texts(cfg: ModelConfig) -> list[str]:
    """The words alignment speaks (prompt and captions), for the tokenizer's vocabulary; empty when off."""
    if cfg.align_steps <= 0:
        return []
    return [CAPTION_PROMPT] + [c for _, c in caption_set(cfg.align_captions, cfg.init_seed, cfg.image_size)]


def _frozen_language_model(model) -> None:
    for name, p in model.named_parameters():
        if not ("vision_tower" in name or "multi_modal_projector" in name):
            p.requires_grad_(False)


def align_tiny_model(model, processor, cfg: ModelConfig) -> list[float]:
    """Train ``model`` in place for ``cfg.align_steps`` caption steps; return the loss of each step.

    Batches of ``cfg.align_batch_size`` captions are drawn by a generator seeded with ``init_seed``;
    AdamW at ``cfg.align_lr`` with a cosine decay over the steps. Deterministic for a seed on one thread
    count. Every batch is padded to the longest caption: one tensor shape keeps CPU kernels warm. Afterwards every parameter is trainable again and the model is in eval mode.
    """
    import torch
    from transformers import get_cosine_schedule_with_warmup

    if cfg.align_steps <= 0:
        return []
    pairs = caption_set(cfg.align_captions, cfg.init_seed, cfg.image_size)
    encoded = _encoded_captions([caption for _, caption in pairs], processor, model.config.image_token_index)
    pixels = processor.image_processor([im for im, _ in pairs], return_tensors="pt")["pixel_values"]

    if cfg.align_train == "vision_projector":
        _frozen_language_model(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.align_lr, weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, cfg.align_steps // 20), cfg.align_steps)
    rng = np.random.default_rng([cfg.init_seed, 1])
    torch.manual_seed(cfg.init_seed)
    pad = processor.tokenizer.pad_token_id
    width = max(len(ids) for ids, _ in encoded)
    model.train()
    losses = []
    for _ in range(cfg.align_steps):
        rows = rng.choice(len(encoded), size=min(cfg.align_batch_size, len(encoded)), replace=False)
        ids, labels, mask = _caption_batch([encoded[r] for r in rows], width, pad)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels, pixel_values=pixels[rows]).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    log.info(
        "stage-1 alignment: %d steps on %d captions, loss %.3f -> %.3f",
        cfg.align_steps,
        len(pairs),
        losses[0],
        losses[-1],
    )
    return losses


def _encoded_captions(captions: list[str], processor, image_id: int) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) of each caption as an answer to :data:`CAPTION_PROMPT` about one image."""
    n_image = image_token_count(processor)
    encoded = []
    for caption in captions:
        turns = normalise_turns([{"from": "human", "value": CAPTION_PROMPT}, {"from": "gpt", "value": caption}], True)
        encoded.append(encode_conversation(processor.tokenizer, turns, n_image, image_id))
    return encoded


def _caption_batch(encoded: list[tuple[list[int], list[int]]], width: int, pad: int):
    """(input ids, labels, attention mask) of the captions, right-padded to ``width`` tokens."""
    import torch

    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(encoded):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        labels[i, : len(row_ids)] = torch.tensor(row_labels)
        mask[i, : len(row_ids)] = 1
    return ids, labels, mask
