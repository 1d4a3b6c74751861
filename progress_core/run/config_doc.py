"""The run config explained by its own field descriptions (docs/architecture.md#configuration).

One source of truth for what a knob means: the descriptions on :class:`progress_core.run.config.RunConfig`
become the comments of ``progress config --preset X`` and the help texts of the Prefect UI's form.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import BaseModel

from progress_core.errors import ConfigError
from progress_core.run.config import PRESETS, RunConfig
from progress_core.run.config_errors import model_field_paths


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


def _preset_default(path: str, preset: str) -> Any:
    value: Any = RunConfig.model_validate({"preset": preset}).model_dump(mode="json")
    for part in path.split("."):
        value = value[part]
    return value


def explain(path: str, keyed: Sequence[str] | None = None, downstream: Sequence[str] | None = None) -> str:
    """What ``progress config --explain FIELD`` prints: description, default per preset, and (when the caller
    computed them, as the CLI does from the flow's stage inputs) the stages whose cache key the field enters
    and those that recompute only when an upstream output changes (docs/architecture.md#what-a-key-covers).

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
    if keyed is not None:
        lines.append(
            "  enters the key of: " + (", ".join(keyed) if keyed else "no stage (where and how tasks run only)")
        )
    if downstream:
        lines.append("  then, where their outputs change: " + ", ".join(downstream))
    return "\n".join(lines) + "\n"


def field_paths(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted field path of the run config (sections and leaves)."""
    return model_field_paths(model, prefix)


def explain_or_error(path: str, keyed: Sequence[str] | None = None, downstream: Sequence[str] | None = None) -> str:
    """:func:`explain`, or a :class:`ConfigError` listing the closest field names."""
    try:
        return explain(path, keyed, downstream)
    except KeyError:
        close = difflib.get_close_matches(path, field_paths(), n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `progress config` lists every field"
        raise ConfigError(f"unknown config field '{path}'{hint}") from None
