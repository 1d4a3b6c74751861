"""Stage commands run by hand, as the original's scripts are: ``features``, ``cluster``, ``warmup``
(this module) and ``select`` (``progress_core.commands.select_cmd``)."""
from __future__ import annotations

import typer


def _register_features(app: typer.Typer) -> None:
    """Add ``progress features`` (SPEC §1)."""


def _register_cluster(app: typer.Typer) -> None:
    """Add ``progress cluster`` (SPEC §2.1)."""


def _register_warmup(app: typer.Typer) -> None:
    """Add ``progress warmup`` (SPEC §2.3-2.4)."""


def register(app: typer.Typer) -> None:
    """Add the stage commands to the progress app."""
    from progress_core.commands.select_cmd import register as _register_select

    _register_features(app)
    _register_cluster(app)
    _register_warmup(app)
    _register_select(app)
