"""``progress select``: one selection round by hand (SPEC §3.3)."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add ``progress select`` to the progress app."""
