"""How the accuracy probe samples, generates and judges (docs/algorithm.md#probe-and-judge)."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from progress_core.model.config import ModelConfig


class JudgeConfig(BaseModel):
    """Which judge decides correctness (docs/algorithm.md#probe-and-judge; exact match is the default for short answers)."""

    kind: Literal["exact", "llm"] = Field("exact", description="exact: normalised match; llm: LLM judge")
    backend: Literal["lmdeploy", "transformers"] = Field("lmdeploy", description="LLM judge server")
    model: str = Field("OpenGVLab/InternVL2-26B", description="LLM judge model name or local path")
    engine: Literal["turbomind", "pytorch"] = Field(
        "turbomind", description="lmdeploy engine: turbomind (fastest) or pytorch (more model types)"
    )
    tp: int = Field(1, ge=1, description="lmdeploy tensor-parallel size (number of GPUs)")
    session_len: int = Field(8192, ge=1, description="lmdeploy session length")
    cache_max_entry_count: float = Field(0.5, gt=0, le=1, description="lmdeploy KV cache fraction of GPU memory")
    chat_template: str | None = Field(
        None, description="lmdeploy chat template name; empty = the template lmdeploy matches to the model"
    )
    trust_remote_code: bool = Field(True, description="let the judge model's own code load (InternVL2 needs it)")
    batch_size: int = Field(
        128, ge=1, description="prompts per judge call and engine batch (original: 128 warm-up, 300 loop)"
    )
    max_new_tokens: int = Field(64, ge=1, description="judge output length")
    timeout_s: float | None = Field(None, gt=0, description="seconds per batch before it is marked unjudged")


class ProbeConfig(BaseModel):
    """How the accuracy probe samples, generates and judges (docs/algorithm.md#probe-and-judge)."""

    samples_per_cluster: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        100,
        description="probe at most this many samples per cluster; None = all (warm-up probes); auto = sized "
        "from target_se (docs/algorithm.md#probe-noise)",
    )
    target_se: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="samples_per_cluster: auto: the standard error the change between two probes of a cluster "
        "may have at accuracy 0.5 (the worst case): ceil(0.5 / target_se²) samples per cluster, 50 at 0.1",
    )
    source: Literal["held_out", "selected"] = Field(
        "held_out",
        description=(
            "which samples of each cluster are probed: held_out = not yet selected (never trained on, the same "
            "seeded samples at every probe while they stay unselected), so a rise means the model generalises "
            "on the cluster; selected = the original scripts' already-selected (mostly trained-on) samples, "
            "all of them at the warm-up probes"
        ),
    )
    all_strategies: bool = Field(
        False,
        description=(
            "probe after every round whatever the strategy; off = only strategies that read the accuracy "
            "(progress) pay for probes, the others write an empty probe"
        ),
    )
    max_new_tokens: int = Field(25, ge=1, description="greedy answer length (original: 25)")
    batch_size: int = Field(64, ge=1, description="prompts per generate call at most")
    batch_tokens: int | None = Field(
        32768,
        ge=1,
        description="padded tokens per generate call at most: prompts x (longest prompt + max_new_tokens); "
        "32768 is 16 GB of a 7B model's KV cache; None = batch_size alone",
    )
    seed: int = Field(42, ge=0, description="seed of the per-cluster probe sample")
    max_length: int | None = Field(None, ge=1, description="longest prompt in tokens; None = model max")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="who decides correctness")
    model: ModelConfig = Field(default_factory=ModelConfig, description="how to load the checkpoint (LoRA base)")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; None = torch default")
    nproc_per_node: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        1,
        description="launcher ranks per node the probe's prompts are sharded over (one per GPU; auto = the GPUs "
        "visible); 1 = generate inside the calling process (README: The probe on every GPU)",
    )
    dist_backend: Literal["auto", "nccl", "gloo"] = Field("auto", description="from training.dist_backend")
    nnodes: int = Field(1, ge=1, description="from training.nnodes: the probe spans the training's nodes")
    rdzv_endpoint: str | None = Field(None, description="from training.rdzv_endpoint")
    rdzv_id: str | None = Field(None, description="from training.rdzv_id")
    node_jobs_dir: str | None = Field(None, description="from training.node_jobs_dir")

    def procs_per_node(self) -> int:
        """Ranks a probe launcher starts on this node (auto = visible CUDA devices, >= 1)."""
        if self.nproc_per_node == "auto":
            import torch

            return max(1, torch.cuda.device_count())
        return int(self.nproc_per_node)

    def world_size(self) -> int:
        """Ranks the prompts are sharded over: 1 = today's in-process probe."""
        return self.nnodes * self.procs_per_node()


def samples_for_target_se(target_se: float) -> int:
    """Probe size per cluster whose change between two probes has at most ``target_se`` standard error at
    accuracy 0.5, where the binomial variance ``a (1 - a) / n`` is largest: ``2 · 0.25 / n <= target_se²``
    (docs/algorithm.md#probe-noise)."""
    return max(1, math.ceil(0.5 / target_se**2 - 1e-9))


def resolved_samples_per_cluster(settings: BaseModel) -> int | None:
    """``settings.samples_per_cluster`` with ``auto`` replaced by :func:`samples_for_target_se`."""
    value = settings.samples_per_cluster
    return samples_for_target_se(settings.target_se) if value == "auto" else value
