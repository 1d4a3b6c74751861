"""The LLaVA model that PROGRESS trains and probes, in two modes (docs/architecture.md#the-bundled-demo, docs/algorithm.md#training).

*real*: a LLaVA checkpoint by hub name or local path (``llava-hf/llava-1.5-7b-hf``), or the paper's stage-1
LLaVA assembled from language model, vision tower and projector (:mod:`progress_core.llava_assembly`),
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

import collections
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from progress_core.errors import ConfigError, ProgressError

log = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
USER_TAG, ASSISTANT_TAG = "USER:", "ASSISTANT:"
IGNORE_INDEX = -100

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
VICUNA_V1_CHAT_TEMPLATE = '{{ "' + VICUNA_V1_SYSTEM + ' " }}' + CHAT_TEMPLATE


class ModelError(ProgressError):
    """A model or processor cannot be built or loaded from the given path or config."""


class ModelConfig(BaseModel):
    """Which LLaVA to train (docs/algorithm.md#training for real mode, docs/architecture.md#the-bundled-demo for the tiny default).

    Tiny defaults (32 px, patch 4, ~0.7M parameters; with TrainingConfig's batch 16 and lr 1e-3) on the
    bundled 3000-sample pool (benchmarks/bench_training.py): whole-image colour is learned by step ~200,
    object colour by ~350, while shape, count, tables and the random-answer concept stay near chance
    through step 600; ~11 steps/s on 2 CPU threads.
    """

    mode: Literal["tiny", "real"] = Field("tiny", description="tiny: small local LLaVA; real: LLaVA checkpoint + LoRA")
    base_model: str = Field(
        "llava-hf/llava-1.5-7b-hf",
        description="real mode: hub name or local path of the LLaVA checkpoint (unused when the parts below are set)",
    )
    language_model: str | None = Field(
        None, description="real mode: assemble from this LLM (paper: lmsys/vicuna-7b-v1.5), name or local path"
    )
    vision_tower: str | None = Field(
        None, description="real mode: CLIP vision tower of the assembly (paper: openai/clip-vit-large-patch14-336)"
    )
    mm_projector: str | None = Field(
        None,
        description="real mode: stage-1 mm_projector.bin, its folder or hub repo "
        "(paper: liuhaotian/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5)",
    )
    vision_feature_layer: int = Field(-2, description="assembly: vision layer fed to the projector (LLaVA-1.5: -2)")
    conversation: Literal["auto", "plain", "vicuna_v1"] = Field(
        "auto", description="prompt format; auto = vicuna_v1 (system prompt + USER/ASSISTANT) in real mode"
    )
    image_size: int = Field(32, description="tiny: input image side in pixels")
    patch_size: int = Field(
        4, description="tiny: ViT patch side; 4 gives 64 image tokens at 32 px (small objects need it)"
    )
    vision_hidden_size: int = Field(64, description="tiny: vision tower width")
    vision_layers: int = Field(2, description="tiny: vision tower depth")
    vision_heads: int = Field(4, description="tiny: vision attention heads")
    text_hidden_size: int = Field(128, description="tiny: language model width")
    text_layers: int = Field(2, description="tiny: language model depth")
    text_heads: int = Field(4, description="tiny: language model attention heads")
    max_position_embeddings: int = Field(512, description="tiny: longest sequence in tokens")
    max_vocab: int = Field(20000, description="tiny: keep at most this many pool words (most frequent first)")
    init_seed: int = Field(0, description="tiny: seed of the random initialisation (and of the stage-1 captions)")
    align_steps: int = Field(
        0,
        ge=0,
        description="tiny: stage-1 alignment steps on synthetic captions before any selection (0: random start)",
    )
    align_train: Literal["all", "vision_projector"] = Field(
        "all",
        description="tiny: what stage-1 alignment trains; vision_projector freezes the language model (LLaVA-1.5)",
    )
    align_batch_size: int = Field(16, ge=1, description="tiny: captions per stage-1 alignment step")
    align_lr: float = Field(1e-3, gt=0, description="tiny: stage-1 alignment learning rate (cosine decay)")
    align_captions: int = Field(
        2000, ge=1, description="tiny: distinct synthetic captions stage-1 alignment draws from"
    )
    lora: bool | None = Field(None, description="wrap the language model with LoRA; default: on in real mode")
    lora_r: int = Field(128, description="LoRA rank (LLaVA-1.5: 128)")
    lora_alpha: int = Field(256, description="LoRA alpha (LLaVA-1.5: 256)")
    lora_dropout: float = Field(0.05, description="LoRA dropout (LLaVA-1.5: 0.05)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype; auto = bfloat16 in real mode, float32 in tiny mode"
    )
    gradient_checkpointing: bool | None = Field(
        None, description="recompute activations to save memory; default: on in real mode (LLaVA-1.5 recipe)"
    )
    image_aspect_ratio: Literal["auto", "pad", "crop"] = Field(
        "auto",
        description="non-square images: pad to a square of the processor's mean colour (LLaVA-1.5) or centre-crop; "
        "auto = pad in real mode, crop in tiny mode",
    )

    def assembles(self) -> bool:
        """True when the starting model is assembled from language model, vision tower and projector."""
        parts = (self.language_model, self.vision_tower, self.mm_projector)
        if any(parts) and not all(parts):
            raise ConfigError("language_model, vision_tower and mm_projector must be given together")
        return self.mode == "real" and all(parts)

    def system_prompt(self) -> str | None:
        """The Vicuna v1 system prompt LLaVA-1.5 trains with, or None for the plain USER/ASSISTANT format."""
        fmt = self.conversation if self.conversation != "auto" else ("vicuna_v1" if self.mode == "real" else "plain")
        return VICUNA_V1_SYSTEM if fmt == "vicuna_v1" else None

    def use_lora(self) -> bool:
        return self.mode == "real" if self.lora is None else self.lora

    def use_gradient_checkpointing(self) -> bool:
        return self.mode == "real" if self.gradient_checkpointing is None else self.gradient_checkpointing

    def aspect_ratio(self) -> str:
        """``pad`` or ``crop``: how non-square images become the vision tower's square."""
        if self.image_aspect_ratio != "auto":
            return self.image_aspect_ratio
        return "pad" if self.mode == "real" else "crop"

    def torch_dtype(self):
        import torch

        name = self.dtype if self.dtype != "auto" else ("bfloat16" if self.mode == "real" else "float32")
        return getattr(torch, name)


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
    (:mod:`progress_core.alignment`, PROGRESS §4.1), whose words join the vocabulary.

    ``texts`` are the pool's turn strings or its manifest ``conversations`` JSON strings (for the
    vocabulary). The directory is written
    beside ``out_dir`` and renamed into place, so a crash leaves no half-saved model.
    """
    import torch
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    if cfg.image_size % cfg.patch_size:
        raise ConfigError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
    from progress_core.alignment import align_tiny_model, caption_texts

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


def save_model_dir(model, processor, out_dir: str | os.PathLike, extra_files: dict[str, bytes] | None = None) -> Path:
    """Save model + processor (+ extra files) to a temp dir and atomically rename it onto ``out_dir``."""
    import shutil
    import tempfile

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def is_adapter_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a peft adapter (real-mode checkpoint) rather than full weights."""
    return (Path(path) / "adapter_config.json").is_file()


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

    from progress_core.llava_assembly import base_model_path

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


def image_token_count(processor) -> int:
    """Image placeholder tokens per image, exactly as ``LlavaProcessor`` expands ``<image>``."""
    crop = processor.image_processor.crop_size
    n = (crop["height"] // processor.patch_size) * (crop["width"] // processor.patch_size)
    n += processor.num_additional_image_tokens
    if processor.vision_feature_select_strategy == "default":
        n -= 1
    return n


def _encode_text(tokenizer, text: str, image_id: int, n_image_tokens: int) -> list[int]:
    pieces = text.split(IMAGE_TOKEN)
    ids: list[int] = []
    for i, piece in enumerate(pieces):
        if i:
            ids.extend([image_id] * n_image_tokens)
        if piece.strip():
            ids.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
    return ids


def normalise_turns(conversations: Sequence[dict], has_image: bool) -> list[tuple[str, str | None]]:
    """(human, gpt) pairs of a LLaVA conversation; ``<image>`` put first in turn 1 iff there is an image.

    LLaVA's preprocessing moves the image tag to the start of the first human turn; a text-only row keeps
    no tag, so its batch needs no pixel values for it.
    """
    pairs: list[tuple[str, str | None]] = []
    human: str | None = None
    for turn in conversations:
        who = turn.get("from")
        value = str(turn.get("value", ""))
        if who in ("human", "user"):
            human = value.replace(IMAGE_TOKEN, "").strip()
        elif who in ("gpt", "assistant") and human is not None:
            pairs.append((human, value.strip()))
            human = None
    if human is not None:
        pairs.append((human, None))
    if pairs and has_image:
        pairs[0] = (f"{IMAGE_TOKEN}\n{pairs[0][0]}", pairs[0][1])
    return pairs


def encode_conversation(
    tokenizer,
    pairs: Sequence[tuple[str, str | None]],
    n_image_tokens: int,
    image_id: int,
    prompt_only: bool = False,
    system: str | None = None,
) -> tuple[list[int], list[int]]:
    """Token ids and labels for ``[system ]USER: q ASSISTANT: a</s>`` rounds; labels only on answers + EOS.

    LLaVA trains every round of the conversation and masks the human side (``docs/algorithm.md#training``);
    ``system`` (the Vicuna v1 system prompt in real mode) opens the first round, masked too. With
    ``prompt_only`` the first human turn is rendered with a trailing ``ASSISTANT:`` for generation
    (``docs/algorithm.md#probe-and-judge``: the probe answers the first human turn).
    """
    ids = [tokenizer.bos_token_id]
    labels = [IGNORE_INDEX]
    for turn, (human, answer) in enumerate(pairs):
        opening = f"{system} " if system and turn == 0 else ""
        prompt = _encode_text(tokenizer, f"{opening}{USER_TAG} {human} {ASSISTANT_TAG}", image_id, n_image_tokens)
        ids.extend(prompt)
        labels.extend([IGNORE_INDEX] * len(prompt))
        if prompt_only:
            break
        if answer is None:
            continue
        reply = tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids.extend(reply)
        labels.extend(reply)
    return ids, labels
