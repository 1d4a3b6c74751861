"""The config options every command that runs a stage shares: ``--config``, ``--preset`` and ``--set``.

A knob's default lives only in the run config (:class:`progress_core.run.config.RunConfig`,
docs/architecture.md#configuration); the stage commands take their input and output paths as options and
every other setting from the resolved config, so ``progress cluster`` by hand and ``progress run`` compute
the same thing from the same file.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml

from progress_core.errors import ConfigError
from progress_core.run.config import Preset, RunConfig, load_config

PRESETS = typing.get_args(Preset)

EXPLAIN_HINT = (
    "Every other setting comes from the run config: --config FILE, --preset NAME and --set KEY=VALUE "
    "(defaults: the demo preset); `progress config --explain FIELD` describes a field."
)

ConfigFile = Annotated[
    Optional[Path],
    typer.Option(
        "--config",
        "-c",
        help="YAML file shaped like the run config (see `progress config --preset demo`).",
    ),
]
PresetName = Annotated[
    Optional[str],
    typer.Option("--preset", help=f"Defaults to start from: {', '.join(PRESETS)} (your values win; default demo)."),
]


def set_option(example: str) -> Any:
    """The repeatable ``--set`` option, its help naming a field this command reads."""
    return typer.Option(
        None,
        "--set",
        metavar="KEY=VALUE",
        help=f"Override one config field, e.g. --set {example} (repeatable; dotted keys address nested "
        "fields; values are YAML). `progress config --explain FIELD` describes a field.",
    )


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``a.b.c=value`` pairs (values parsed as YAML scalars) → nested dict."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} was already given a value")
        node[parts[-1]] = yaml.safe_load(value)
    return out


def resolve_config(config: Optional[Path], preset: Optional[str], sets: list[str] | None) -> RunConfig:
    """The run config of a stage command: ``config`` file, then ``preset``, then each ``--set`` (last wins)."""
    overrides = parse_set(sets)
    if preset:
        overrides["preset"] = preset
    return load_config(config, overrides)
