"""The run report as files and as a Prefect artifact (``docs/architecture.md#file-kinds``).

The HTML page and its PNG plots are written by :mod:`progress_core.reporting.report`; this task publishes the same
content as a markdown artifact with the plots embedded as data-URI PNGs, so the Prefect UI shows it without
access to the run directory.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from progress_core.reporting.report import comparison_report, run_report
from progress_core.reporting.summary import RunSummary
from tasks.artifacts import artifact_key, upsert_markdown
from tasks.stage import StageRecord


@task(name="report", task_run_name="report")
def publish_run_report(summary: RunSummary, manifest: StageRecord, rows: list[dict]) -> RunSummary:
    """Write ``report.html`` + PNGs into the run directory and publish them; returns the summary with its path."""
    report = run_report(summary, manifest.files["manifest"], manifest.meta.get("labels"), Path(summary.run_dir))
    upsert_markdown(
        artifact_key(summary.run_dir, "report"),
        report.markdown,
        "Run report: accuracy per concept over rounds, where each round's budget went",
    )
    return summary.model_copy(update={"report_html": str(report.html)})


@task(name="comparison-report", task_run_name="comparison-report")
def publish_comparison_report(
    base_dir: str, table_path: str, concepts_path: str | None, majority: float | None = None
) -> str:
    """Write the comparison's ``report.html`` + PNGs under ``base_dir`` and publish them; returns the HTML path."""
    report = comparison_report(table_path, concepts_path, Path(base_dir), majority)
    upsert_markdown(
        artifact_key(base_dir, "comparison-report"),
        report.markdown,
        "Strategy comparison: accuracy vs budget with seed spread",
    )
    return str(report.html)
