"""One typed configuration object for a whole PROGRESS run.

The flow ``progress_selection`` takes a :class:`RunConfig` as its single parameter, so the Prefect UI renders
a typed form from it, and ``progress run --config run.yaml`` reads a YAML file of the same shape. Every
field has a default and a description; unknown keys and invalid values are rejected with the field's name.

Presets fill the defaults: ``demo`` (the bundled synthetic pool, the tiny LLaVA model, exact-match
judge, a run that finishes in minutes on a laptop CPU) and ``paper`` (PROGRESS on LLaVA-665K: DINOv2 +
MiniLM features, 1000/5000 centres, fractions 0.075/0.09, LLaVA-1.5-7B assembled from Vicuna-7B v1.5,
CLIP ViT-L/14-336 and the stage-1 projector, LoRA at global batch 128 = 16 per GPU x 2 accumulation x 4
GPUs launched with torchrun, an InternVL judge through lmdeploy, SELECTION_NUM 7500, SAMPLES_PER_CLUSTER
100, FINAL_STEP 1039) and ``paper-8gpu`` (the same, 16 x 1 x 8 GPUs). Values given explicitly always win
over the preset.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from progress_core.base import StrictModel
from progress_core.clustering.config import ClusteringConfig, WarmupConfig
from progress_core.data.config import DataConfig
from progress_core.errors import ConfigError
from progress_core.features.config import FeatureConfig
from progress_core.probe.config import ProbeConfig, resolved_samples_per_cluster
from progress_core.run.config_errors import model_field_paths, unknown_field_hint, yaml_error_line
from progress_core.selection.config import ScheduleConfig, SelectionConfig
from progress_core.training.config import TrainingConfig

Preset = Literal["demo", "paper", "paper-8gpu"]


def _strict_copy(cls: type[BaseModel], name: str, exclude: tuple[str, ...] = ()) -> type[BaseModel]:
    """``cls`` without the ``exclude`` fields, rejecting unknown keys, nested models made strict too.

    The core modules own their configs; the run config shows them in the UI form minus the fields the run
    sets itself (e.g. the schedule horizon), and a typo in a nested key is an error, not silently ignored.
    """
    fields: dict[str, Any] = {}
    for key, info in cls.model_fields.items():
        if key in exclude:
            continue
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            annotation = _strict_copy(annotation, annotation.__name__.replace("Config", "Settings"))
            info = copy.copy(info)
            info.default_factory = annotation
        fields[key] = (annotation, info)
    model = create_model(name, __config__=ConfigDict(extra="forbid"), __module__=__name__, **fields)
    model.__doc__ = cls.__doc__
    return model


FeatureSettings = _strict_copy(FeatureConfig, "FeatureSettings")
ClusteringSettings = _strict_copy(ClusteringConfig, "ClusteringSettings")
TrainingSettings = _strict_copy(TrainingConfig, "TrainingSettings", exclude=("final_step",))
PROBE_FROM_TRAINING = ("dist_backend", "nnodes", "rdzv_endpoint", "rdzv_id", "node_jobs_dir")
ProbeSettings = _strict_copy(ProbeConfig, "ProbeSettings", exclude=("model", "seed", *PROBE_FROM_TRAINING))


class OrchestrationConfig(StrictModel):
    """Where and how the flow runs (docs/architecture.md#orchestration).

    An optional approval pause after the warm-up rounds. ``threads`` (default): feature shards run as tasks
    of the flow's own thread pool. ``dask``: they run as mapped tasks on a Dask cluster through prefect-dask, each shard committed on its own, so a lost worker
    loses only the shards it was computing; ``address`` connects to an existing cluster (a Kubernetes or
    Slurm deployment, see the README's "Scaling out"), otherwise a ``LocalCluster`` of ``n_workers``
    processes is started for the stage and closed after it.
    """

    approve_after_warmup: bool = Field(
        False,
        description="Pause after the two warm-up rounds, show the warm-up report and the planned rounds, and "
        "continue only when someone approves in the Prefect UI.",
    )
    task_runner: Literal["threads", "dask"] = Field(
        "threads", description="threads: the flow's thread pool; dask: a Dask cluster through prefect-dask."
    )
    address: str | None = Field(
        None, description="Scheduler address of an existing Dask cluster (tcp://host:8786); empty = LocalCluster."
    )
    n_workers: int = Field(2, ge=1, description="LocalCluster worker processes (when no address is given).")
    threads_per_worker: int = Field(1, ge=1, description="Threads per LocalCluster worker process.")


class PoolScale(StrictModel):
    """The pool size a preset's cluster counts and round budget are given for (docs/algorithm.md#pool-scale).

    A run leaves ``clustering.annotation_k``, ``clustering.selection_k`` and ``selection.selection_num`` empty
    unless the user sets them; each then keeps this pool's rows per centre and per round on the pool it runs
    on, so the demo preset on a 300-row pool of one's own gets a handful of concepts and several rounds
    instead of 40 centres and a single round.
    """

    rows: int = Field(665_298, ge=1, description="Pool rows the values below are given for (LLaVA-665K).")
    annotation_k: int = Field(1000, ge=1, description="Annotation centres at that pool size (the paper's 1000).")
    selection_k: int = Field(5000, ge=1, description="Selection centres at that pool size (the paper's 5000).")
    selection_num: int = Field(7500, ge=1, description="SELECTION_NUM at that pool size (the paper's 7500).")

    def scaled(self, value: int, n: int, minimum: int) -> int:
        """``value`` per ``rows`` scaled to ``n`` rows, rounded, within ``[minimum, n]``."""
        return int(min(max(round(n * value / self.rows), minimum), n))


PRESETS: dict[str, dict[str, Any]] = {
    "demo": {
        "run_dir": "runs/demo",
        "data": {"synthetic_n": 5000, "synthetic_n_eval": 600},
        "pool_scale": {"rows": 5000, "annotation_k": 40, "selection_k": 150, "selection_num": 250},
        "warmup": {"fractions": (0.15, 0.2)},
        "schedule": {"budget_fraction": 0.5},
        "training": {"global_batch_size": 8},
        "probe": {"samples_per_cluster": 30, "max_new_tokens": 8},
    },
    "paper": {
        "run_dir": "runs/paper",
        "data": {"allow_duplicate_ids": True},
        "features": {"image_encoder": "dinov2"},
        "warmup": {"fractions": (0.075, 0.09), "temperature": 0.1},
        "selection": {"temperature": 0.5},
        "schedule": {"final_step": 1039},
        "training": {
            "global_batch_size": 128,
            "per_device_batch_size": 16,
            "gradient_accumulation_steps": 2,
            "nproc_per_node": 4,
            "max_length": 2048,
            "model": {
                "mode": "real",
                "language_model": "lmsys/vicuna-7b-v1.5",
                "vision_tower": "openai/clip-vit-large-patch14-336",
                "mm_projector": "liuhaotian/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5",
            },
        },
        "probe": {"samples_per_cluster": 100, "judge": {"kind": "llm", "backend": "lmdeploy", "tp": 4}},
    },
}
# The original's own setting: 8 GPUs x 16 per device, no accumulation (finetune_lora.sh).
PRESETS["paper-8gpu"] = copy.deepcopy(PRESETS["paper"])
PRESETS["paper-8gpu"]["training"].update(gradient_accumulation_steps=1, nproc_per_node=8)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class RunConfig(StrictModel):
    """Every knob of one PROGRESS run; the flow's only parameter."""

    preset: Preset = Field(
        "demo",
        description="Defaults to start from: demo (laptop CPU), paper (LLaVA-665K on one 4-GPU node) or "
        "paper-8gpu (the same on 8 GPUs, no gradient accumulation).",
    )
    run_dir: str = Field("runs/demo", description="Directory of the run: every stage's outputs, per round.")
    shared_dir: str | None = Field(
        None,
        description="Directory for the stages before the rounds (pool, manifest, features, clusters, "
        "warm-up pools, initial model); empty = run_dir. Runs that share it reuse those stages.",
    )
    seed: int = Field(42, ge=0, description="Seed of selection, probe sampling and training data order.")
    data: DataConfig = Field(default_factory=DataConfig)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    clustering: ClusteringSettings = Field(default_factory=ClusteringSettings)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    probe: ProbeSettings = Field(default_factory=ProbeSettings)
    pool_scale: PoolScale = Field(default_factory=PoolScale)
    shard_size: int = Field(4096, ge=1, description="Rows per feature-extraction shard (one task each).")
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)
    export_original: bool = Field(True, description="Also write the original scripts' JSON files (Top_50K.json, ...).")
    export_remaining: Literal["every_round", "last"] = Field(
        "every_round",
        description="Which remaining-pool files the export writes: Remaining_605K.json and Remaining_after_<step>.json "
        "of every round, or only the last one (the pool the original scripts continue from). Each is nearly the whole "
        "pool: 7 GB of the 665K export, 33 GB at 3M rows with every round",
    )

    @model_validator(mode="after")
    def _batch_product(self) -> RunConfig:
        """per-device x accumulation x processes on all nodes must be the global batch, and the node settings
        must form a group (checked before any model loads)."""
        n = self.training.nproc_per_node
        try:
            TrainingConfig.model_construct(**dict(self.training)).check_nodes()
            if isinstance(n, int):
                self.training_config(1).micro_batches(n * self.training.nnodes)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, BaseModel):
            return data
        data = dict(data or {})
        preset = data.get("preset", "demo")
        if preset not in PRESETS:
            return data
        return _merge(PRESETS[preset], data)

    def final_step(self, pool_size: int) -> int:
        """FINAL_STEP: explicit, or ``ceil(budget_fraction * pool / global_batch)``."""
        if self.schedule.final_step is not None:
            return self.schedule.final_step
        return max(1, math.ceil(self.schedule.budget_fraction * pool_size / self.training.global_batch_size))

    def sized_to_pool(self, n: int) -> tuple[RunConfig, list[str]]:
        """This config with the empty cluster counts and round budget scaled to a pool of ``n`` rows
        (:class:`PoolScale`), and one note per scaled value for the run's log."""
        scale, notes = self.pool_scale, []
        values = {
            ("clustering", "annotation_k"): (self.clustering.annotation_k, scale.annotation_k, 2),
            ("clustering", "selection_k"): (self.clustering.selection_k, scale.selection_k, 2),
            ("selection", "selection_num"): (self.selection.selection_num, scale.selection_num, 1),
        }
        update: dict[str, dict[str, int]] = {}
        for (section, name), (given, reference, minimum) in values.items():
            if given is None:
                value = scale.scaled(reference, n, minimum)
                update.setdefault(section, {})[name] = value
                notes.append(f"{section}.{name} {value} ({reference} per {scale.rows:,} rows scaled to {n:,})")
        if self.probe.samples_per_cluster == "auto":
            spc = resolved_samples_per_cluster(self.probe)
            update["probe"] = {"samples_per_cluster": spc}
            k = update.get("clustering", {}).get("annotation_k", self.clustering.annotation_k)
            notes.append(
                f"probe.samples_per_cluster {spc} (auto: SE of a cluster's probe change <= "
                f"{self.probe.target_se:g} at accuracy 0.5; up to {spc} x {k} clusters = {spc * k:,} probe "
                "answers per round)"
            )
        if not update:
            return self, notes
        sections = {key: getattr(self, key).model_copy(update=fields) for key, fields in update.items()}
        return self.model_copy(update=sections), notes

    def feature_config(self) -> FeatureConfig:
        return FeatureConfig.model_validate(self.features.model_dump())

    def clustering_config(self) -> ClusteringConfig:
        return ClusteringConfig.model_validate(self.clustering.model_dump())

    def training_config(self, final_step: int) -> TrainingConfig:
        """The trainer's config: one schedule over the whole planned run (FINAL_STEP), see docs/algorithm.md#differences-from-the-original-scripts."""
        return TrainingConfig.model_validate({**self.training.model_dump(), "final_step": final_step})

    def probe_config(self) -> ProbeConfig:
        """The probe loads checkpoints the way the trainer wrote them (same model settings) and spans the
        training's nodes (README: The probe on every GPU); ``auto`` probe size resolved."""
        probe = {**self.probe.model_dump(), "samples_per_cluster": resolved_samples_per_cluster(self.probe)}
        nodes = {key: getattr(self.training, key) for key in PROBE_FROM_TRAINING}
        return ProbeConfig.model_validate(
            {**probe, **nodes, "model": self.training.model.model_dump(), "seed": self.seed}
        )


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config (same shape as :class:`RunConfig`), apply ``overrides``, validate.

    Raises :class:`ConfigError` naming the offending field.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(yaml_error_line(p, exc)) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    data = _merge(data, overrides or {})
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_field_error(e) for e in _one_per_field(exc.errors()))) from None


_TYPE_TAGS = frozenset({"int", "float", "str", "bool", "none"})


def _field_loc(loc: tuple) -> tuple:
    """``loc`` without pydantic's union-branch tags (``constrained-int``, ``literal['auto']``)."""
    return tuple(x for x in loc if not (isinstance(x, str) and (x in _TYPE_TAGS or "[" in x or "-" in x)))


def _one_per_field(errors: list[dict]) -> list[dict]:
    """One error per field: a value no branch of a union accepts is reported by its first branch's message."""
    first: dict[tuple, dict] = {}
    for error in errors:
        first.setdefault(_field_loc(error["loc"]), {**error, "loc": _field_loc(error["loc"])})
    return list(first.values())


def _field_error(error: dict) -> str:
    """One line per invalid field: its dotted name, what is wrong (allowed values included) and the value."""
    where = ".".join(str(x) for x in error["loc"]) or "config"
    got = f" (got {repr(error['input'])[:80]})" if error.get("type") not in ("missing", "extra_forbidden") else ""
    if error.get("type") == "extra_forbidden":
        return f"invalid config field '{where}': unknown field{unknown_field_hint(where, model_field_paths(RunConfig))}"
    return f"invalid config field '{where}': {error['msg']}{got}"
