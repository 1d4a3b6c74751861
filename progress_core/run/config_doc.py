"""The run config explained by its own field descriptions (docs/architecture.md#configuration).

One source of truth for what a knob means: the descriptions on :class:`progress_core.config.RunConfig`
become the comments of ``progress config --preset X`` and the help texts of the Prefect UI's form.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from progress_core.errors import ConfigError
from progress_core.run.config import PRESETS, RunConfig


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def describe(path: str, model: type[BaseModel] = RunConfig) -> str:
    """The description of the dotted field ``path`` (e.g. ``selection.selection_num``) of the run config."""
    head, _, rest = path.partition(".")
    info = model.model_fields[head]
    if rest:
        nested = _model_of(info.annotation)
        if nested is None:
            raise KeyError(path)
        return describe(rest, nested)
    nested = _model_of(info.annotation)
    text = info.description or (nested.__doc__ if nested else "") or ""
    return " ".join(text.split())


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in text.splitlines() if line.strip()]


def _lines(model: BaseModel, data: dict[str, Any], indent: str) -> list[str]:
    out: list[str] = []
    for key, info in type(model).model_fields.items():
        value = getattr(model, key)
        if isinstance(value, BaseModel):
            doc = (type(value).__doc__ or "").strip().splitlines()
            out += _comment(info.description or (doc[0] if doc else ""), indent)
            out.append(f"{indent}{key}:")
            out += _lines(value, data[key], indent + "  ")
            continue
        out += _comment(info.description or "", indent)
        dumped = yaml.safe_dump(data[key], default_flow_style=True, width=10**6).removesuffix("...\n").strip()
        out.append(f"{indent}{key}: {dumped}")
    return out


def commented_yaml(cfg: RunConfig) -> str:
    """``cfg`` as YAML with every field's description as a comment above it (loads back to the same config)."""
    header = _comment((RunConfig.__doc__ or "").strip(), "")
    return "\n".join([*header, *_lines(cfg, cfg.model_dump(mode="json"), "")]) + "\n"


STAGE_ORDER = ("pool", "manifest", "features", "clusters", "warm-up pools", "model init", "rounds", "export")
"""The stages of a run in flow order (docs/architecture.md#a-round-through-the-files)."""

_DOWNSTREAM: dict[str, tuple[str, ...]] = {
    "pool": ("manifest",),
    "manifest": ("features", "model init"),
    "features": ("clusters",),
    "clusters": ("warm-up pools",),
    "warm-up pools": ("rounds",),
    "model init": ("rounds",),
    "rounds": ("export",),
    "export": (),
}

_FIRST_STAGE: dict[str, tuple[str, ...]] = {
    "preset": ("pool",),
    "run_dir": ("pool",),
    "shared_dir": ("pool",),
    "seed": ("rounds",),
    "data": ("pool",),
    "data.manifest_mode": ("manifest",),
    "data.allow_duplicate_ids": ("manifest",),
    "data.hash_images": ("manifest",),
    "features": ("features",),
    "shard_size": ("features",),
    "clustering": ("clusters",),
    "warmup": ("warm-up pools",),
    "selection": ("rounds",),
    "schedule": ("rounds",),
    "training": ("rounds",),
    "training.model": ("model init",),
    "probe": ("rounds",),
    "export_original": ("export",),
    "orchestration": (),
}


def invalidated_stages(path: str) -> list[str]:
    """The stages whose cache a change of field ``path`` invalidates, in flow order.

    A stage's key holds the settings it reads and the content hashes of its inputs
    (docs/architecture.md#stage-contract), so a change recomputes the first stage that reads the field and
    everything downstream of it; ``orchestration`` only changes where and how tasks run.
    """
    parts = path.split(".")
    first: tuple[str, ...] = ()
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in _FIRST_STAGE:
            first = _FIRST_STAGE[prefix]
            break
    seen: set[str] = set()
    todo = list(first)
    while todo:
        stage = todo.pop()
        if stage not in seen:
            seen.add(stage)
            todo.extend(_DOWNSTREAM[stage])
    return [s for s in STAGE_ORDER if s in seen]


def _preset_default(path: str, preset: str) -> Any:
    value: Any = RunConfig.model_validate({"preset": preset}).model_dump(mode="json")
    for part in path.split("."):
        value = value[part]
    return value


def explain(path: str) -> str:
    """What ``progress config --explain FIELD`` prints: description, default per preset, stages it invalidates.

    Raises ``KeyError`` naming the closest fields when ``path`` is not a field of the run config.
    """
    try:
        text = describe(path)
    except KeyError:
        raise KeyError(path) from None
    lines = [path, f"  {text}" if text else "  (no description)"]
    for preset in PRESETS:
        dumped = yaml.safe_dump(_preset_default(path, preset), default_flow_style=True, width=10**6)
        lines.append(f"  default ({preset}): {dumped.removesuffix('...' + chr(10)).strip()}")
    stages = invalidated_stages(path)
    lines.append("  recomputes: " + (", ".join(stages) if stages else "nothing (where and how tasks run only)"))
    return "\n".join(lines) + "\n"


def field_paths(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted field path of the run config (sections and leaves)."""
    out: list[str] = []
    for key, info in model.model_fields.items():
        path = f"{prefix}{key}"
        out.append(path)
        nested = _model_of(info.annotation)
        if nested is not None:
            out += field_paths(nested, path + ".")
    return out


def explain_or_error(path: str) -> str:
    """:func:`explain`, or a :class:`ConfigError` listing the closest field names."""
    import difflib

    try:
        return explain(path)
    except KeyError:
        close = difflib.get_close_matches(path, field_paths(), n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `progress config` lists every field"
        raise ConfigError(f"unknown config field '{path}'{hint}") from None
