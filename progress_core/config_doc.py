"""The run config explained by its own field descriptions (docs/architecture.md#configuration).

One source of truth for what a knob means: the descriptions on :class:`progress_core.config.RunConfig`
become the comments of ``progress config --preset X`` and the help texts of the Prefect UI's form.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from progress_core.config import RunConfig


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
