"""``progress compare``: strategies × budgets × seeds at equal budgets, evaluated on a held-out split.

See :mod:`flows.compare_strategies` for what a seed varies, what is shared and how finished runs are reused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
import yaml

from progress_cli.interrupts import interrupts_fail_loudly
from progress_cli.options import set_option
from progress_cli.run import _parse_set
from progress_core.errors import ConfigError
from progress_core.run.config import load_config

COMPARED = ("progress", "random", "tfs", "coincide")


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--budgets expects comma-separated fractions like 0.1,0.2,0.3, got {text!r}") from None


def parse_sweep(text: str | None) -> tuple[str | None, list]:
    """``selection.temperature=0.25,0.5,1.0`` → ``("selection.temperature", [0.25, 0.5, 1.0])``; a section
    with one YAML mapping sets several of its fields in one variant: ``selection={allocation: damped,
    progress_signal: gain}``."""
    if not text:
        return None, []
    if "=" not in text:
        raise ConfigError(f"--sweep expects FIELD=V1,V2,..., got {text!r}")
    field, values = text.split("=", 1)
    if values.strip().startswith("{"):
        mapping = yaml.safe_load(values)
        if not isinstance(mapping, dict) or not mapping:
            raise ConfigError(f"--sweep {field}: expected one mapping like {{a: 1, b: 2}}, got {values!r}")
        return field.strip(), [mapping]
    parsed = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
    if not parsed:
        raise ConfigError(f"--sweep {field}: no values given")
    return field.strip(), parsed


def format_comparison(table, majority: float | None) -> str:
    """Mean ± sd of held-out accuracy per strategy (rows) and budget (columns)."""
    spread = table.groupby(["strategy", "budget"])["accuracy"].agg(["mean", "std", "count"]).reset_index()
    budgets = sorted(spread["budget"].unique())
    lines = [f"{'strategy':<28}" + "".join(f"{'budget ' + format(b, 'g'):>18}" for b in budgets)]
    for name, part in spread.groupby("strategy", sort=False):
        cells = []
        for b in budgets:
            hit = part[part["budget"] == b]
            if hit.empty:
                cells.append(f"{'-':>18}")
            else:
                r = hit.iloc[0]
                sd = 0.0 if r["std"] != r["std"] else r["std"]
                cells.append(f"{r['mean']:>9.3f} ± {sd:.3f} ({int(r['count'])})".rjust(18))
        lines.append(f"{name:<28}" + "".join(cells))
    if majority is not None:
        lines.append(f"\nmajority-answer baseline: {majority:.3f}")
    return "\n".join(lines)


STRATEGY_HELP = (
    "Strategy to compare (repeatable): progress, random, coincide, tfs; oracle, oracle_every_round and "
    'oracle_clean read a bundled pool\'s labels (benchmark-only, README "Does selection pay off?").'
)


def register(app: typer.Typer) -> None:
    """Add ``compare``."""

    @app.command("compare")
    def compare_command(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML run config (as for `progress run`)."),
        run_dir: Optional[str] = typer.Option(
            None, "--run-dir", help="Base directory: b<budget>/<strategy>/seed<k>/ per run, shared/ for common stages."
        ),
        strategies: list[str] = typer.Option(list(COMPARED), "--strategy", "-s", metavar="NAME", help=STRATEGY_HELP),
        budgets: Optional[str] = typer.Option(
            None, "--budgets", help="Comma-separated pool shares, e.g. 0.1,0.2,0.3 (default: schedule.budget_fraction)."
        ),
        seeds: int = typer.Option(1, "--seeds", min=1, help="Seeds 0..N-1 (model init, data order, selection, probe)."),
        sweep: Optional[str] = typer.Option(
            None, "--sweep", help="One config field over values, e.g. selection.temperature=0.25,0.5,1.0."
        ),
        full: bool = typer.Option(
            True, "--full/--no-full", metavar="", help="Also train on the whole pool (the ceiling)."
        ),
        set_: Optional[list[str]] = set_option("selection.temperature=0.5"),
    ) -> None:
        """Compare selection strategies at equal budgets over seeds; held-out accuracy per budget and concept.

        At each budget every strategy selects and trains the same number of samples for the same steps. Runs
        that already finished with the same settings are reused, so adding a seed or strategy only runs what is
        new. A user's pool (--set data.pool_json=... --set data.image_root=...) without data.eval_json has
        data.holdout_fraction of its rows held out for the evaluation.
        """
        overrides = _parse_set(set_)
        if run_dir:
            overrides["run_dir"] = run_dir
        cfg = load_config(config, overrides)
        field, values = parse_sweep(sweep)
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import pandas as pd

        from flows.compare_strategies import compare_strategies

        with interrupts_fail_loudly():
            result = compare_strategies(
                config=cfg,
                strategies=list(strategies),
                budgets=_floats(budgets) if budgets else None,
                seeds=list(range(seeds)),
                sweep_field=field,
                sweep_values=values,
                include_full=full,
            )
        table = pd.read_parquet(result["comparison"])
        typer.echo("")
        typer.echo(format_comparison(table, result.get("majority_baseline")))
        typer.echo(f"\ncomparison table:   {result['comparison']}")
        typer.echo(f"per concept:        {result['comparison_concepts']}")
        typer.echo(f"report:             {result['report_html']}")
