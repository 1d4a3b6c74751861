"""Which LLaVA to train and probe (docs/algorithm.md#training)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from progress_core.errors import ConfigError

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


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
    image_size: int = Field(32, ge=4, description="tiny: input image side in pixels")
    patch_size: int = Field(
        4, ge=1, description="tiny: ViT patch side; 4 gives 64 image tokens at 32 px (small objects need it)"
    )
    vision_hidden_size: int = Field(64, ge=1, description="tiny: vision tower width")
    vision_layers: int = Field(2, ge=1, description="tiny: vision tower depth")
    vision_heads: int = Field(4, ge=1, description="tiny: vision attention heads")
    text_hidden_size: int = Field(128, ge=1, description="tiny: language model width")
    text_layers: int = Field(2, ge=1, description="tiny: language model depth")
    text_heads: int = Field(4, ge=1, description="tiny: language model attention heads")
    max_position_embeddings: int = Field(512, ge=16, description="tiny: longest sequence in tokens")
    max_vocab: int = Field(20000, ge=8, description="tiny: keep at most this many pool words (most frequent first)")
    init_seed: int = Field(0, ge=0, description="tiny: seed of the random initialisation (and of the stage-1 captions)")
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
    lora_r: int = Field(128, ge=1, description="LoRA rank (LLaVA-1.5: 128)")
    lora_alpha: int = Field(256, gt=0, description="LoRA alpha (LLaVA-1.5: 256)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout (LLaVA-1.5: 0.05)")
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
