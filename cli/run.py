"""``progress run`` and ``progress demo``: the whole selection flow from the command line.

The flow runs on Prefect's ephemeral server unless ``PREFECT_API_URL`` points at a running one (then the run
shows up in that server's UI). The orchestration package is imported only when these commands run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer
import yaml

from progress_core.config import load_config
from progress_core.errors import ConfigError


def _parse_set(items: list[str]) -> dict[str, Any]:
    """``a.b.c=value`` pairs (values parsed as YAML scalars) → nested dict."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def format_rounds(rows: list[dict]) -> str:
    """The table of rounds printed at the end of a run."""
    header = (
        f"{'round':>5} {'strategy':<12} {'steps':>11} {'budget':>6} {'new':>6} {'selected':>8} {'probe acc':>9} "
        f"{'secs':>6}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['round']:>5} {str(r['strategy'])[:12]:<12} {r['from_step']:>5}→{r['to_step']:<5} "
            f"{r.get('budget', r['new']):>6} {r['new']:>6} {r['selected']:>8} {r['probe_accuracy']:>9.3f} "
            f"{r['seconds']:>6}"
        )
    return "\n".join(lines)


def run_flow(overrides: dict[str, Any], config_path: Optional[Path]) -> dict:
    """Validate the config and run the ``progress_selection`` flow; returns the flow's summary."""
    cfg = load_config(config_path, overrides)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from flows.progress_selection import progress_selection

    return progress_selection(config=cfg)


def format_concepts(path: str) -> str:
    """Per concept family: pool, selected, and probe accuracy at the first and last probe."""
    import pandas as pd

    t = pd.read_parquet(path)
    lines = [f"{'family':<14} {'pool':>6} {'selected':>8} {'share':>6} {'acc first':>9} {'acc last':>8}"]
    for r in t.itertuples():
        lines.append(
            f"{r.family:<14} {r.pool:>6} {r.selected:>8} {r.selected_share:>6.0%} "
            f"{r.first_probe_accuracy:>9.2f} {r.last_probe_accuracy:>8.2f}"
        )
    return "\n".join(lines)


def _report(summary: dict) -> None:
    typer.echo("")
    typer.echo(format_rounds(summary["rounds"]))
    if summary.get("concept_summary"):
        typer.echo("")
        typer.echo(format_concepts(summary["concept_summary"]))
    typer.echo("")
    typer.echo(f"run directory:      {summary['run_dir']}")
    typer.echo(f"final selection:    {summary['final_selection']}  (sample_id Parquet)")
    if summary.get("export_dir"):
        typer.echo(f"original-format:    {summary['export_dir']}  (Top_50K.json, Selected_until_*.json, ...)")
    typer.echo(f"per-round files:    {summary['run_dir']}/rounds/rNN/{{select,train,probe}}")
    typer.echo(f"run summary:        {summary['run_dir']}/summary.json")
    if summary.get("report_html"):
        typer.echo(f"run report:         {summary['report_html']}  (HTML with plots)")
    if summary.get("concept_report"):
        typer.echo(f"per-concept plot:   {summary['concept_report']}  (probe accuracy and selection share per round)")


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``demo``."""

    @app.command("run")
    def run_command(
        config: Optional[Path] = typer.Option(
            None, "--config", "-c", help="YAML file shaped like the run config (see `progress config --preset demo`)."
        ),
        run_dir: Optional[str] = typer.Option(None, "--run-dir", help="Override run_dir."),
        preset: Optional[str] = typer.Option(None, "--preset", help="demo or paper (defaults under your values)."),
        set_: list[str] = typer.Option(
            [],
            "--set",
            help="Override one field, e.g. --set selection.selection_num=500 "
            "(repeatable; dotted keys address nested fields).",
        ),
    ) -> None:
        """Run the whole PROGRESS selection flow (resumable: re-running continues where it stopped).

        Stages: features → dual k-means → COINCIDE warm-up pools → train/probe W1 and W2 → rounds of
        select → train → probe until FINAL_STEP. Completed stages are cached by content: the same config and
        run directory re-execute nothing that finished.
        """
        overrides = _parse_set(set_)
        if run_dir:
            overrides["run_dir"] = run_dir
        if preset:
            overrides["preset"] = preset
        _report(run_flow(overrides, config))

    @app.command("demo")
    def demo_command(
        out: str = typer.Option("runs/demo", "--out", help="Run directory of the demo."),
    ) -> None:
        """Run the whole flow on the bundled synthetic pool with the tiny LLaVA model (a few minutes on CPU)."""
        _report(run_flow({"preset": "demo", "run_dir": out}, None))

    @app.command("prepare-run")
    def prepare_run_command(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML run config (as for `progress run`)."),
        out: Optional[str] = typer.Option(None, "--out", help="Directory of the prepared data (sets shared_dir)."),
        set_: list[str] = typer.Option([], "--set", help="Override one config field (repeatable)."),
    ) -> None:
        """Only the data preparation of a run: manifest, features, both clusterings, warm-up pools.

        Later runs with the same `shared_dir` and settings reuse all of it.
        """
        overrides = _parse_set(set_)
        if out:
            overrides["shared_dir"] = out
        cfg = load_config(config, overrides)
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        from flows.prepare_data import prepare_data

        result = prepare_data(config=cfg)
        typer.echo("")
        for key, value in result.items():
            typer.echo(f"{key:<13} {value}")

    @app.command("config")
    def config_command(
        preset: str = typer.Option("demo", "--preset", help="demo or paper."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="Validate this YAML file instead."),
    ) -> None:
        """Print a complete run config as YAML (a starting point for `progress run --config`)."""
        cfg = load_config(config, None if config else {"preset": preset})
        typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
