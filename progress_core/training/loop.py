"""One continuous LLaVA training run, advanced piece by piece (PROGRESS §3, docs/algorithm.md#training, docs/algorithm.md#round-schedule).

The paper trains a single run to FINAL_STEP in pieces: W1 to step 391, W2 to 469, then each round's newly
selected samples only. :func:`train_to_step` advances that run from a checkpoint to a target step on the
samples it is given. Model weights, optimizer, scheduler (ONE cosine schedule over ``final_step``, a fix, see
docs/algorithm.md#differences-from-the-original-scripts), RNG states and the global step live in the checkpoint directory (a standard HF model dir plus
``training_state.pt`` / ``training_state.json``), so training to step 20 in two pieces equals training to
step 20 at once on the same data stream.

Data stream of a piece: a plain iterator over the given samples (not HF Trainer's resume skip logic, docs/algorithm.md#training
caveat). With ``shuffle`` the order is a permutation seeded by ``(seed, start_step, epoch)``; when a
piece needs more batches than it has samples, it cycles with a fresh permutation per pass; samples left
over after the last full global batch are not trained (step = cumulative_samples // global_batch).

Text-only rows carry no ``<image>`` tag and no pixel values: a batch's ``pixel_values`` stacks the images
of its image rows only, in row order, which is how LLaVA scatters image features onto image tokens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from progress_core.errors import ConfigError, ProgressError
from progress_core.model.assembly import base_model_path
from progress_core.model.loading import load_model
from progress_core.model.prompt import IGNORE_INDEX
from progress_core.training.config import TrainingConfig
from progress_core.training.node import piece_dir, piece_nodes, start_piece, write_atomic
from progress_core.training.samples import EncodedRow, Encoder, sample_column, sample_labels, samples_rows

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
STATE_JSON = "training_state.json"
DEPLOYMENTS_DIR = Path(__file__).resolve().parents[2] / "deployments"


def resolve_config_path(value: str | os.PathLike) -> Path:
    """A config file named relative to the run (working directory) or, failing that, to the package.

    Keeps configs free of build-machine paths: ``zero3.json`` finds the packaged ``deployments/zero3.json``.
    """
    path = Path(value)
    if path.is_absolute() or path.exists():
        return path
    packaged = DEPLOYMENTS_DIR / path
    if packaged.exists():
        return packaged
    raise ConfigError(f"config file {value!s} not found in {Path.cwd()} nor in {DEPLOYMENTS_DIR}")


@dataclass
class TrainResult:
    """What a piece of training produced."""

    checkpoint: Path
    step: int
    losses: list[float] = field(default_factory=list)
    samples_seen: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    """Where the piece's time went on this rank: ``setup`` (load, optimiser, restored state), ``data`` (waiting
    for batches), ``steps`` (forward, backward, optimiser) and ``save`` (benchmarks/README.md: bench_training)."""


def read_train_state(checkpoint: str | os.PathLike | None) -> dict[str, Any]:
    """The checkpoint's human-readable state (step, samples_seen, final_step); step 0 for a plain model."""
    if checkpoint is None:
        return {"step": 0, "samples_seen": 0}
    path = Path(checkpoint) / STATE_JSON
    if not path.is_file():
        return {"step": 0, "samples_seen": 0}
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------- data


def data_order(n_rows: int, n_needed: int, seed: int, start_step: int, shuffle: bool) -> np.ndarray:
    """Row indices of a piece's stream: seeded permutations of the rows, cycled to ``n_needed``."""
    if n_needed == 0:
        return np.zeros(0, dtype=np.int64)
    if n_rows == 0:
        raise ConfigError("training needs samples but none were given")
    passes = -(-n_needed // n_rows)
    parts = []
    for epoch in range(passes):
        if shuffle:
            rng = np.random.default_rng([seed, start_step, epoch])
            parts.append(rng.permutation(n_rows))
        else:
            parts.append(np.arange(n_rows))
    return np.concatenate(parts)[:n_needed]


# ---------------------------------------------------------------------------------------- optimiser


def _param_groups(model, cfg: TrainingConfig) -> list[dict]:
    proj, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (proj if "multi_modal_projector" in name else rest).append(p)
    groups = [{"params": rest, "lr": cfg.lr(), "weight_decay": cfg.weight_decay}]
    if proj:
        groups.append({"params": proj, "lr": cfg.proj_lr(), "weight_decay": cfg.weight_decay})
    return groups


def _scheduler(optimizer, cfg: TrainingConfig):
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    warmup = math.ceil(cfg.warmup_ratio * cfg.final_step)
    if cfg.lr_scheduler == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, cfg.final_step)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def _rng_state() -> dict:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _deepspeed_wanted(cfg: TrainingConfig, distributed: bool) -> bool:
    """DeepSpeed runs only inside a launched job (the launcher's process group, never MPI discovery)."""
    import importlib.util

    import torch

    installed = importlib.util.find_spec("deepspeed") is not None
    if cfg.use_deepspeed is True:
        if not installed:
            raise ConfigError("use_deepspeed is true but deepspeed is not installed (pip install '.[gpu]')")
        if not cfg.deepspeed_config:
            raise ConfigError("use_deepspeed is true but deepspeed_config is empty")
        if not distributed:
            raise ConfigError("DeepSpeed training needs the launcher: set training.nproc_per_node (auto on GPU nodes)")
        return True
    if cfg.use_deepspeed is False:
        return False
    return distributed and bool(cfg.deepspeed_config) and torch.cuda.is_available() and installed


def _dist_initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _dist() -> tuple[int, int]:
    """(world size, rank) of the process group, (1, 0) when there is none."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _device():
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _answer_tokens(labels) -> int:
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def _llava_of(model):
    """The ``LlavaForConditionalGeneration`` inside a DeepSpeed engine and/or a peft wrapper."""
    inner = getattr(model, "module", model)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner


def vision_keepalive(model, device, dtype):
    """A zero-valued loss term that runs the vision tower and projector on one all-zero image.

    A micro-batch of text-only rows would otherwise skip those modules; under ZeRO-3 every rank must run
    the same modules or the parameter gathers of the other ranks wait forever. The original LLaVA feeds a
    zero image for text-only rows for the same reason (``docs/algorithm.md#training``).
    """
    import torch

    llava = _llava_of(model)
    config = llava.config
    side = config.vision_config.image_size
    pixels = torch.zeros(1, 3, side, side, device=device, dtype=dtype)
    out = llava.model.get_image_features(
        pixel_values=pixels,
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
    )
    feats = getattr(out, "pooler_output", out)
    if isinstance(feats, (list, tuple)):
        return sum(f.float().sum() for f in feats) * 0.0
    return feats.float().sum() * 0.0


@contextlib.contextmanager
def zero_image_after_embedding(model):
    """Inside the model's forward, add :func:`vision_keepalive`'s zero term to the token embeddings.

    The embedding, then the vision tower and projector, then the language model: the order in which LLaVA's
    forward runs them for a batch with images, and all inside the forward, where ZeRO-3 starts each step's
    parameter trace; so a text-only rank gathers the same parameters in the same order as an image rank
    (as the original LLaVA's zero image for text-only rows, ``docs/algorithm.md#training``).
    """
    llava = _llava_of(model)

    def add_zero_image(module, args, output):
        return output + vision_keepalive(model, output.device, next(llava.parameters()).dtype).to(output.dtype)

    handle = llava.get_input_embeddings().register_forward_hook(add_zero_image)
    try:
        yield
    finally:
        handle.remove()


def _sum_loss(model, batch: dict, keep_vision: bool = False):
    import torch

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    text_only = keep_vision and "pixel_values" not in batch
    with zero_image_after_embedding(model) if text_only else contextlib.nullcontext():
        logits = model(**inputs).logits
    labels = batch["labels"][:, 1:].to(logits.device)
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss


def _to_device(batch: dict, device, dtype) -> dict:
    out = {}
    for k, v in batch.items():
        v = v.to(device)
        out[k] = v.to(dtype) if k == "pixel_values" else v
    return out


def _all_reduce_sum(value: float, device) -> float:
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def _all_reduce_grads(params: list, device) -> None:
    """Sum gradients over ranks; a parameter without a gradient on every rank keeps none (as one process)."""
    import torch
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    flags = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    grads = []
    for p, has in zip(params, flags.tolist()):
        if has:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)


# ------------------------------------------------------------------------------------------- train


def train_to_step(
    checkpoint: str | os.PathLike | None,
    samples: Any,
    image_root: str | os.PathLike | None,
    target_step: int,
    cfg: TrainingConfig,
    out_dir: str | os.PathLike,
    progress: bool = True,
) -> TrainResult:
    """Continue the run in ``checkpoint`` to ``target_step`` on ``samples``; save to ``out_dir``.

    ``checkpoint`` None starts from ``cfg.model.base_model`` at step 0 (any plain LLaVA dir or hub name,
    e.g. the tiny model of :func:`progress_core.model.tiny.build_tiny_model`). ``samples`` has ``conversations``
    (JSON text or list) and ``image`` (relative to ``image_root``, null for text-only rows). Losses are the
    mean token loss of each optimizer step, over the answer tokens of the whole global batch.

    Inside a process group (one rank of :func:`train_launched`) each rank trains its slice of every global
    batch and gradients are summed over ranks, so N ranks x batch b equals one rank x accumulation N x b.
    """
    import torch

    started = time.perf_counter()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    state_info = read_train_state(checkpoint)
    start = int(state_info["step"])
    _check_target_step(checkpoint, start, target_step, cfg)
    world, rank = _dist()
    per_device, accum = cfg.micro_batches(world)
    rows = samples_rows(samples)
    n_steps = target_step - start
    ds_cfg, hf_ds = _deepspeed_setup(cfg, per_device, accum, world)  # hf_ds held: ZeRO-3 loads and saves through it
    saved = Path(checkpoint) / STATE_FILE if checkpoint is not None else None
    model, processor = _load_for_training(checkpoint, saved, cfg)
    encoder = _encoder_for(model.config, processor, image_root, cfg, sample_labels(samples))
    run = _prepare_run(model, cfg, ds_cfg, checkpoint, saved, _Layout(world, rank, per_device, accum))
    order = data_order(len(rows), n_steps * cfg.global_batch_size, cfg.seed, start, cfg.shuffle)
    show = progress and rank == 0
    seconds = {"setup": time.perf_counter() - started, "data": 0.0, "steps": 0.0}
    losses = _train_steps(run, encoder, rows, order, n_steps, cfg, f"train {start}->{target_step}", show, seconds)
    saving = time.perf_counter()

    samples_seen = int(state_info.get("samples_seen", 0)) + n_steps * cfg.global_batch_size
    info = _state_info(run, cfg, target_step, samples_seen, losses)
    blob = _state_blob(run, target_step, samples_seen)
    trained = run.model if run.engine is None else run.engine
    out = _save_checkpoint(trained, processor, out_dir, blob, info, run.engine is not None, rank)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    seconds["save"] = time.perf_counter() - saving
    return TrainResult(checkpoint=out, step=target_step, losses=losses, samples_seen=samples_seen, seconds=seconds)


def _check_target_step(checkpoint, start: int, target_step: int, cfg: TrainingConfig) -> None:
    """A piece moves the run forward and stays inside the one schedule (docs/algorithm.md#round-schedule)."""
    if target_step < start:
        raise ConfigError(f"target step {target_step} is before the checkpoint's step {start} ({checkpoint})")
    if target_step > cfg.final_step:
        raise ConfigError(f"target step {target_step} is past the schedule horizon final_step {cfg.final_step}")


def _deepspeed_setup(cfg: TrainingConfig, per_device: int, accum: int, world: int) -> tuple[dict | None, Any]:
    """(filled DeepSpeed config, HF's ZeRO-3 hook) when DeepSpeed trains this piece, else (None, None).

    The hook must stay referenced while the model loads (and the piece trains) so ``from_pretrained``
    partitions the weights.
    """
    if not _deepspeed_wanted(cfg, distributed=_dist_initialized()):
        return None, None
    _deepspeed_join()
    ds_cfg = deepspeed_config_dict(cfg, per_device, accum, world)
    return ds_cfg, _hf_deepspeed_config(ds_cfg)


def _load_for_training(checkpoint, saved: Path | None, cfg: TrainingConfig):
    """(model in train mode, processor); a fresh run (no saved state) seeds every RNG first, so the LoRA
    initialisation and everything after it follow ``cfg.seed`` (docs/algorithm.md#training)."""
    if saved is None or not saved.is_file():
        _seed_all(cfg.seed)
    model, processor = load_model(checkpoint if checkpoint is not None else base_model_path(cfg.model), cfg.model)
    model.train()
    return model, processor


def _encoder_for(base_config, processor, image_root, cfg: TrainingConfig, labels: list[str]) -> Encoder:
    """The row encoder, truncating at ``cfg.max_length`` or else the language model's context length."""
    max_length = cfg.max_length or getattr(base_config.get_text_config(), "max_position_embeddings", 2048)
    return Encoder(processor, base_config.image_token_index, image_root, max_length, labels)


@dataclass(frozen=True)
class _Layout:
    """Where this process sits in the job: ranks, and how each rank splits its share of a global batch."""

    world: int
    rank: int
    per_device: int
    accum: int


@dataclass
class _Run:
    """What the steps of a piece act on: the model (or its DeepSpeed engine) with optimiser and schedule."""

    model: Any
    engine: Any
    optimizer: Any
    scheduler: Any
    device: Any
    dtype: Any
    layout: _Layout


def _prepare_run(model, cfg: TrainingConfig, ds_cfg: dict | None, checkpoint, saved: Path | None, layout: _Layout):
    """Optimiser and schedule over the model (inside a DeepSpeed engine when ``ds_cfg`` is given), placed on
    the device and restored from ``checkpoint`` when it holds a training state."""
    import torch

    device = _device()
    dtype = next(model.parameters()).dtype
    optimizer = torch.optim.AdamW(_param_groups(model, cfg), betas=(0.9, 0.999), eps=1e-8)
    scheduler = _scheduler(optimizer, cfg)
    engine = None
    if ds_cfg is not None:
        engine, optimizer, scheduler = _deepspeed_init(model, optimizer, scheduler, ds_cfg)
        if saved is not None and (Path(checkpoint) / "deepspeed").is_dir():
            engine.load_checkpoint(str(Path(checkpoint) / "deepspeed"), load_module_strict=False)
    else:
        model.to(device)
    run = _Run(model, engine, optimizer, scheduler, device, dtype, layout)
    if saved is not None and saved.is_file():
        _restore_state(run, saved)
    return run


def _restore_state(run: _Run, saved: Path) -> None:
    """Optimiser, schedule (unless the engine restored them) and this rank's RNG state from ``saved``, so a
    run in pieces equals one run at once (docs/algorithm.md#training)."""
    import torch

    blob = torch.load(saved, weights_only=False, map_location="cpu")
    if run.engine is None:
        run.optimizer.load_state_dict(blob["optimizer"])
        run.scheduler.load_state_dict(blob["scheduler"])
    per_rank = blob.get("rng_per_rank")
    world, rank = run.layout.world, run.layout.rank
    _set_rng_state(per_rank[rank] if per_rank and len(per_rank) == world else blob["rng"])


def _train_steps(
    run: _Run,
    encoder: Encoder,
    rows: list,
    order: np.ndarray,
    n_steps: int,
    cfg: TrainingConfig,
    desc: str,
    show: bool,
    seconds: dict[str, float],
) -> list[float]:
    """Run ``n_steps`` optimizer steps over the global batches of ``order``; the loss of each step. Adds the time
    spent waiting for batches and in the steps to ``seconds["data"]`` and ``seconds["steps"]``."""
    from tqdm.auto import tqdm

    world = run.layout.world
    keep_vision = run.engine is not None or world > 1
    trainable = [p for p in run.model.parameters() if p.requires_grad]
    losses: list[float] = []
    bar = tqdm(total=n_steps, desc=desc, disable=not show, unit="step")
    steps = StepBatches(order, n_steps, cfg.global_batch_size, run.layout, encoder, rows)
    clock = time.perf_counter()
    for batches in step_loader(steps, cfg.loader_workers()):
        now = time.perf_counter()
        seconds["data"] += now - clock
        total = _backward_micro_batches(run, batches, keep_vision)
        if run.engine is None:
            _optimizer_step(run, trainable, cfg.max_grad_norm)
        if world > 1:
            total = _all_reduce_sum(total, run.device)
        losses.append(total)
        clock = time.perf_counter()
        seconds["steps"] += clock - now
        bar.update(1)
        bar.set_postfix(loss=f"{total:.3f}")
    bar.close()
    return losses


class StepBatches:
    """Step ``k`` of a piece -> this rank's ``accum`` collated micro-batches of global batch ``k`` of ``order``.

    A map-style dataset for :func:`step_loader`: the rows are tokenised (once per process, cached), their images
    read and the micro-batches collated wherever the loader calls it, a worker process or this one
    (docs/algorithm.md#training: data preparation). A row that cannot be used comes back as its
    :class:`ProgressError`, so the training process raises the row's one line, not a worker's traceback.
    """

    def __init__(self, order: np.ndarray, n_steps: int, global_batch: int, layout: _Layout, encoder: Encoder, rows):
        self.order, self.n_steps, self.global_batch = order, n_steps, global_batch
        self.layout, self.encoder, self.rows = layout, encoder, rows
        self.cache: dict[int, EncodedRow] = {}

    def __len__(self) -> int:
        return self.n_steps

    def __getitem__(self, k: int) -> list[dict] | ProgressError:
        from torch.utils.data import get_worker_info

        step_rows = self.order[k * self.global_batch : (k + 1) * self.global_batch]
        try:
            batches = _micro_batches(step_rows, self.layout, self.encoder, self.rows, self.cache)
        except ProgressError as exc:
            return exc
        if get_worker_info() is None:
            return batches
        return [{name: value.numpy() for name, value in b.items()} for b in batches]


def _as_is(item):
    return item


class DataWorkerError(ProgressError):
    """A DataLoader worker preparing training batches died (killed for memory, a crash in a decoder)."""


def _worker_signals(_worker_id: int) -> None:
    """A worker leaves interrupts to the training process, which stops the loader and its workers when it handles
    one: Ctrl-C is ignored here and SIGTERM (sent to the whole process group by ``timeout``, a scheduler's cancel)
    ends the worker at once and quietly, so the user sees the training process's one line, not a worker's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))


def step_loader(steps: StepBatches, workers: int):
    """The micro-batches of every step in order, prepared by ``workers`` DataLoader processes (each up to two steps
    ahead of training); 0 prepares each step in this process when it is due. A row's :class:`ProgressError` is
    raised here, and a worker that dies is a :class:`DataWorkerError`.

    Workers are forked, so they share the rows and the tokenizer without pickling them, and hand back numpy
    arrays (one copy through the pipe) rather than tensors in shared memory, whose per-tensor file handles cost
    more than the copy for batches of this size (benchmarks/README.md: bench_training). The loader seeds from a
    generator of its own: drawing its base seed from torch's global RNG would shift the dropout stream that a
    run in pieces must continue exactly (docs/algorithm.md#training).
    """
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(
        steps,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_as_is,
        prefetch_factor=2 if workers else None,
        multiprocessing_context="fork" if workers else None,
        worker_init_fn=_worker_signals if workers else None,
        generator=torch.Generator().manual_seed(0),
    )
    batches_of = iter(loader)
    while True:
        try:
            batches = next(batches_of)
        except StopIteration:
            return
        except RuntimeError as exc:
            if workers and str(exc).startswith("DataLoader worker"):
                raise DataWorkerError(
                    f"{exc}; re-run to resume, or set training.data_workers: 0 to prepare batches in the training "
                    "process"
                ) from exc
            raise
        if isinstance(batches, ProgressError):
            raise batches
        yield [{name: torch.as_tensor(value) for name, value in b.items()} for b in batches]


def _micro_batches(
    step_rows: np.ndarray, layout: _Layout, encoder: Encoder, rows: list, cache: dict[int, EncodedRow]
) -> list[dict]:
    """This rank's slice of one global batch as ``accum`` collated micro-batches (rows encoded once, cached)."""
    share = layout.per_device * layout.accum
    local = step_rows[layout.rank * share : (layout.rank + 1) * share]
    micro = [local[j * layout.per_device : (j + 1) * layout.per_device] for j in range(layout.accum)]
    return [encoder.collate([_encoded(encoder, rows, cache, int(i)) for i in m], [int(i) for i in m]) for m in micro]


def _encoded(encoder: Encoder, rows: list, cache: dict[int, EncodedRow], i: int) -> EncodedRow:
    if i not in cache:
        cache[i] = encoder.encode(rows[i][0], rows[i][1], i)
    return cache[i]


def _backward_micro_batches(run: _Run, batches: list[dict], keep_vision: bool) -> float:
    """Forward and backward every micro-batch, each loss divided by the global batch's answer tokens; their sum.

    Under DeepSpeed the engine steps per micro-batch (it applies the update at the accumulation boundary).
    """
    n_tokens = sum(_answer_tokens(b["labels"]) for b in batches)
    world, accum = run.layout.world, run.layout.accum
    if world > 1:
        n_tokens = _all_reduce_sum(n_tokens, run.device)
    total = 0.0
    for b in batches:
        b = _to_device(b, run.device, run.dtype)
        if run.engine is not None:
            # DeepSpeed divides by accumulation and averages over ranks; undo both so the gradient is
            # the global batch's mean token loss, as in one process.
            loss = _sum_loss(run.engine, b, keep_vision) / max(1, n_tokens)
            run.engine.backward(loss * accum * world)
            run.engine.step()
        else:
            loss = _sum_loss(run.model, b, keep_vision) / max(1, n_tokens)
            loss.backward()
        total += float(loss.detach())
    return total


def _optimizer_step(run: _Run, trainable: list, max_grad_norm: float | None) -> None:
    """Sum gradients over ranks, clip, step optimiser and schedule, clear gradients (no DeepSpeed)."""
    import torch

    if run.layout.world > 1:
        _all_reduce_grads(trainable, run.device)
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)


def _state_info(run: _Run, cfg: TrainingConfig, target_step: int, samples_seen: int, losses: list[float]) -> dict:
    """The human-readable ``training_state.json`` of the checkpoint (read by :func:`read_train_state`)."""
    scheduler = run.scheduler
    return {
        "step": target_step,
        "samples_seen": samples_seen,
        "final_step": cfg.final_step,
        "global_batch_size": cfg.global_batch_size,
        "world_size": run.layout.world,
        "learning_rate": scheduler.get_last_lr()[0] if hasattr(scheduler, "get_last_lr") else None,
        "losses": losses,
        "config": cfg.model_dump(mode="json"),
        "partitioned_parameters": None if run.engine is None else zero3_partitioned_count(run.engine.module),
    }


def zero3_partitioned_count(module) -> int:
    """Parameters ZeRO-3 keeps partitioned across ranks (those under ``stage3_param_persistence_threshold``
    stay whole on every rank); recorded so a run shows whether its parameters were really sharded."""
    return sum(1 for p in module.parameters() if hasattr(p, "ds_id") and not getattr(p, "ds_persist", False))


def _state_blob(run: _Run, target_step: int, samples_seen: int) -> dict:
    """``training_state.pt``: RNG state (every rank's, gathered), and optimiser and schedule unless the
    DeepSpeed engine keeps them in its own checkpoint."""
    blob = {"rng": _rng_state(), "step": target_step, "samples_seen": samples_seen}
    world = run.layout.world
    if world > 1:
        import torch.distributed as dist

        states: list = [None] * world
        dist.all_gather_object(states, blob["rng"])
        blob["rng_per_rank"] = states
    if run.engine is None:
        blob["optimizer"] = run.optimizer.state_dict()
        blob["scheduler"] = run.scheduler.state_dict()
    return blob


def _save_checkpoint(model, processor, out_dir, blob: dict, info: dict, deepspeed: bool, rank: int) -> Path:
    """Write the model dir + training state to a temp dir, then rename it onto ``out_dir`` atomically."""
    import io

    import torch

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)) if rank == 0 else None
    try:
        if deepspeed:
            _deepspeed_save(model, processor, tmp, rank)
        if rank != 0:
            return out
        if not deepspeed:
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
        buf = io.BytesIO()
        torch.save(blob, buf)
        (tmp / STATE_FILE).write_bytes(buf.getvalue())
        (tmp / STATE_JSON).write_text(json.dumps(info, indent=1))
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------- launched job


def train_launched(
    checkpoint: str | os.PathLike | None,
    samples: Any,
    image_root: str | os.PathLike | None,
    target_step: int,
    cfg: TrainingConfig,
    out_dir: str | os.PathLike,
    log_line=None,
    progress: bool = True,
    timeout_s: float | None = None,
) -> TrainResult:
    """:func:`train_to_step` as a multi-process job when ``cfg.nproc_per_node`` asks for one.

    The batch product is checked for the launched world size before anything starts; the samples go to a
    job file beside ``out_dir``; :func:`progress_core.training.launch` starts one process per device
    (``docs/architecture.md#orchestration``) and streams their output to ``log_line``. With ``cfg.nnodes`` > 1
    this is node 0: the job goes to ``cfg.node_jobs_dir`` under a fresh rendezvous id, where the other nodes'
    :func:`progress_core.training.node.follow` find it and join (README: Training on two or more nodes).
    """
    if cfg.nproc_per_node is None:
        return train_to_step(checkpoint, samples, image_root, target_step, cfg, out_dir, progress=progress)
    cfg.micro_batches(cfg.world_size())
    if cfg.node_rank != 0:
        raise ConfigError(
            f"training.node_rank {cfg.node_rank}: only node 0 starts a piece; the other nodes run "
            "python -m progress_core.training.node <node_jobs_dir> --node-rank <K>"
        )
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    nodes = piece_nodes(cfg.nnodes, cfg.rdzv_endpoint, cfg.rdzv_id, f"step{int(target_step)}")
    with piece_dir(nodes, cfg.node_jobs_dir, out.parent) as job_dir:
        job = _write_job(job_dir, checkpoint, samples, image_root, target_step, cfg, out, progress)
        start_piece(TRAIN_TARGET, job, cfg.procs_per_node(), cfg.dist_backend, nodes, log_line, timeout_s)
        result = json.loads((job_dir / "result.json").read_text())
    return TrainResult(
        checkpoint=Path(result["checkpoint"]),
        step=int(result["step"]),
        losses=[float(x) for x in result["losses"]],
        samples_seen=int(result["samples_seen"]),
        seconds={k: float(v) for k, v in result.get("seconds", {}).items()},
    )


TRAIN_TARGET = "progress_core.training.loop:run_train_job"


def _write_job(job_dir: Path, checkpoint, samples, image_root, target_step: int, cfg, out: Path, progress: bool):
    """The job file every rank reads: samples, config, where to save and where rank 0 reports."""
    rows = samples_rows(samples)
    payload = {
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "samples": [
            {"conversations": c, "image": im, "sample_id": sid, "id": rid}
            for (c, im), sid, rid in zip(rows, sample_column(samples, "sample_id"), sample_column(samples, "id"))
        ],
        "image_root": None if image_root is None else str(image_root),
        "target_step": int(target_step),
        "config": cfg.model_dump(mode="json"),
        "out_dir": str(out),
        "result": str(job_dir / "result.json"),
        "progress": bool(progress),
    }
    job = job_dir / "job.json"
    write_atomic(job, json.dumps(payload))
    return job


def run_train_job(job: str | os.PathLike) -> None:
    """One rank of a launched training job: read the job file, train, rank 0 writes the result."""
    payload = json.loads(Path(job).read_text())
    cfg = TrainingConfig.model_validate(payload["config"])
    result = train_to_step(
        payload["checkpoint"],
        payload["samples"],
        payload["image_root"],
        payload["target_step"],
        cfg,
        payload["out_dir"],
        progress=payload.get("progress", True),
    )
    if _dist()[1] == 0:
        path = Path(payload["result"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "checkpoint": str(result.checkpoint),
                    "step": result.step,
                    "losses": result.losses,
                    "samples_seen": result.samples_seen,
                    "seconds": result.seconds,
                }
            )
        )
        os.replace(tmp, path)


# --------------------------------------------------------------------------------- deepspeed (GPU)


def deepspeed_config_dict(cfg: TrainingConfig, per_device: int, accum: int, world: int) -> dict:
    """The DeepSpeed config file (``deployments/zero3.json`` by default) with its "auto" fields filled."""
    import torch

    ds_cfg = json.loads(resolve_config_path(cfg.deepspeed_config).read_text())
    fill = {
        "train_batch_size": per_device * accum * world,
        "train_micro_batch_size_per_gpu": per_device,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": cfg.max_grad_norm or 0.0,
    }
    for key, value in fill.items():
        if ds_cfg.get(key, "auto") == "auto":
            ds_cfg[key] = value
    dtype = cfg.model.torch_dtype()
    for section, wanted in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        if isinstance(ds_cfg.get(section), dict) and ds_cfg[section].get("enabled") == "auto":
            ds_cfg[section]["enabled"] = dtype == wanted
    return ds_cfg


def _deepspeed_join() -> None:
    """Hand DeepSpeed the launcher's process group (it would otherwise look for MPI or see one rank)."""
    import deepspeed
    import torch.distributed as dist

    deepspeed.init_distributed(dist_backend=dist.get_backend(), auto_mpi_discovery=False)


def _hf_deepspeed_config(ds_cfg: dict):
    """Under ZeRO-3, ``from_pretrained`` then loads the weights partitioned (``deepspeed.zero.Init``)."""
    from transformers.integrations import HfDeepSpeedConfig

    return HfDeepSpeedConfig(ds_cfg)


def _deepspeed_init(model, optimizer, scheduler, ds_cfg: dict):
    """The DeepSpeed engine over the model, inside the launcher's process group (no MPI discovery)."""
    import deepspeed

    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_cfg, dist_init_required=False
    )
    return engine, optimizer, scheduler


def _gathered_trainable_state(engine, rank: int) -> dict:
    """16-bit copies of the trainable parameters (LoRA adapter + projector) gathered onto rank 0.

    Gathering only what a later round reads keeps a 7B checkpoint at the adapter's size; the engine's own
    checkpoint holds the optimizer state and the full-precision partitions.
    """
    import deepspeed

    named = [(n, p) for n, p in engine.module.named_parameters() if p.requires_grad]
    state: dict = {}
    with deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None):
        if rank == 0:
            state = {n: p.detach().to("cpu").clone() for n, p in named}
    return state


def _deepspeed_save(engine, processor, tmp: Path | None, rank: int) -> None:
    """Engine state on every rank; the weights a later round reads (HF dir) gathered onto rank 0 once."""
    import torch

    ds_dir = tmp / "deepspeed" if tmp is not None else None
    if torch.distributed.is_initialized():
        shared = [str(ds_dir) if ds_dir else None]
        torch.distributed.broadcast_object_list(shared, src=0)
        ds_dir = Path(shared[0])
    engine.save_checkpoint(str(ds_dir))
    module = engine.module
    if hasattr(module, "peft_config"):
        state = _gathered_trainable_state(engine, rank)
        if rank == 0:
            module.save_pretrained(tmp, state_dict=state)
    else:
        state = engine._zero3_consolidated_16bit_state_dict()
        if rank == 0:
            module.save_pretrained(tmp, state_dict=state)
    if rank == 0:
        processor.save_pretrained(tmp)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
