"""The tiny LLaVA of the embedded default (docs/architecture.md#the-bundled-demo)."""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Iterable
from pathlib import Path

from progress_core.errors import ConfigError
from progress_core.model.alignment import align_tiny_model, caption_texts
from progress_core.model.checkpoint import save_model_dir
from progress_core.model.config import ModelConfig
from progress_core.model.prompt import ASSISTANT_TAG, CHAT_TEMPLATE, IMAGE_TOKEN, USER_TAG

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"


def _turn_values(text: str) -> list[str]:
    """The turn texts of a manifest ``conversations`` JSON string; other text is returned as is."""
    if text.lstrip().startswith("["):
        try:
            turns = json.loads(text)
        except json.JSONDecodeError:
            return [text]
        if isinstance(turns, list) and all(isinstance(t, dict) for t in turns):
            return [str(t.get("value", "")) for t in turns]
    return [text]


def _word_counts(texts: Iterable[str]) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for text in texts:
        if text:
            for value in _turn_values(str(text)):
                counts.update(value.replace(IMAGE_TOKEN, " ").split())
    return counts


def build_word_tokenizer(texts: Iterable[str], max_vocab: int = 20000):
    """A word-level fast tokenizer over the pool's whitespace-separated words (docs/architecture.md#the-bundled-demo).

    ``texts`` may be plain strings or manifest ``conversations`` JSON strings (their turn values count).

    ``WhitespaceSplit`` keeps ``USER:`` one token; ``<image>`` is a special token so the processor's
    expanded ``<image><image>...`` splits into one id per image feature; a post-processor adds BOS.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, UNK, BOS, EOS, IMAGE_TOKEN]
    counts = _word_counts(texts)
    for tag in (USER_TAG, ASSISTANT_TAG):
        counts[tag] += 1 << 30
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if w not in specials]
    vocab = {tok: i for i, tok in enumerate(specials + words[: max(0, max_vocab - len(specials))])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",
    )


def _image_processor(image_size: int):
    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers
        from transformers import CLIPImageProcessor as ImageProcessor
    return ImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=True,
    )


def build_tiny_model(texts: Iterable[str], cfg: ModelConfig, out_dir: str | os.PathLike) -> Path:
    """Build, randomly initialise, optionally align (stage 1) and save the tiny LLaVA + processor as an HF directory.

    With ``cfg.align_steps`` > 0 the random model is first trained on synthetic captions
    (:mod:`progress_core.model.alignment`, PROGRESS §4.1), whose words join the vocabulary.

    ``texts`` are the pool's turn strings or its manifest ``conversations`` JSON strings (for the
    vocabulary). The directory is written
    beside ``out_dir`` and renamed into place, so a crash leaves no half-saved model.
    """
    import torch
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    if cfg.image_size % cfg.patch_size:
        raise ConfigError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
    tokenizer = build_word_tokenizer([*texts, *caption_texts(cfg)], cfg.max_vocab)
    config = _tiny_llava_config(cfg, tokenizer)
    torch.manual_seed(cfg.init_seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    processor = LlavaProcessor(
        image_processor=_image_processor(cfg.image_size),
        tokenizer=tokenizer,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    align_tiny_model(model, processor, cfg)
    out = Path(out_dir)
    save_model_dir(model, processor, out)
    return out


def _tiny_llava_config(cfg: ModelConfig, tokenizer):
    """The tiny LLaVA architecture: a CLIP-style vision tower and a Llama language model sized by ``cfg``,
    with the tokenizer's vocabulary and special ids (docs/architecture.md#the-bundled-demo)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_size=cfg.vision_hidden_size,
        intermediate_size=4 * cfg.vision_hidden_size,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        projection_dim=cfg.vision_hidden_size,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden_size,
        intermediate_size=4 * cfg.text_hidden_size,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        num_key_value_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(cfg.image_size // cfg.patch_size) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
