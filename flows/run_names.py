"""Flow run names that tell runs apart in the Prefect UI's run list (README "What a run shows")."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any


def flow_run_name(parameters: dict[str, Any], started: datetime) -> str:
    """What runs, where, with which budget and seed, and when it was started
    (``random · ui-run · budget 32 · seed 7 · 12-04 13:05:09``)."""
    what = parameters.get("strategy") or "compare " + ",".join(parameters.get("strategies") or [])
    where = Path(parameters.get("run_dir") or parameters.get("preset") or "run").name
    budget = parameters.get("budget") or "preset"
    seed = parameters.get("seed", 42)
    return f"{what} · {where} · budget {budget} · seed {seed} · {started:%m-%d %H:%M:%S}"
