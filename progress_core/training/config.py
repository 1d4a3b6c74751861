"""The training recipe (docs/algorithm.md#training)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from progress_core.base import UNKEYED
from progress_core.errors import ConfigError
from progress_core.model.config import ModelConfig


class TrainingConfig(BaseModel):
    """The training recipe (docs/algorithm.md#training: LLaVA-1.5 LoRA; tiny defaults tuned for the bundled pool)."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="which LLaVA to train")
    global_batch_size: int = Field(16, ge=1, description="samples per optimizer step (paper: 128)")
    per_device_batch_size: int | None = Field(
        None, ge=1, description="samples per forward pass; default = global batch / (devices x accumulation)"
    )
    gradient_accumulation_steps: int | None = Field(
        None, ge=1, description="micro-batches per optimizer step on each device; default = what the batch leaves"
    )
    learning_rate: float | None = Field(None, gt=0, description="peak LR; default 2e-4 (real, paper) or 1e-3 (tiny)")
    projector_lr: float | None = Field(
        None, gt=0, description="projector LR; default 2e-5 (real, paper) or the model LR (tiny)"
    )
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="linear warm-up as a fraction of final_step")
    lr_scheduler: Literal["cosine", "constant"] = Field("cosine", description="schedule after warm-up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (paper: 0)")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping norm (HF default 1.0); None = off")
    final_step: int = Field(1000, ge=1, description="schedule horizon: the last step of the whole planned run")
    seed: int = Field(42, ge=0, description="seed of initial RNG state and of each piece's data order")
    shuffle: bool = Field(True, description="shuffle each piece's samples (seeded by seed and start step)")
    max_length: int | None = Field(None, ge=1, description="truncate sequences to this many tokens; None = model max")
    nproc_per_node: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        None,
        description="processes a launcher starts per training piece (one per GPU); auto = the GPUs visible; "
        "empty = train inside the calling process",
    )
    nnodes: int = Field(
        1,
        ge=1,
        description="nodes a launched piece spans (torchrun c10d rendezvous); README: Training on two or more nodes",
    )
    node_rank: int = Field(0, ge=0, description="this node's rank: 0 runs the flow, the others join its pieces")
    rdzv_endpoint: str | None = Field(
        None, description="host:port of the c10d rendezvous store that node 0 hosts; required when nnodes > 1"
    )
    rdzv_id: str | None = Field(
        None,
        description="prefix of each piece's rendezvous id (e.g. the flow run id); every launch appends the target "
        "step and a fresh suffix, so a retried piece never joins a stale group",
    )
    node_jobs_dir: str | None = Field(
        None,
        description="directory every node reads (the shared volume) where node 0 publishes each piece's job "
        "for the other nodes; required when nnodes > 1",
    )
    dist_backend: Literal["auto", "nccl", "gloo"] = Field(
        "auto", description="torch.distributed backend of launched jobs; auto = nccl on GPUs, gloo on CPU"
    )
    use_deepspeed: bool | Literal["auto"] = Field(
        "auto", description="auto = DeepSpeed when installed, CUDA present and deepspeed_config set; true = required"
    )
    deepspeed_config: str | None = Field(
        "zero3.json",
        description="DeepSpeed config; a relative path is looked up in the working directory, then in the "
        "package's deployments/ folder",
    )
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; None = torch default")
    data_workers: int | None = Field(
        None,
        ge=0,
        description="DataLoader worker processes per rank that tokenise, read images and collate the next batches "
        "while the current one trains; 0 = in the training process; None = 4 on a GPU (as LLaVA's trainer), "
        "0 on CPU, where the training threads already use every core; the batches are the same either way, so "
        "changing it re-runs nothing",
        json_schema_extra=UNKEYED,
    )

    @model_validator(mode="after")
    def _nodes(self) -> TrainingConfig:
        try:
            self.check_nodes()
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def check_nodes(self) -> None:
        """One clear line when the multi-node settings cannot form a group (README: Training on two or more nodes)."""
        if self.node_rank >= self.nnodes:
            raise ConfigError(f"training.node_rank {self.node_rank} is not below training.nnodes {self.nnodes}")
        if self.nnodes == 1:
            return
        missing = [
            name
            for name, value in (
                ("nproc_per_node", self.nproc_per_node),
                ("rdzv_endpoint", self.rdzv_endpoint),
                ("node_jobs_dir", self.node_jobs_dir),
            )
            if value is None
        ]
        if missing:
            names = ", ".join(f"training.{m}" for m in missing)
            raise ConfigError(f"training.nnodes {self.nnodes} needs {names} set")
        host, _, port = self.rdzv_endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"training.rdzv_endpoint must be host:port, got {self.rdzv_endpoint!r}")

    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 2e-4 if self.model.mode == "real" else 1e-3

    def proj_lr(self) -> float:
        if self.projector_lr is not None:
            return self.projector_lr
        return 2e-5 if self.model.mode == "real" else self.lr()

    def loader_workers(self) -> int:
        """Worker processes of each rank's DataLoader (docs/algorithm.md#training, data preparation): on a GPU
        the CPU is idle while a step runs, so workers hide tokenising, image decoding and collation; on CPU they
        take cores from the step itself (benchmarks/README.md: bench_training)."""
        if self.data_workers is not None:
            return self.data_workers
        import torch

        return 4 if torch.cuda.is_available() else 0

    def micro_batches(self, world_size: int = 1) -> tuple[int, int]:
        """(per-device batch, gradient accumulation) with per_device x accumulation x world = global batch.

        Raises :class:`ConfigError` naming the three numbers when they do not multiply to the global batch
        (``docs/algorithm.md#training``: the paper's global batch is 128).
        """
        world = max(1, int(world_size))
        accum = self.gradient_accumulation_steps
        per_device = self.per_device_batch_size
        if per_device is None:
            per_device = max(1, self.global_batch_size // (world * (accum or 1)))
        if accum is None:
            if self.global_batch_size % (per_device * world):
                raise ConfigError(
                    f"global_batch_size {self.global_batch_size} is not a multiple of per_device_batch_size "
                    f"{per_device} x {world} devices"
                )
            accum = self.global_batch_size // (per_device * world)
        if per_device * accum * world != self.global_batch_size:
            raise ConfigError(
                f"global_batch_size {self.global_batch_size} != per_device_batch_size {per_device} x "
                f"gradient_accumulation_steps {accum} x world size {world} (= {per_device * accum * world})"
            )
        return per_device, accum

    def procs_per_node(self) -> int:
        """Processes a launcher starts on this node: 1 in-process, else ``nproc_per_node`` (auto = visible CUDA
        devices, >= 1)."""
        if self.nproc_per_node is None:
            return 1
        if self.nproc_per_node == "auto":
            import torch

            return max(1, torch.cuda.device_count())
        return int(self.nproc_per_node)

    def world_size(self) -> int:
        """Processes per piece over all nodes: ``nnodes`` x :meth:`procs_per_node` (every node alike)."""
        return self.nnodes * self.procs_per_node()
