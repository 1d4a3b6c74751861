"""One validation pass over a run before any stage runs (docs/architecture.md#configuration).

A strategy typo, ``k`` larger than the pool, a missing ``image_root`` or a pool file that cannot be read
would otherwise fail after hours of earlier stages. :func:`check_run` looks at everything it can know
up front (config values, files, sizes that must fit together, free disk, GPUs the settings ask for) and
returns every problem, one line each naming the field and the fix; :func:`validate_run` raises them all at
once as a :class:`RunValidationError`.

The same module holds the input checks of a selection round that the command line runs by hand
(:func:`check_accuracy_clusters`, PROGRESS §3.3).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from progress_core.data.manifest import ManifestError, iter_json_array
from progress_core.errors import ConfigError, ProgressError
from progress_core.run.backend_checks import check_backends
from progress_core.selection.config import LABEL_STRATEGIES

NAMED_IMAGE_ENCODERS = ("descriptor", "dinov2")
NAMED_TEXT_ENCODERS = ("minilm",)
BYTES_PER_SAMPLE = 2 * (1024 + 384) * 2 + 512
TINY_CHECKPOINT_BYTES = 32 << 20


class RunValidationError(ConfigError):
    """The run config or its input files cannot give a complete run; the message lists every problem."""


class ClusterMismatchError(ProgressError):
    """An accuracy table's cluster ids do not belong to the annotation clustering it is used with."""


def _readable_file(path: str, field: str, fix: str) -> list[str]:
    p = Path(path)
    if not p.exists():
        return [f"{field}: file not found: {path!r}; {fix}"]
    if not p.is_file():
        return [f"{field}: {path!r} is not a file; {fix}"]
    if not os.access(p, os.R_OK):
        return [f"{field}: {path!r} is not readable; fix its permissions"]
    return []


def _existing_parent(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _pool_rows(pool_json: str) -> tuple[int | None, list[str]]:
    try:
        return sum(1 for _ in iter_json_array(pool_json)), []
    except (ManifestError, OSError, ValueError) as exc:
        return None, [f"data.pool_json: cannot be read as a LLaVA JSON list ({exc}); fix or replace the file"]


def label_refusal(strategy: str) -> str:
    """The one line that refuses a label-reading strategy on a pool without labels (a user's LLaVA JSON)."""
    return (
        f"selection.strategy: {strategy!r} reads the pool's labels, which only the bundled pool has "
        "(data.pool_json is set); leave data.pool_json empty or choose another strategy"
    )


def concept_source_problems(data) -> list[str]:
    """``data.concept_labels`` / ``data.concept_field``: one source at most, for a user's pool, the file there."""
    if not (data.concept_labels or data.concept_field):
        return []
    if not data.pool_json:
        return [
            "data.concept_labels/concept_field: only a user's pool (data.pool_json) takes them; the bundled "
            "pool has its own labels"
        ]
    if data.concept_labels and data.concept_field:
        return ["data.concept_labels and data.concept_field are both set; choose one source of concepts"]
    if data.concept_labels and not Path(data.concept_labels).is_file():
        return [f"data.concept_labels: file not found: {data.concept_labels!r}; fix the path or leave it empty"]
    return []


def _model_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~"))


def check_run(cfg, check_disk: bool = True, count_rows: bool = True) -> list[str]:
    """Every problem of the run ``cfg`` (a :class:`~progress_core.run.config.RunConfig`), one line each."""
    problems: list[str] = []
    data = cfg.data
    n: int | None = None
    if data.pool_json:
        found = _readable_file(
            data.pool_json, "data.pool_json", "fix the path, or leave it empty for the bundled synthetic pool"
        )
        problems += found
        if not found and count_rows:
            n, bad = _pool_rows(data.pool_json)
            problems += bad
            if n == 0:
                problems.append("data.pool_json: the pool has no rows; give a non-empty LLaVA JSON list")
    else:
        n = data.synthetic_n
    if data.pool_json and cfg.selection.strategy in LABEL_STRATEGIES:
        problems.append(label_refusal(cfg.selection.strategy))
    problems += concept_source_problems(data)
    if data.image_root:
        root = Path(data.image_root)
        if not root.is_dir():
            problems.append(f"data.image_root: folder not found: {data.image_root!r}; fix the path")
        elif not os.access(root, os.R_OK | os.X_OK):
            problems.append(f"data.image_root: {data.image_root!r} is not readable; fix its permissions")
    problems += _check_models(cfg)
    if n:
        problems += _check_sizes(cfg.sized_to_pool(n)[0], n)
    problems += _check_dirs(cfg.sized_to_pool(n)[0] if n else cfg, n if check_disk else None)
    problems += _check_gpus(cfg)
    problems += check_backends(cfg, _visible_gpus())
    return problems


def _check_models(cfg) -> list[str]:
    problems = []
    for field, value, named in (
        ("features.image_encoder", cfg.features.image_encoder, NAMED_IMAGE_ENCODERS),
        ("features.text_encoder", cfg.features.text_encoder, NAMED_TEXT_ENCODERS),
    ):
        if value not in named and _model_path(value) and not Path(value).expanduser().exists():
            problems.append(
                f"{field}: model folder not found: {value!r}; fix the path or use one of {', '.join(named)}"
            )
    model = cfg.training.model
    if model.mode == "real" and _model_path(model.base_model) and not Path(model.base_model).expanduser().exists():
        problems.append(f"training.model.base_model: model folder not found: {model.base_model!r}; fix the path")
    return problems


def _check_sizes(cfg, n: int) -> list[str]:
    problems = []
    for field, k in (
        ("clustering.annotation_k", cfg.clustering.annotation_k),
        ("clustering.selection_k", cfg.clustering.selection_k),
    ):
        if k is not None and k > n:
            problems.append(
                f"{field}: {k} centres for a pool of {n} rows; lower it to at most {n}, "
                "or leave it empty to scale the paper's k to the pool"
            )
    if cfg.selection.selection_num > n:
        problems.append(
            f"selection.selection_num: {cfg.selection.selection_num} per round is more than the pool's {n} rows; "
            "lower it"
        )
    gb = cfg.training.global_batch_size
    if cfg.schedule.final_step is not None and cfg.schedule.final_step * gb > n:
        problems.append(
            f"schedule.final_step: {cfg.schedule.final_step} steps at global batch {gb} need "
            f"{cfg.schedule.final_step * gb} samples, the pool has {n}; lower it or leave it empty "
            "(schedule.budget_fraction)"
        )
    if gb > n:
        problems.append(f"training.global_batch_size: {gb} is larger than the pool's {n} rows; lower it")
    lo, hi = cfg.warmup.fractions
    if int(lo * n) < 1:
        problems.append(
            f"warmup.fractions: the first fraction {lo} gives an empty W1 for a pool of {n} rows; "
            f"raise it to at least {1 / n:.4g}"
        )
    elif int(hi * n) - int(lo * n) < 1:
        problems.append(
            f"warmup.fractions: {lo} and {hi} give an empty W2 for a pool of {n} rows; "
            f"raise the second fraction to at least {(int(lo * n) + 1) / n:.4g}"
        )
    return problems


def _check_dirs(cfg, n: int | None) -> list[str]:
    problems = []
    dirs = [("run_dir", cfg.run_dir)] + ([("shared_dir", cfg.shared_dir)] if cfg.shared_dir else [])
    for field, value in dirs:
        p = Path(value)
        if p.exists() and not p.is_dir():
            problems.append(f"{field}: {value!r} is a file, not a folder; choose another path")
            continue
        parent = _existing_parent(p)
        if not os.access(parent, os.W_OK | os.X_OK):
            problems.append(f"{field}: cannot write under {str(parent)!r}; choose a writable folder")
    if n:
        final_step = cfg.final_step(n)
        rounds = 2 + math.ceil(max(final_step * cfg.training.global_batch_size, 1) / cfg.selection.selection_num)
        per_round = TINY_CHECKPOINT_BYTES if cfg.training.model.mode == "tiny" else 0
        need = n * BYTES_PER_SAMPLE + rounds * per_round
        free = shutil.disk_usage(_existing_parent(Path(cfg.run_dir))).free
        if free < need:
            problems.append(
                f"run_dir: the run needs about {need / 2**20:.0f} MiB, only {free / 2**20:.0f} MiB are free on "
                f"the disk of {cfg.run_dir!r}; free space or choose another run_dir"
            )
    return problems


def _visible_gpus() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def _check_gpus(cfg) -> list[str]:
    problems = []
    judge = cfg.probe.judge
    wants_cuda = cfg.features.device == "cuda"
    tp = judge.tp if judge.kind == "llm" and judge.backend == "lmdeploy" else 0
    if not (wants_cuda or tp > 1):
        return problems
    gpus = _visible_gpus()
    if tp > gpus:
        problems.append(
            f"probe.judge.tp: tensor-parallel size {tp} needs {tp} GPUs, {gpus} visible; lower it to {max(gpus, 1)}"
        )
    if wants_cuda and gpus == 0:
        problems.append("features.device: cuda requested but no GPU is visible; use auto or cpu")
    return problems


def validate_run(cfg, check_disk: bool = True) -> None:
    """Raise :class:`RunValidationError` listing every problem of ``cfg`` (nothing when it can run)."""
    problems = check_run(cfg, check_disk=check_disk)
    if problems:
        raise RunValidationError("\n".join(problems))


def _preview(ids: Iterable[int], limit: int = 10) -> str:
    ids = sorted(int(i) for i in ids)
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(map(str, ids[:limit])) + more


def check_accuracy_clusters(
    table_cluster_ids: np.ndarray,
    annotation_cluster_ids: np.ndarray,
    what: str,
    selected_ids: np.ndarray | None = None,
) -> None:
    """Raise :class:`ClusterMismatchError` when an accuracy table does not belong to this annotation.

    Unknown ids (in the table, not in the annotation) always fail. With ``selected_ids`` (the samples the
    probe drew from, PROGRESS §3.2), every cluster holding a selected sample must have a row: a missing one
    means the table was computed on another clustering or another selection.
    """
    table = np.unique(np.asarray(table_cluster_ids, dtype=np.int64))
    known = np.unique(np.asarray(annotation_cluster_ids, dtype=np.int64))
    unknown = np.setdiff1d(table, known)
    missing = np.empty(0, np.int64)
    if selected_ids is not None and len(selected_ids):
        ids = np.asarray(selected_ids, dtype=np.int64)
        ids = ids[(ids >= 0) & (ids < len(annotation_cluster_ids))]
        missing = np.setdiff1d(np.unique(np.asarray(annotation_cluster_ids)[ids]), table)
    if unknown.size or missing.size:
        parts = []
        if unknown.size:
            parts.append(f"unknown cluster ids {_preview(unknown)}")
        if missing.size:
            parts.append(f"missing cluster ids of selected samples {_preview(missing)}")
        raise ClusterMismatchError(
            f"{what} does not match the annotation clustering ({'; '.join(parts)}); "
            "use the accuracy tables of the run that produced this clustering"
        )
