"""The paper's starting model: LLaVA-1.5 after stage 1, assembled from its three parts (PROGRESS §4.1).

PROGRESS fine-tunes from the stage-1 checkpoint of LLaVA-1.5, not from the released LLaVA-1.5 (which has
already seen all of LLaVA-665K): the language model ``lmsys/vicuna-7b-v1.5``, the vision tower
``openai/clip-vit-large-patch14-336`` (penultimate layer, 336 px, 576 patch features) and the pretrained
``mlp2x_gelu`` projector ``mm_projector.bin`` of ``liuhaotian/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5``.
:func:`assemble_llava` joins them into one HF ``LlavaForConditionalGeneration`` directory (projector keys
``model.mm_projector.0/2.*`` -> ``multi_modal_projector.linear_1/2.*``), with the Vicuna v1 conversation
format, so training and probing load it like any other LLaVA (``docs/algorithm.md#training``).

Each part is a hub name (read from the local HF cache: nothing downloads at run time) or a local path.
:func:`base_model_path` assembles once into a cache folder keyed by the parts and reuses it afterwards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from progress_core.file_lock import exclusive
from progress_core.model.checkpoint import ModelError, save_model_dir
from progress_core.model.config import ModelConfig
from progress_core.model.prompt import IMAGE_TOKEN, VICUNA_V1_CHAT_TEMPLATE

log = logging.getLogger(__name__)

PROJECTOR_FILE = "mm_projector.bin"
PROJECTOR_KEYS = {
    "model.mm_projector.0.weight": "linear_1.weight",
    "model.mm_projector.0.bias": "linear_1.bias",
    "model.mm_projector.2.weight": "linear_2.weight",
    "model.mm_projector.2.bias": "linear_2.bias",
}
ASSEMBLY_FILE = "assembled_from.json"


def cache_root() -> Path:
    """``$PROGRESS_MODEL_CACHE``, else ``$HF_HOME/progress-assembled``, else ``~/.cache/progress-flows``."""
    if os.environ.get("PROGRESS_MODEL_CACHE"):
        return Path(os.environ["PROGRESS_MODEL_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "progress-assembled"
    return Path.home() / ".cache" / "progress-flows" / "assembled"


def _part_id(name: str) -> str:
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def assembly_key(cfg: ModelConfig) -> str:
    """A short hash of the three parts and the settings that change the assembled weights."""
    parts = {
        "language_model": _part_id(cfg.language_model or ""),
        "vision_tower": _part_id(cfg.vision_tower or ""),
        "mm_projector": _part_id(cfg.mm_projector or ""),
        "vision_feature_layer": cfg.vision_feature_layer,
        "dtype": str(cfg.torch_dtype()),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def base_model_path(cfg: ModelConfig) -> str:
    """The model a new run starts from: the assembled stage-1 LLaVA when parts are named, else ``base_model``.

    The ranks of a launched job all ask at once: one assembles (under a lock beside the cache folder), the
    others wait and then load what it wrote.
    """
    if not cfg.assembles():
        return cfg.base_model
    out = cache_root() / assembly_key(cfg)
    if not (out / ASSEMBLY_FILE).is_file():
        with exclusive(out.with_name(f".{out.name}.lock"), f"the assembled model {out}"):
            if not (out / ASSEMBLY_FILE).is_file():
                assemble_llava(cfg, out)
    return str(out)


def projector_file(name: str) -> Path:
    """``mm_projector.bin`` from a file path, a folder holding it, or a hub repo in the local HF cache."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        if (path / PROJECTOR_FILE).is_file():
            return path / PROJECTOR_FILE
        raise ModelError(f"no {PROJECTOR_FILE} in {path}")
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(name, PROJECTOR_FILE))
    except Exception as exc:  # noqa: BLE001  (hub errors differ by version; all mean "not available")
        raise ModelError(f"cannot find {PROJECTOR_FILE} of {name!r} locally or in the HF cache: {exc}") from exc


def projector_state_dict(name: str) -> dict:
    """The stage-1 projector's tensors under HF LLaVA names (``linear_1/2.weight/bias``)."""
    import torch

    path = projector_file(name)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot read projector weights {path}: {exc}") from exc
    missing = sorted(set(PROJECTOR_KEYS) - set(raw))
    if missing:
        raise ModelError(f"{path} lacks projector keys {missing} (has {sorted(raw)[:6]})")
    return {new: raw[old] for old, new in PROJECTOR_KEYS.items()}


def _tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, use_fast=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the language model's tokenizer from {name}: {exc}") from exc
    if IMAGE_TOKEN not in tok.get_vocab():
        tok.add_tokens([IMAGE_TOKEN], special_tokens=True)
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token  # LLaVA's v1 recipe pads with <unk>
    tok.padding_side = "left"
    return tok


def assemble_llava(cfg: ModelConfig, out_dir: str | os.PathLike) -> Path:
    """Join language model, CLIP vision tower and stage-1 projector into one HF LLaVA dir at ``out_dir``.

    The projector weights are copied unchanged; the tokenizer gains one ``<image>`` token (embedding rows
    padded to a multiple of 64, new rows initialised as HF does). Raises :class:`ModelError` when a part
    cannot be read or the projector does not fit the two models' widths.
    """
    if not cfg.assembles():
        raise ModelError("assembly needs language_model, vision_tower and mm_projector")
    dtype = cfg.torch_dtype()
    log.info("assembling LLaVA from %s + %s + %s", cfg.language_model, cfg.vision_tower, cfg.mm_projector)
    projector = projector_state_dict(cfg.mm_projector)
    tokenizer = _tokenizer(cfg.language_model)
    vision_cfg, text_cfg, vision, llm, image_processor = _load_parts(cfg, dtype)
    _check_projector_fits(projector, vision_cfg, text_cfg)
    if len(tokenizer) > llm.get_input_embeddings().weight.shape[0]:
        llm.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    n_patches = (vision_cfg.image_size // vision_cfg.patch_size) ** 2
    model = _joined_model(cfg, vision_cfg, vision, llm, projector, tokenizer, n_patches)
    processor = _processor(image_processor, tokenizer, vision_cfg.patch_size)
    record = {
        "language_model": cfg.language_model,
        "vision_tower": cfg.vision_tower,
        "mm_projector": cfg.mm_projector,
        "vision_feature_layer": cfg.vision_feature_layer,
        "image_tokens": n_patches,
        "conversation": "vicuna_v1",
    }
    return save_model_dir(model, processor, out_dir, {ASSEMBLY_FILE: json.dumps(record, indent=1).encode()})


def _load_parts(cfg: ModelConfig, dtype) -> tuple:
    """``(vision config, language config, vision tower, language model, image processor)`` from the named parts."""
    from transformers import AutoConfig, AutoModelForCausalLM, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    try:
        vision_cfg = CLIPVisionConfig.from_pretrained(cfg.vision_tower)
        text_cfg = AutoConfig.from_pretrained(cfg.language_model)
        vision = CLIPVisionModel.from_pretrained(cfg.vision_tower, dtype=dtype)
        llm = AutoModelForCausalLM.from_pretrained(cfg.language_model, dtype=dtype)
        image_processor = CLIPImageProcessor.from_pretrained(cfg.vision_tower)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load a part of the LLaVA assembly: {exc}") from exc
    return vision_cfg, text_cfg, vision, llm, image_processor


def _check_projector_fits(projector: dict, vision_cfg, text_cfg) -> None:
    """The stage-1 projector maps vision width to language width (PROGRESS §4.1: parts of one LLaVA-1.5)."""
    want = {
        "linear_1.weight": (text_cfg.hidden_size, vision_cfg.hidden_size),
        "linear_2.weight": (text_cfg.hidden_size, text_cfg.hidden_size),
    }
    for key, shape in want.items():
        if tuple(projector[key].shape) != shape:
            raise ModelError(
                f"projector {key} has shape {tuple(projector[key].shape)}, the models need {shape} "
                f"(vision width {vision_cfg.hidden_size}, language width {text_cfg.hidden_size})"
            )


def _joined_model(cfg: ModelConfig, vision_cfg, vision, llm, projector: dict, tokenizer, n_patches: int):
    """A ``LlavaForConditionalGeneration`` built on the meta device, then given the loaded parts' own modules.

    Only the projector is materialised here (from the stage-1 weights), so no part is initialised twice.
    """
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    dtype = cfg.torch_dtype()
    config = LlavaConfig(
        vision_config=vision_cfg,
        text_config=llm.config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=n_patches,
        vision_feature_select_strategy="default",
        vision_feature_layer=cfg.vision_feature_layer,
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
    )
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = vision
    model.model.language_model = llm.get_decoder()
    model.lm_head = llm.get_output_embeddings()
    model.model.multi_modal_projector.to_empty(device="cpu")
    model.model.multi_modal_projector.load_state_dict({k: v.to(dtype) for k, v in projector.items()})
    model.to(dtype)
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        raise ModelError(f"assembly left parameters unset: {left[:5]}")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def _processor(image_processor, tokenizer, patch_size: int):
    """The LLaVA processor in the Vicuna v1 conversation format (``docs/algorithm.md#training``)."""
    from transformers import LlavaProcessor

    image_processor.do_center_crop = True
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=VICUNA_V1_CHAT_TEMPLATE,
    )
