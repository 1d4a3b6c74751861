"""Configuration of the data stages: pool and manifest (docs/architecture.md#configuration)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from progress_core.base import StrictModel


class PoolSettings(StrictModel):
    """Where the pool stage takes the pool from: a user's LLaVA JSON or the bundled synthetic generator
    (docs/architecture.md#the-bundled-demo); the pool stage gets only these."""

    pool_json: str | None = Field(
        None, description="LLaVA-format pool JSON; empty = generate the bundled synthetic pool."
    )
    image_root: str | None = Field(None, description="Folder the pool's image paths are relative to.")
    synthetic_n: int = Field(3000, ge=50, description="Synthetic pool size (training pool).")
    synthetic_n_eval: int = Field(600, ge=0, description="Synthetic held-out evaluation split size.")
    synthetic_seed: int = Field(0, ge=0, description="Seed of the synthetic pool generator.")
    headroom: Literal["none", "default"] = Field(
        "none",
        description="Bundled pool only: none = the balanced i.i.d. pool; default = the headroom pool (skewed "
        'mix, label noise, near-duplicates, an already-known family; README "Headroom pool").',
    )


class DataConfig(PoolSettings):
    """Where the instruction pool comes from (docs/architecture.md#the-bundled-demo: the bundled synthetic pool by default)."""

    manifest_mode: Literal["strict", "skip"] = Field(
        "skip", description="strict: stop at the first malformed row; skip: drop, count and write out bad rows."
    )
    allow_duplicate_ids: bool = Field(
        False, description="Accept rows that repeat an id (rows stay distinct by sample_id); off = DuplicateIdError."
    )
    eval_json: str | None = Field(
        None, description="Held-out LLaVA-format split of a user's pool for `progress compare` (same image_root)."
    )
    holdout_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of a user's pool held out for evaluation by `progress compare` when eval_json is empty.",
    )
    concept_labels: str | None = Field(
        None,
        description="Concepts of a user's pool for `progress compare`: a JSON object {id: concept}, or a CSV / "
        "Parquet table with columns id and concept; empty = concept_field or the image's top folder.",
    )
    concept_field: str | None = Field(
        None,
        description="Concepts of a user's pool for `progress compare` from this key of each JSON row (e.g. "
        "'source'); empty = concept_labels or the image's top folder.",
    )
    hash_images: bool = Field(
        False,
        description="Key the features by the content hashes of the pool's images (slower) instead of their "
        "size and modification time.",
    )

    def pool_settings(self) -> PoolSettings:
        return PoolSettings.model_validate(self.model_dump(include=set(PoolSettings.model_fields)))
