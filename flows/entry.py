"""The flows behind the deployments: a short form over the run config (docs/architecture.md#configuration).

The Prefect UI renders a flow's parameters as its Run form. ``progress_selection`` takes the whole
:class:`~progress_core.run.config.RunConfig`, which makes a form a hundred fields long in which every field is
always sent, so the preset could never fill anything. These entry points take the handful of knobs people
change per run as top-level parameters and everything else as one ``advanced`` object; a field left unset
anywhere takes the chosen preset's value, so switching the preset switches every default that follows
from it. They run the selection in their own flow run (no nested run), so its tasks and artifacts are the
ones the UI shows for the run.

Relative run directories live under ``$PROGRESS_RUNS_DIR`` (default ``./runs`` of the worker's directory).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

from prefect import flow, get_run_logger

from flows.run_names import flow_run_name
from progress_core.errors import ProgressError
from progress_core.run.config import Preset, RunConfig, _merge, load_config
from progress_core.run.config_doc import describe
from progress_core.selection.strategies import available_strategies

Strategy = Literal[tuple(available_strategies())]  # type: ignore[valid-type]
DEFAULT_COMPARED = [s for s in ("progress", "random", "tfs", "coincide") if s in available_strategies()]


def runs_root() -> Path:
    """Where relative run directories go: ``$PROGRESS_RUNS_DIR``, else ``./runs``."""
    return Path(os.environ.get("PROGRESS_RUNS_DIR") or "runs").resolve()


def resolve_run_dir(run_dir: str | None, preset: str) -> str:
    """Absolute ``run_dir`` as given; a relative one, or the preset's name when empty, under :func:`runs_root`."""
    path = Path(run_dir or preset).expanduser()
    return str(path if path.is_absolute() else runs_root() / path)


def build_config(
    preset: str = "demo",
    pool_json: str | None = None,
    image_root: str | None = None,
    run_dir: str | None = None,
    strategy: str | None = None,
    budget: int | None = None,
    seed: int | None = None,
    advanced: dict[str, Any] | None = None,
) -> RunConfig:
    """The run config of a form submission: preset, then ``advanced``, then the top-level fields set
    (``budget`` 0 or None = the preset's, scaled to the pool).

    Raises :class:`~progress_core.errors.ConfigError` naming the offending field.
    """
    short: dict[str, Any] = {"preset": preset}
    data: dict[str, Any] = {"pool_json": pool_json, "image_root": image_root}
    short["data"] = {k: v for k, v in data.items() if v not in (None, "")}
    if strategy:
        short["selection"] = {"strategy": strategy}
    if budget:
        short.setdefault("selection", {})["selection_num"] = budget
    if seed is not None:
        short["seed"] = seed
    merged = _merge(dict(advanced or {}), short)
    merged["run_dir"] = resolve_run_dir(run_dir or (advanced or {}).get("run_dir"), preset)
    return load_config(overrides=merged)


def _preset_default(path: str) -> str:
    values = []
    for name in get_args(Preset):
        node: Any = load_config(overrides={"preset": name}).model_dump(mode="json")
        for part in path.split("."):
            node = node[part]
        values.append(f"{name} {node}")
    return ", ".join(values)


def _preset_scales() -> str:
    scales = [(name, load_config(overrides={"preset": name}).pool_scale) for name in get_args(Preset)]
    return ", ".join(f"{name} {s.selection_num} per {s.rows:,} rows" for name, s in scales)


_ARGS = {
    "preset": describe("preset"),
    "pool_json": describe("data.pool_json"),
    "image_root": describe("data.image_root"),
    "run_dir": describe("run_dir") + " A relative path (or empty = the preset's name) goes under "
    "$PROGRESS_RUNS_DIR of the worker (default ./runs).",
    "strategy": describe("selection.strategy"),
    "budget": describe("selection.selection_num").split(";")[0]
    + f". 0 = the preset's, scaled to the pool ({_preset_scales()}).",
    "seed": describe("seed"),
    "advanced": "Any other field of the run config, same shape as `progress config --preset demo` prints, e.g. "
    '{"schedule": {"final_step": 40}, "orchestration": {"approve_after_warmup": true}}. Fields left out take '
    "the preset's values; the fields above win over the same fields here.",
    "strategies": "Strategies run one after another from the same warm-up, at the same budget.",
}


def _docstring(summary: str, names: list[str]) -> str:
    lines = [summary, "", "Args:"]
    lines += [f"    {name}: {_ARGS[name]}" for name in names]
    return "\n".join(lines)


def _log_run_dir(cfg: RunConfig) -> None:
    get_run_logger().info("run directory: %s (preset %s, strategy %s)", cfg.run_dir, cfg.preset, cfg.selection.strategy)


def _failing_in_one_line(run: Callable[[], dict]) -> Any:
    """``run()``, or a Failed state whose message is the error's one line (README "Configuration").

    A named error (a bad value in the form, a held run directory, a full disk) is the user's to fix, so the
    UI run shows that line as its state message and log instead of the engine's traceback; calling the flow
    still raises the error itself.
    """
    from prefect.states import Failed

    try:
        return run()
    except ProgressError as exc:
        get_run_logger().error("error: %s", exc)
        return Failed(message=str(exc), data=exc)


def _run_selection(
    preset: Preset = "demo",
    pool_json: str = "",
    image_root: str = "",
    run_dir: str = "",
    strategy: Strategy = "progress",
    budget: int = 0,
    seed: int = 42,
    advanced: dict[str, Any] = {},  # noqa: B006
) -> dict:
    from flows.progress_selection import progress_selection

    def run() -> dict:
        cfg = build_config(preset, pool_json, image_root, run_dir, strategy, budget, seed, advanced)
        _log_run_dir(cfg)
        return progress_selection.fn(config=cfg)

    return _failing_in_one_line(run)


def _compare(
    preset: Preset = "demo",
    pool_json: str = "",
    image_root: str = "",
    run_dir: str = "",
    strategies: list[Strategy] = DEFAULT_COMPARED,  # noqa: B006
    budget: int = 0,
    seed: int = 42,
    advanced: dict[str, Any] = {},  # noqa: B006
) -> dict:
    from flows.compare_strategies import compare_strategies

    def run() -> dict:
        cfg = build_config(preset, pool_json, image_root, run_dir or f"compare-{preset}", None, budget, seed, advanced)
        _log_run_dir(cfg)
        return compare_strategies.fn(config=cfg, strategies=list(strategies))

    return _failing_in_one_line(run)


_run_selection.__doc__ = _docstring(
    "PROGRESS data selection (resumable: a re-run or Retry with the same parameters reuses finished rounds).",
    ["preset", "pool_json", "image_root", "run_dir", "strategy", "budget", "seed", "advanced"],
)
_compare.__doc__ = _docstring(
    "Compare selection strategies at equal budgets from one shared warm-up.",
    ["preset", "pool_json", "image_root", "run_dir", "strategies", "budget", "seed", "advanced"],
)


def _named_run() -> str:
    from prefect.runtime import flow_run

    return flow_run_name(dict(flow_run.parameters), datetime.now())


run_selection = flow(_run_selection, name="progress-selection", flow_run_name=_named_run, log_prints=True)
compare = flow(_compare, name="compare-strategies", flow_run_name=_named_run, log_prints=True)
