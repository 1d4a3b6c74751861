"""``progress run`` and ``progress demo``: the whole selection flow from the command line.

The flow runs on the Prefect server at ``PREFECT_API_URL`` when set, else on the one a running ``make ui``
started (both show the run in their UI), else on a temporary server (its own process group, cleaned up after a
killed run); the first line says which. The whole config and
its input files are validated before Prefect is even imported, so a typo fails in seconds. The orchestration
package is imported only when these commands run.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import typer

from progress_cli.interrupts import interrupts_fail_loudly
from progress_cli.options import PRESETS
from progress_cli.options import parse_set as _parse_set
from progress_core.environment import apply_defaults
from progress_core.reporting.summary import format_accuracy
from progress_core.run.config import RunConfig, load_config
from progress_core.run.lock import hold_run_dir
from progress_core.run.validation import validate_run


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
            f"{r.get('budget', r['new']):>6} {r['new']:>6} {r['selected']:>8} "
            f"{format_accuracy(r['probe_accuracy']):>9} "
            f"{r['seconds']:>6}"
        )
    return "\n".join(lines)


class _NoTraceback(logging.Filter):
    """Console logs without tracebacks: a record carrying an exception is left out, the CLI prints the error
    once as one line (the Prefect server still receives the record with its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None


def quiet_tracebacks() -> None:
    """Strip tracebacks from Prefect's console logs unless ``--debug``; the server still receives them."""
    if os.environ.get("PROGRESS_DEBUG", "") not in ("", "0"):
        return
    names = ["", *(n for n in logging.root.manager.loggerDict if n.startswith("prefect"))]
    for name in names:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not any(
                isinstance(f, _NoTraceback) for f in handler.filters
            ):
                handler.addFilter(_NoTraceback())


@contextlib.contextmanager
def prefect_api(while_starting: Callable[[], object] = lambda: None) -> Iterator[None]:
    """The Prefect API of this command: ``PREFECT_API_URL`` when set, else the server of a running ``make ui``,
    else a temporary server; the command's first line says which. ``while_starting`` runs while a temporary
    server starts up (at once when there is a server already)."""
    if os.environ.get("PREFECT_API_URL"):
        typer.echo(f"prefect: the server at PREFECT_API_URL={os.environ['PREFECT_API_URL']}", err=True)
        while_starting()
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.setup import temporary_server
    from deployments.ui import running_ui_api

    ui_api = running_ui_api()
    if ui_api:
        typer.echo(
            f"prefect: the server of `make ui` (UI {ui_api.removesuffix('/api')}: the run shows there)", err=True
        )
    else:
        typer.echo(
            "prefect: a temporary server for this command (its links stop working when it ends; `make ui` keeps "
            "one up that later runs use)",
            err=True,
        )
    if ui_api:
        while_starting()
    server = contextlib.nullcontext(ui_api) if ui_api else temporary_server(while_starting=while_starting)
    with server as api_url, temporary_settings(updates={PREFECT_API_URL: api_url}):
        try:
            yield
        finally:
            from prefect.logging.handlers import APILogWorker

            with contextlib.suppress(Exception):
                APILogWorker.drain_all(timeout=10)


def checked_config(overrides: dict[str, Any], config_path: Optional[Path]) -> RunConfig:
    """The run config, with every value and input file checked before any stage runs."""
    cfg = load_config(config_path, overrides)
    validate_run(cfg)
    return cfg


def run_flow(overrides: dict[str, Any], config_path: Optional[Path]) -> dict:
    """Validate the config and run the ``progress_selection`` flow; returns the flow's summary.

    The flow's modules are imported while a temporary server starts (docs/architecture.md#orchestration), so
    a cached re-run pays for the slower of the two, not their sum."""
    cfg = checked_config(overrides, config_path)
    apply_defaults()
    from progress_cli.approval import terminal_approval

    on_terminal = cfg.orchestration.approve_after_warmup and not os.environ.get("PREFECT_API_URL")
    with interrupts_fail_loudly(), hold_run_dir(cfg.run_dir, lambda line: typer.echo(line, err=True)):
        with prefect_api(while_starting=_import_flow), terminal_approval(on_terminal):
            from flows.progress_selection import progress_selection

            quiet_tracebacks()
            return progress_selection(config=cfg)


def _import_flow() -> None:
    import flows.progress_selection  # noqa: F401


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
        typer.echo(f"original-format:    {summary['export_dir']}  (Top_<W1>.json, Selected_until_*.json, ...)")
    typer.echo(f"per-round files:    {summary['run_dir']}/rounds/rNN/{{select,train,probe}}")
    typer.echo(f"run summary:        {summary['run_dir']}/summary.json")
    if summary.get("report_html"):
        typer.echo(f"run report:         {summary['report_html']}  (HTML with plots)")
    if summary.get("concept_report"):
        typer.echo(f"per-concept plot:   {summary['concept_report']}  (probe accuracy and selection share per round)")
    skipped = summary.get("skipped") or {}
    if skipped:
        per = ", ".join(f"{reason} {count}" for reason, count in skipped.items())
        typer.echo(f"skipped rows:       {sum(skipped.values())} ({per})")
    else:
        typer.echo("skipped rows:       0")
    if summary.get("stale_moved"):
        typer.echo(f"outdated files:     {summary['stale_moved']} moved to {summary['stale_dir']}")


def register(app: typer.Typer) -> None:
    """Add ``run``, ``demo``, ``prepare-run`` and ``config``."""
    _register_run(app)
    _register_demo(app)
    _register_prepare_run(app)
    _register_config(app)


def _register_run(app: typer.Typer) -> None:
    @app.command("run")
    def run_command(
        config: Optional[Path] = typer.Option(
            None, "--config", "-c", help="YAML file shaped like the run config (see `progress config --preset demo`)."
        ),
        run_dir: Optional[str] = typer.Option(None, "--run-dir", help="Override run_dir."),
        preset: Optional[str] = typer.Option(
            None, "--preset", help=f"Defaults under your values: {', '.join(PRESETS)}."
        ),
        set_: list[str] = typer.Option(
            [],
            "--set",
            metavar="KEY=VALUE",
            help="Override one field, e.g. --set selection.selection_num=500 "
            "(repeatable; dotted keys address nested fields).",
        ),
    ) -> None:
        """Run the whole PROGRESS selection flow (resumable: re-running continues where it stopped).

        Stages: features → dual k-means → COINCIDE warm-up pools → train/probe W1 and W2 → rounds of
        select → train → probe until FINAL_STEP. Completed stages are reused when their outputs verify
        (size and content hash): the same config and run directory re-execute nothing that finished.

        The config and its input files are checked first; every problem is listed at once. Malformed pool
        rows are skipped and counted by default (data.manifest_mode: skip, as `progress manifest`);
        use --set data.manifest_mode=strict to stop at the first one.
        """
        overrides = _parse_set(set_)
        if run_dir:
            overrides["run_dir"] = run_dir
        if preset:
            overrides["preset"] = preset
        _report(run_flow(overrides, config))


def _register_demo(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_command(
        out: str = typer.Option("runs/demo", "--out", help="Run directory of the demo."),
    ) -> None:
        """Run the whole flow on the bundled synthetic pool with the tiny LLaVA model (a few minutes on CPU)."""
        _report(run_flow({"preset": "demo", "run_dir": out}, None))


def _register_prepare_run(app: typer.Typer) -> None:
    @app.command("prepare-run")
    def prepare_run_command(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML run config (as for `progress run`)."),
        out: Optional[str] = typer.Option(None, "--out", help="Directory of the prepared data (sets shared_dir)."),
        set_: list[str] = typer.Option(
            [], "--set", metavar="KEY=VALUE", help="Override one config field (repeatable)."
        ),
    ) -> None:
        """Only the data preparation of a run: manifest, features, both clusterings, warm-up pools.

        Later runs with the same `shared_dir` and settings reuse all of it.
        """
        overrides = _parse_set(set_)
        if out:
            overrides["shared_dir"] = out
        cfg = checked_config(overrides, config)
        apply_defaults()
        from flows.prepare_data import prepare_data

        quiet_tracebacks()
        with interrupts_fail_loudly(), prefect_api():
            result = prepare_data(config=cfg)
        typer.echo("")
        for key, value in result.items():
            typer.echo(f"{key:<13} {value}")


def _register_config(app: typer.Typer) -> None:
    @app.command("config")
    def config_command(
        preset: str = typer.Option("demo", "--preset", help=f"One of {', '.join(PRESETS)}."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="Validate this YAML file instead."),
        explain: Optional[str] = typer.Option(
            None,
            "--explain",
            metavar="FIELD",
            help="Explain one field (e.g. selection.temperature): description, default per preset, what it recomputes.",
        ),
    ) -> None:
        """Print a complete run config as YAML, every field explained in a comment (a starting point for
        `progress run --config`)."""
        from flows.stage_inputs import downstream_of, stages_keyed_by
        from progress_core.run.config_doc import commented_yaml, explain_or_error, field_paths

        if explain:
            keyed = stages_keyed_by(explain) if explain in field_paths() else None
            typer.echo(explain_or_error(explain, keyed, downstream_of(keyed or [])), nl=False)
            return

        cfg = load_config(config, None if config else {"preset": preset})
        typer.echo(commented_yaml(cfg), nl=False)
