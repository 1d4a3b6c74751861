"""Config problems as one line each: where a YAML file stops parsing, and the closest fields to an unknown one.

A user edits a config file by hand; the line to fix and the spelling meant are what they need, not the YAML
parser's four-line excerpt of ``"<unicode string>"`` (``docs/architecture.md#configuration``).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml
from pydantic import BaseModel


def yaml_error_line(path: str | Path, exc: yaml.YAMLError) -> str:
    """``<file>, line L, column C: not valid YAML: <problem>`` (1-based, as editors count)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    opened = f" ({context} at line {context_mark.line + 1})" if context and context_mark is not None else ""
    return f"{path}{where}: not valid YAML: {problem}{opened}"


def model_field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted field path of ``model`` (sections and leaves), nested models followed."""
    out: list[str] = []
    for key, info in model.model_fields.items():
        path = f"{prefix}{key}"
        out.append(path)
        nested = info.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            out += model_field_paths(nested, path + ".")
    return out


def unknown_field_hint(where: str, fields: list[str]) -> str:
    """``; did you mean a.b, a.c?`` from the config's ``fields``, else where to find them."""
    close = difflib.get_close_matches(where, fields, n=3, cutoff=0.6)
    return (
        f"; did you mean {', '.join(close)}?"
        if close
        else "; remove it or check its spelling (`progress config` lists every field)"
    )
