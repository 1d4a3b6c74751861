"""The LLaVA model that PROGRESS trains and probes, in two modes (docs/architecture.md#the-bundled-demo, docs/algorithm.md#training).

*real*: a LLaVA checkpoint by hub name or local path (``llava-hf/llava-1.5-7b-hf``), or the paper's stage-1
LLaVA assembled from language model, vision tower and projector (:mod:`progress_core.model.assembly`),
wrapped with a peft LoRA adapter following the LLaVA-1.5 recipe (r 128, alpha 256 on the language model's
linear layers; the projector fully trainable with its own learning rate), bf16, Vicuna v1 prompts.

*tiny* (the embedded default): the same ``transformers`` LLaVA classes with a small config (CLIP-style
vision tower, Llama-style language model, ~1M parameters, 32 px images) and a word-level tokenizer built
locally with the ``tokenizers`` library from the pool's text. Both are saved with ``save_pretrained``, so
every checkpoint is a plain HF directory that ``LlavaForConditionalGeneration.from_pretrained`` and
``AutoProcessor.from_pretrained`` load offline.

Conversations are rendered in the vicuna-v1 style LLaVA-1.5 uses: ``USER: <image>\\n{q} ASSISTANT: {a}</s>``;
:func:`encode_conversation` is the one place the training and probing token layout is defined.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from progress_core.model.assembly import base_model_path
from progress_core.model.checkpoint import ModelError, is_adapter_dir
from progress_core.model.config import ModelConfig

log = logging.getLogger(__name__)


def load_processor(path_or_name: str | os.PathLike):
    """Load the LLaVA processor saved beside a checkpoint (tokenizer padding on the left for generation)."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(str(path_or_name))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load a processor from {path_or_name}: {exc}") from exc
    processor.tokenizer.padding_side = "left"
    return processor


def load_model(path_or_name: str | os.PathLike, cfg: ModelConfig, trainable: bool = True):
    """Load ``(model, processor)`` from a tiny dir, a LLaVA hub name/path, or a LoRA checkpoint dir.

    A LoRA checkpoint (``adapter_config.json`` present) is loaded on top of its base model
    (``cfg.base_model``) with the adapter trainable. A full checkpoint is wrapped with a fresh LoRA
    adapter when ``cfg.use_lora()`` (docs/algorithm.md#training: r 128, alpha 256, projector trained in full).
    """
    from transformers import LlavaForConditionalGeneration

    path = str(path_or_name)
    dtype = cfg.torch_dtype()
    adapter = is_adapter_dir(path)
    base = base_model_path(cfg) if adapter else path
    try:
        model = LlavaForConditionalGeneration.from_pretrained(base, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load a LLaVA model from {base}: {exc}") from exc
    has_processor = any((Path(path) / f).is_file() for f in ("processor_config.json", "preprocessor_config.json"))
    processor = load_processor(path if has_processor or not adapter else base)
    processor.system_prompt = cfg.system_prompt()
    processor.image_aspect_ratio = cfg.aspect_ratio()
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, path, is_trainable=trainable, autocast_adapter_dtype=False)
    elif cfg.use_lora() and trainable:
        import torch

        # The adapter's initialisation depends on init_seed only, not on how the loader used the RNG
        # (loading partitioned under DeepSpeed ZeRO-3 draws differently from a plain load).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.init_seed)
            model = add_lora(model, cfg)
    if trainable:
        check_one_trainable_dtype(model)
    if cfg.use_gradient_checkpointing() and trainable:
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    model.train(trainable)
    return model, processor


def lora_target_modules(model) -> list[str]:
    """Names of the language model's linear layers (LLaVA-1.5 targets every linear of the LLM)."""
    import torch

    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "language_model" in name and "lm_head" not in name:
            names.add(name)
    return sorted(names)


def add_lora(model, cfg: ModelConfig):
    """Wrap with peft LoRA on the language model; the multimodal projector stays fully trainable.

    The adapter keeps the base layers' dtype (``autocast_adapter_dtype=False``): peft would otherwise up-cast it
    to float32 beside a bf16 projector copy, and DeepSpeed ZeRO-3 requires one dtype for all trainable
    parameters (docs/algorithm.md#training: bf16 LoRA, as LLaVA-1.5).
    """
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=lora_target_modules(model),
        modules_to_save=["multi_modal_projector"],
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora, autocast_adapter_dtype=False)


def check_one_trainable_dtype(model) -> None:
    """Refuse a model whose trainable parameters mix dtypes, naming one of each, before any engine sees it
    (DeepSpeed ZeRO-3 flattens them into one buffer and only asserts)."""
    first: dict = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            first.setdefault(p.dtype, name)
    if len(first) > 1:
        kinds = ", ".join(f"{str(dtype).removeprefix('torch.')} ({name})" for dtype, name in first.items())
        raise ModelError(f"trainable parameters mix dtypes: {kinds}")
