"""Configuration of the k-means and warm-up-pool stages (docs/algorithm.md#concept-clustering)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from progress_core.base import StrictModel


class PruningSettings(StrictModel):
    """What COINCIDE's cluster-wise pruning reads (docs/algorithm.md#warm-up-pools); the ``coincide`` baseline's
    order stage gets only these, so the warm-up fractions do not enter its key."""

    temperature: float = Field(0.1, gt=0, description="Softmax temperature over transfer/density scores.")
    sigma: float = Field(1.0, gt=0, description="Gaussian kernel width of the density and MMD greedy.")


class WarmupConfig(PruningSettings):
    """COINCIDE warm-up pools (docs/algorithm.md#warm-up-pools): W1 = fraction[0] of the pool, W2 = fraction[1] minus W1."""

    fractions: tuple[float, float] = Field((0.075, 0.09), description="Pool fractions of the two warm-up stops.")

    def pruning_settings(self) -> PruningSettings:
        return PruningSettings.model_validate(self.model_dump(include=set(PruningSettings.model_fields)))

    @model_validator(mode="after")
    def _ordered(self) -> WarmupConfig:
        lo, hi = self.fractions
        if not (0 < lo <= hi < 1):
            raise ValueError(f"fractions must satisfy 0 < first <= second < 1, got {self.fractions}")
        return self


class KMeansSettings(BaseModel):
    """What one k-means run reads besides ``k`` (docs/algorithm.md#concept-clustering); each k-means stage gets
    only these, so the other clustering's ``k`` does not enter its key."""

    niter: int = Field(50, ge=1, description="k-means iterations (original: 50)")
    seed: int = Field(1234, description="faiss k-means seed (original: 1234)")
    max_points_per_centroid: int = Field(
        256, ge=1, description="faiss trains on at most k * this many sampled points (faiss default 256)"
    )
    spherical: bool = Field(True, description="re-normalise centroids each iteration (cosine k-means, original)")
    use_gpu: bool | Literal["auto"] = Field(
        "auto",
        description="auto = GPU when faiss was built with GPUs, sees one and has kernels for it (compute "
        "capability 7.0-8.9); true = GPU whenever faiss sees one; any CUDA error falls back to the CPU",
    )


class ClusteringConfig(KMeansSettings):
    """Parameters of the two k-means runs (docs/algorithm.md#concept-clustering); defaults are the original's."""

    annotation_k: int | None = Field(
        None,
        ge=1,
        description="centres of the annotation clustering; empty = pool_scale.annotation_k scaled to the pool",
    )
    selection_k: int | None = Field(
        None, ge=1, description="centres of the selection clustering; empty = pool_scale.selection_k scaled to the pool"
    )

    def kmeans_settings(self) -> KMeansSettings:
        return KMeansSettings.model_validate(self.model_dump(include=set(KMeansSettings.model_fields)))
