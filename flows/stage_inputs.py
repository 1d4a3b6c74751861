"""What each stage of a run reads from the run config (docs/architecture.md#what-a-key-covers).

The flow builds every stage's settings through the functions here, so a knob enters exactly the keys of the
stages whose settings it changes. :func:`stages_keyed_by` computes that set for any field by changing the
field and comparing what each stage would be handed; ``progress config --explain FIELD`` prints it. Nothing
here is written by hand per field: a new field or a new stage input is covered as soon as the flow uses it.
"""

from __future__ import annotations

import copy
import types
import typing
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from progress_core.base import keyed_dump
from progress_core.probe.config import resolved_samples_per_cluster
from progress_core.run.config import RunConfig, _merge
from progress_core.run.config_doc import field_paths
from progress_core.selection.schedule import (
    RoundPlan,
    coincide_budget,
    horizon,
    initial_state,
    plan_from,
    warmup_sizes,
)

PROBING_STRATEGIES = frozenset({"progress"})
"""Strategies that read the probe's accuracy; the others skip probing unless ``probe.all_strategies``."""

EXPLAIN_POOL_ROWS = 100_000
"""Pool size the field-to-stage table is computed for (sizes only matter where a knob is a share of it)."""

STAGE_ORDER = (
    "pool",
    "manifest",
    "features_shard",
    "features",
    "kmeans[annotation]",
    "kmeans[selection]",
    "warmup_pools",
    "coincide_order",
    "init_model",
    "commit_warmup",
    "select",
    "train",
    "probe",
    "export_original",
)
"""The stages of a run in flow order (docs/architecture.md#a-round-through-the-files)."""

READS: dict[str, tuple[str, ...]] = {
    "manifest": ("pool",),
    "features_shard": ("manifest",),
    "features": ("features_shard", "manifest"),
    "kmeans[annotation]": ("features",),
    "kmeans[selection]": ("features",),
    "warmup_pools": ("features", "kmeans[selection]"),
    "coincide_order": ("features", "kmeans[selection]"),
    "init_model": ("manifest",),
    "commit_warmup": ("warmup_pools",),
    "select": ("kmeans[annotation]", "coincide_order", "probe", "commit_warmup", "manifest"),
    "train": ("init_model", "commit_warmup", "select", "manifest"),
    "probe": ("train", "kmeans[annotation]", "manifest", "commit_warmup", "select"),
    "export_original": ("manifest", "kmeans[annotation]", "warmup_pools", "select", "probe"),
}
"""Which stages' outputs each stage reads (a round's select and train read the previous round's probe and
checkpoint), so a changed output re-keys its readers through their input content hashes."""


def kmeans_k(cfg: RunConfig, name: str, n: int) -> int:
    """Centres of the ``annotation`` or ``selection`` clustering of a pool of ``n`` rows."""
    sized, _ = cfg.sized_to_pool(n)
    return sized.clustering.annotation_k if name == "annotation" else sized.clustering.selection_k


def probe_samples_per_cluster(plan: RoundPlan, cfg: RunConfig) -> int | None:
    """Samples per cluster the round's probe answers (``docs/algorithm.md#probe-and-judge``): None = all of the
    selection at a warm-up probe of the selected set, 0 = no probe for strategies that never read it."""
    held_out = cfg.probe.source == "held_out"
    spc = None if plan.kind == "warmup" and not held_out else resolved_samples_per_cluster(cfg.probe)
    if not (cfg.probe.all_strategies or cfg.selection.strategy in PROBING_STRATEGIES):
        spc = 0
    return spc


def probe_seed(plan: RoundPlan, cfg: RunConfig) -> int:
    """Seed of the round's probe sample: one fixed held-out sample per run, or a new draw each round."""
    return cfg.seed if cfg.probe.source == "held_out" else cfg.seed + plan.index


def select_inputs(plan: RoundPlan, cfg: RunConfig) -> dict[str, Any]:
    """The config-derived inputs of a selection round."""
    return {"settings": cfg.selection, "budget": plan.budget, "seed": cfg.seed}


def probe_inputs(plan: RoundPlan, cfg: RunConfig) -> dict[str, Any]:
    """The config-derived inputs of a round's probe (its settings come from :meth:`RunConfig.probe_config`)."""
    return {
        "samples_per_cluster": probe_samples_per_cluster(plan, cfg),
        "seed": probe_seed(plan, cfg),
        "settings": cfg.probe_config(),
    }


def _schedule_inputs(cfg: RunConfig, n: int) -> dict[str, dict[str, Any]]:
    warmup = warmup_sizes(tuple(cfg.warmup.fractions), n)
    plans = plan_from(initial_state(cfg, n, warmup))
    final_step = horizon(plans, cfg.final_step(n))
    first = next((p for p in plans if p.kind != "warmup"), None)
    out: dict[str, dict[str, Any]] = {
        "init_model": {"settings": cfg.training.model, "out_dir": cfg.shared_dir or cfg.run_dir},
        "commit_warmup": {"n_samples": n, "out_dir": cfg.run_dir},
        "train": {"settings": cfg.training_config(final_step)},
        "export_original": {
            "enabled": cfg.export_original,
            "selection_num": cfg.selection.selection_num,
            "remaining": cfg.export_remaining,
        },
    }
    if cfg.selection.strategy == "coincide":
        budget = coincide_budget(final_step, cfg.training.global_batch_size, n, warmup)
        out["coincide_order"] = {"budget": budget, "settings": cfg.warmup.pruning_settings()}
    if first is not None:
        out["select"] = select_inputs(first, cfg)
        out["probe"] = probe_inputs(first, cfg)
    return out


def stage_inputs(cfg: RunConfig, n: int) -> dict[str, dict[str, Any]]:
    """Every stage's config-derived inputs in a run of ``cfg`` over a pool of ``n`` rows, as the flow passes
    them (the first selection round stands for every round: the rules are the same)."""
    cfg, _ = cfg.sized_to_pool(n)
    features = cfg.feature_config()
    out: dict[str, dict[str, Any]] = {
        "pool": {"data": cfg.data.pool_settings(), "out_dir": cfg.shared_dir or cfg.run_dir},
        "manifest": {
            "mode": cfg.data.manifest_mode,
            "allow_duplicate_ids": cfg.data.allow_duplicate_ids,
            "hash_images": cfg.data.hash_images,
        },
        "features": {"balanced": features.balanced, "sources": features.import_sources()},
    }
    if not features.import_sources():
        out["features_shard"] = {"settings": features.extraction_settings(), "shard_size": cfg.shard_size}
    for name in ("annotation", "selection"):
        out[f"kmeans[{name}]"] = {"k": kmeans_k(cfg, name, n), "settings": cfg.clustering_config().kmeans_settings()}
    out["warmup_pools"] = {"settings": cfg.warmup}
    out.update(_schedule_inputs(cfg, n))
    return out


def downstream_of(stages: list[str]) -> list[str]:
    """Every stage that reads, directly or not, an output of ``stages`` (not themselves), in flow order."""
    readers: dict[str, set[str]] = {}
    for stage, inputs in READS.items():
        for source in inputs:
            readers.setdefault(source, set()).add(stage)
    seen: set[str] = set()
    todo = list(stages)
    while todo:
        for reader in readers.get(todo.pop(), ()):
            if reader not in seen:
                seen.add(reader)
                todo.append(reader)
    return [s for s in STAGE_ORDER if s in seen and s not in stages]


def _dump(value: Any) -> Any:
    return keyed_dump(value) if isinstance(value, BaseModel) else value


def _field_at(model: type[BaseModel], path: str):
    head, _, rest = path.partition(".")
    info = model.model_fields[head]
    if rest:
        return _field_at(_model_of(info.annotation), rest)
    return info


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _scalar_candidates(annotation: Any, value: Any) -> list[Any]:
    """Other values a field of type ``annotation`` can take than ``value``, most plausible first."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return [a for a in args if a != value]
    if origin in (typing.Union, types.UnionType):
        return [c for a in args if a is not type(None) for c in _scalar_candidates(a, value)] + (
            [None] if type(None) in args and value is not None else []
        )
    if origin is tuple:
        return [tuple(_bump(v) for v in value)] if value else []
    if annotation is bool:
        return [not value]
    if annotation is int:
        base = 0 if not isinstance(value, int) or isinstance(value, bool) else value
        return [base + 1, base + 2, max(base - 1, 1), 1, 8]
    if annotation is float:
        base = value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.5
        return [base * 0.5 if base else 0.5, min(base + 0.05, 0.95), base * 2 if base else 0.25]
    if annotation is str:
        return [f"{value}-other" if value else "other"]
    return []


def _bump(v: Any) -> Any:
    return v * 0.5 + 0.01 if isinstance(v, float) else v


def changed_config(cfg: RunConfig, path: str) -> RunConfig | None:
    """``cfg`` with the leaf field ``path`` set to another valid value, or None when none validates."""
    data = cfg.model_dump(mode="python")
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        node = node[part]
    value = node[parts[-1]]
    for candidate in _scalar_candidates(_field_at(RunConfig, path).annotation, value):
        trial = copy.deepcopy(data)
        target = trial
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = candidate
        try:
            return RunConfig.model_validate(trial)
        except (ValidationError, ValueError, TypeError):
            continue
    return None


ONLY_WITH: dict[str, dict] = {
    "training.node_rank": {
        "training": {"nnodes": 2, "nproc_per_node": 1, "rdzv_endpoint": "127.0.0.1:29500", "node_jobs_dir": "nodes"}
    },
}
"""Fields that can take another value only together with others (a node rank needs a second node): the
settings :func:`stages_keyed_by` changes them from."""


def stages_keyed_by(path: str, cfg: RunConfig | None = None, n: int = EXPLAIN_POOL_ROWS) -> list[str] | None:
    """The stages whose key the field ``path`` enters, in flow order (a section: any of its fields), computed
    by changing the field and comparing :func:`stage_inputs`; None when no other valid value was found."""
    base = cfg or RunConfig()
    leaves = [p for p in leaf_paths() if p == path or p.startswith(path + ".")]
    found: set[str] = set()
    computed = False
    for leaf in leaves:
        start = base
        other = changed_config(start, leaf)
        if other is None and leaf in ONLY_WITH:
            start = RunConfig.model_validate(_merge(base.model_dump(mode="python"), ONLY_WITH[leaf]))
            other = changed_config(start, leaf)
        if other is None:
            continue
        computed = True
        before, after = stage_inputs(start, n), stage_inputs(other, n)
        for stage in set(before) | set(after):
            if {k: _dump(v) for k, v in before.get(stage, {}).items()} != {
                k: _dump(v) for k, v in after.get(stage, {}).items()
            }:
                found.add(stage)
    if not computed:
        return None
    return [s for s in STAGE_ORDER if s in found]


def leaf_paths() -> list[str]:
    """Every dotted leaf field of the run config (the field paths that are no section of others)."""
    paths = field_paths()
    sections = {p.rpartition(".")[0] for p in paths}
    return [p for p in paths if p not in sections]
