"""The run's GPU count and backends checked before any stage (docs/architecture.md#configuration).

A ``paper-8gpu`` run on a node with 4 GPUs would otherwise extract features, cluster and assemble the model
before its first training piece fails at ``torch.cuda.set_device``; a missing or broken faiss, lmdeploy,
deepspeed or peft would show up only at the stage that first imports it. :func:`check_backends` returns
those problems, one line each naming the field and the fix, for :func:`progress_core.validation.check_run`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

from progress_core.model.config import ModelConfig


def check_training_gpus(training, gpus: int) -> list[str]:
    """``training.nproc_per_node`` ranks each take one GPU under NCCL, so no more ranks than visible GPUs."""
    nproc = training.nproc_per_node
    if not isinstance(nproc, int) or isinstance(nproc, bool):
        return []
    nccl = training.dist_backend == "nccl" or (training.dist_backend == "auto" and gpus > 0)
    if not nccl or nproc <= gpus:
        return []
    fix = f"set it to {gpus} (or auto) and raise gradient_accumulation_steps to keep global_batch_size"
    if gpus == 0:
        fix = "run on a GPU node, or set training.dist_backend=gloo for CPU ranks"
    return [f"training.nproc_per_node: {nproc} processes need {nproc} GPUs, {gpus} visible; {fix}"]


def selected_backends(cfg, gpus: int, find_spec: Callable = importlib.util.find_spec) -> list[tuple[str, str, str]]:
    """``(field, module, install hint)`` of every optional backend the config will import."""
    backends = [("clustering", "faiss", "pip install 'progress-flows[cpu]' (or '[gpu]' on GPU machines)")]
    training = cfg.training
    if ModelConfig.model_validate(training.model.model_dump()).use_lora():
        backends.append(("training.model.lora", "peft", "pip install peft"))
    launched = training.nproc_per_node is not None
    auto_deepspeed = (
        training.use_deepspeed == "auto"
        and launched
        and gpus > 0
        and bool(training.deepspeed_config)
        and find_spec("deepspeed") is not None
    )
    if training.use_deepspeed is True or auto_deepspeed:
        backends.append(("training.use_deepspeed", "deepspeed", "pip install 'progress-flows[gpu]'"))
    judge = cfg.probe.judge
    if judge.kind == "llm" and judge.backend == "lmdeploy":
        backends.append(("probe.judge.backend", "lmdeploy", "pip install 'progress-flows[gpu]'"))
    return backends


def check_backend_imports(
    cfg, gpus: int, import_module: Callable = importlib.import_module, find_spec: Callable = importlib.util.find_spec
) -> list[str]:
    """One line per selected backend that does not import (missing, or installed against another torch)."""
    problems = []
    for field, module, hint in selected_backends(cfg, gpus, find_spec):
        try:
            import_module(module)
        except Exception as exc:  # noqa: BLE001  (a broken build raises more than ImportError)
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            problems.append(f"{field}: needs {module}, which does not import ({reason}); {hint}")
    return problems


def check_backends(cfg, gpus: int, import_module: Callable = importlib.import_module) -> list[str]:
    """GPU count for the launched training pieces, then the imports of every selected backend."""
    return check_training_gpus(cfg.training, gpus) + check_backend_imports(cfg, gpus, import_module)
