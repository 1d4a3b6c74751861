"""What a run did, per concept family: selection shares and probe accuracy per round, as a table and a plot.

Only for pools with evaluation labels (the bundled pool): labels never feed selection, they explain it. The
point of PROGRESS (arXiv 2506.01085 §3) is that rounds move budget towards concepts whose accuracy is rising
now; this report shows whether they did.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from progress_core.id_sets import read_ids
from progress_core.io import atomic_path, write_parquet
from progress_core.reporting.summary import format_accuracy


def _family_of(manifest_path: str | os.PathLike, labels_path: str | os.PathLike) -> np.ndarray:
    ids = pq.read_table(manifest_path, columns=["id"]).column("id").to_pandas()
    labels = pd.read_parquet(labels_path, columns=["id", "family"]).drop_duplicates("id")
    return pd.DataFrame({"id": ids}).merge(labels, on="id", how="left")["family"].fillna("unlabelled").to_numpy()


def concept_report(
    manifest_path: str | os.PathLike, labels_path: str | os.PathLike, rounds: Sequence[dict]
) -> pd.DataFrame:
    """One row per (round, family): new samples, their share, probe n/correct/accuracy after the round.

    ``rounds``: dicts with ``round``, ``to_step``, ``new_path`` (sample-id Parquet) and ``probe_path``
    (the probe's per-sample Parquet with ``sample_id`` and ``verdict``).
    """
    family = _family_of(manifest_path, labels_path)
    out = []
    for r in rounds:
        new = read_ids(r["new_path"])
        counts = pd.Series(family[new]).value_counts()
        probe = pd.read_parquet(r["probe_path"], columns=["sample_id", "verdict"])
        probe["family"] = family[probe["sample_id"].to_numpy()]
        judged = probe.dropna(subset=["verdict"])
        acc = judged.groupby("family")["verdict"].agg(["size", "sum"])
        for fam in sorted(set(counts.index) | set(acc.index)):
            n_new = int(counts.get(fam, 0))
            n_probe = int(acc["size"].get(fam, 0))
            out.append(
                {
                    "round": r["round"],
                    "step": r["to_step"],
                    "family": fam,
                    "new": n_new,
                    "new_share": n_new / max(len(new), 1),
                    "probe_n": n_probe,
                    "probe_correct": int(acc["sum"].get(fam, 0)),
                    "probe_accuracy": float(acc["sum"].get(fam, 0) / n_probe) if n_probe else np.nan,
                }
            )
    return pd.DataFrame(out)


def plot_concept_report(report: pd.DataFrame, out_png: str | os.PathLike) -> Path:
    """Two panels: probe accuracy per family over steps, and each round's budget share per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    acc = report.pivot_table(index="step", columns="family", values="probe_accuracy")
    if acc.notna().to_numpy().any():
        acc.plot(ax=ax1, marker="o", ms=3)
        ax1.legend(fontsize=7, ncol=2)
    else:
        ax1.text(0.5, 0.5, "not probed (the strategy does not read accuracy)", ha="center", transform=ax1.transAxes)
    ax1.set(title="probe accuracy per concept family", xlabel="step", ylabel="accuracy", ylim=(-0.02, 1.02))
    share = report.pivot_table(index="round", columns="family", values="new_share", fill_value=0.0)
    share.plot(ax=ax2, kind="bar", stacked=True, width=0.85, legend=False)
    ax2.set(title="share of each round's new samples", xlabel="round (0, 1 = warm-up)", ylabel="share")
    fig.tight_layout()
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out


def concept_summary(
    manifest_path: str | os.PathLike, labels_path: str | os.PathLike, report: pd.DataFrame
) -> pd.DataFrame:
    """Per family over the whole run: pool size, samples selected, share of the family selected, and the
    accuracy at the first and the last probe."""
    pool = pd.Series(_family_of(manifest_path, labels_path)).value_counts().rename("pool")
    selected = report.groupby("family")["new"].sum().rename("selected")
    probes = report.dropna(subset=["probe_accuracy"]).sort_values("step")
    first = probes.groupby("family")["probe_accuracy"].first().rename("first_probe_accuracy")
    last = probes.groupby("family")["probe_accuracy"].last().rename("last_probe_accuracy")
    table = pd.concat([pool, selected, first, last], axis=1).rename_axis("family").reset_index()
    table["selected"] = table["selected"].fillna(0).astype(int)
    table["selected_share"] = table["selected"] / table["pool"].clip(lower=1)
    return table[["family", "pool", "selected", "selected_share", "first_probe_accuracy", "last_probe_accuracy"]]


def write_concept_report(manifest_path, labels_path, rounds, out_dir) -> dict[str, Path]:
    """``concept_report.parquet`` (per round), ``concept_summary.parquet`` (per family) and
    ``concept_report.png`` under ``out_dir``."""
    report = concept_report(manifest_path, labels_path, rounds)
    out = Path(out_dir)
    return {
        "table": write_parquet(report, out / "concept_report.parquet"),
        "summary": write_parquet(concept_summary(manifest_path, labels_path, report), out / "concept_summary.parquet"),
        "plot": plot_concept_report(report, out / "concept_report.png"),
    }


@dataclass(frozen=True)
class Report:
    """A written report: the HTML page, its PNG plots (beside it) and the same content as markdown with the
    plots embedded as data-URI PNGs (for a Prefect artifact)."""

    html: Path
    plots: dict[str, Path]
    markdown: str


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _table_md(frame: pd.DataFrame, floatfmt: str = ".3f") -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = [format(v, floatfmt) if isinstance(v, float) and not np.isnan(v) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_report(out_dir: Path, title: str, sections: list[tuple[str, str | None, pd.DataFrame | None]]) -> Report:
    """``report.html`` (plots linked by file name, tables inline) and its markdown twin (plots embedded)."""
    md = [f"# {title}", ""]
    body = [f"<h1>{html.escape(title)}</h1>"]
    plots: dict[str, Path] = {}
    for heading, png, table in sections:
        md += [f"## {heading}", ""]
        body.append(f"<h2>{html.escape(heading)}</h2>")
        if png:
            path = out_dir / png
            plots[png] = path
            md += [f"![{heading}]({_data_uri(path)})", ""]
            body.append(f'<p><img src="{html.escape(png)}" alt="{html.escape(heading)}" style="max-width:100%"></p>')
        if table is not None and not table.empty:
            md += [_table_md(table), ""]
            body.append(table.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-", border=0))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        + html.escape(title)
        + "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}</style></head><body>"
        + "\n".join(body)
        + "</body></html>"
    )
    out = out_dir / "report.html"
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return Report(out, plots, "\n".join(md))


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def round_cluster_changes(rounds: Sequence[dict]) -> pd.DataFrame:
    """One row per (round, cluster) of the selection rounds: relative change, probability, selected count
    (from each round's ``select/selection_clusters.parquet``)."""
    parts = []
    for r in rounds:
        path = Path(r["dir"]) / "select" / "selection_clusters.parquet"
        if r.get("quota_mode", "-") == "-" or not path.is_file():
            continue
        t = pd.read_parquet(path, columns=["cluster_id", "rel", "probability", "selected"])
        t.insert(0, "round", r["round"])
        parts.append(t)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def probe_noise_table(rounds: Sequence[dict]) -> pd.DataFrame:
    """Per selection round: clusters with two probes, the median binomial SE of a probe and of the change,
    and the share of changes beyond 2 SE (docs/algorithm.md#probe-noise), from ``selection_clusters.parquet``."""
    rows = []
    for r in rounds:
        path = Path(r["dir"]) / "select" / "selection_clusters.parquet"
        if not path.is_file():
            continue
        t = pd.read_parquet(path)
        if "se_change" not in t or t["se_change"].notna().sum() == 0:
            continue
        both = t[t["se_change"].notna() & t["acc_prev"].notna() & t["acc_now"].notna()]
        beyond = (both["acc_now"] - both["acc_prev"]).abs() > 2 * both["se_change"]
        rows.append(
            {
                "round": r["round"],
                "clusters": len(both),
                "median SE now": round(float(t["se_now"].median()), 3),
                "median SE change": round(float(both["se_change"].median()), 3) if len(both) else None,
                "changes beyond 2 SE": f"{beyond.mean():.0%}" if len(both) else "–",
            }
        )
    return pd.DataFrame(rows)


def plot_cluster_changes(changes: pd.DataFrame, out_png: str | os.PathLike) -> Path:
    """Relative accuracy change per cluster per round (heat map) beside the samples each cluster received."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    rel = changes.pivot_table(index="cluster_id", columns="round", values="rel")
    lim = float(np.nanmax(np.abs(rel.to_numpy()))) if rel.size and np.isfinite(rel.to_numpy()).any() else 1.0
    im = ax1.imshow(rel.to_numpy(), aspect="auto", cmap="coolwarm", vmin=-lim, vmax=lim, interpolation="nearest")
    ax1.set(title="relative accuracy change per cluster", xlabel="round", ylabel="cluster")
    ax1.set_xticks(range(rel.shape[1]), [str(c) for c in rel.columns])
    fig.colorbar(im, ax=ax1)
    sel = changes.pivot_table(index="cluster_id", columns="round", values="selected", fill_value=0)
    im2 = ax2.imshow(sel.to_numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
    ax2.set(title="samples selected per cluster", xlabel="round", ylabel="cluster")
    ax2.set_xticks(range(sel.shape[1]), [str(c) for c in sel.columns])
    fig.colorbar(im2, ax=ax2)
    fig.tight_layout()
    return _save(fig, Path(out_png))


def run_report(summary, manifest_path, labels_path, out_dir: str | os.PathLike) -> Report:
    """``report.html`` of one run: rounds (budget, selected, steps, seconds per stage), per-concept probe
    accuracy over rounds and where each round's budget went (labelled pools), relative change per cluster."""
    out = Path(out_dir)
    rounds = [r.model_dump() if hasattr(r, "model_dump") else dict(r) for r in summary.rounds]
    table = pd.DataFrame(
        [
            {
                "round": r["round"],
                "steps": f"{r['from_step']}→{r['to_step']}",
                "budget": r["budget"],
                "new": r["new"],
                "selected": r["selected"],
                "probe acc": format_accuracy(r["probe_accuracy"]),
                "quota": r["quota_mode"],
                **{f"{k} s": v for k, v in r["stage_seconds"].items()},
            }
            for r in rounds
        ]
    )
    sections: list[tuple[str, str | None, pd.DataFrame | None]] = [("Rounds", None, table)]
    if labels_path and summary.concept_report:
        sections.append(("Probe accuracy per concept and each round's budget per concept", "concept_report.png", None))
    changes = round_cluster_changes(rounds)
    if not changes.empty:
        plot_cluster_changes(changes, out / "cluster_changes.png")
        sections.append(("Relative change per cluster and samples selected", "cluster_changes.png", None))
    noise = probe_noise_table(rounds)
    if not noise.empty:
        sections.append(("Probe noise (binomial standard errors, docs/algorithm.md#probe-noise)", None, noise))
    title = f"PROGRESS run: {summary.strategy}, seed {summary.seed}, {summary.n_selected} of {summary.n_samples}"
    return _write_report(out, title, sections)


def spread_table(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd and count of accuracy per strategy and budget (seeds pooled)."""
    g = table.groupby(["budget", "strategy"])["accuracy"]
    return g.agg(mean="mean", sd="std", seeds="count").reset_index()


def plot_accuracy_vs_budget(table: pd.DataFrame, out_png: str | os.PathLike, majority: float | None = None) -> Path:
    """Held-out accuracy per strategy against budget, mean ± sd over seeds; ``full`` as a band; the
    majority-answer baseline as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spread = spread_table(table)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name, part in spread.groupby("strategy"):
        part = part.sort_values("budget")
        sd = part["sd"].fillna(0).to_numpy()
        if name == "full":
            m, s = float(part["mean"].iloc[-1]), float(sd[-1])
            ax.axhline(m, color="k", ls="--", lw=1, label=f"full pool ({m:.3f})")
            ax.axhspan(m - s, m + s, color="k", alpha=0.08)
            continue
        ax.errorbar(part["budget"], part["mean"], yerr=sd, marker="o", capsize=3, label=name)
    if majority is not None:
        ax.axhline(majority, color="grey", ls=":", lw=1, label=f"majority answer ({majority:.3f})")
    ax.set(
        title="held-out accuracy vs budget (mean ± sd over seeds)", xlabel="budget (share of pool)", ylabel="accuracy"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(out_png))


def plot_concepts_by_strategy(concepts: pd.DataFrame, out_png: str | os.PathLike) -> Path:
    """Per-concept held-out accuracy per strategy (mean over seeds), one panel per budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted(concepts["budget"].unique())
    fig, axes = plt.subplots(len(budgets), 1, figsize=(12, 3.2 * len(budgets)), squeeze=False)
    for ax, b in zip(axes[:, 0], budgets):
        part = concepts[concepts["budget"] == b]
        wide = part.pivot_table(index="concept", columns="strategy", values="accuracy", aggfunc="mean")
        wide.plot(ax=ax, kind="bar", width=0.8)
        ax.set(title=f"budget {b:g}", ylabel="accuracy", xlabel="", ylim=(0, 1.02))
        ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    return _save(fig, Path(out_png))


def comparison_report(table_path, concepts_path, out_dir: str | os.PathLike, majority: float | None = None) -> Report:
    """``report.html`` of a comparison: accuracy vs budget with spread, per-concept accuracy per strategy,
    the table of mean ± sd."""
    out = Path(out_dir)
    table = pd.read_parquet(table_path)
    plot_accuracy_vs_budget(table, out / "accuracy_vs_budget.png", majority)
    spread = spread_table(table)
    sections: list[tuple[str, str | None, pd.DataFrame | None]] = [
        ("Held-out accuracy vs budget", "accuracy_vs_budget.png", spread)
    ]
    if concepts_path and Path(concepts_path).is_file():
        concepts = pd.read_parquet(concepts_path)
        if not concepts.empty:
            plot_concepts_by_strategy(concepts, out / "concepts_by_strategy.png")
            sections.append(("Held-out accuracy per concept", "concepts_by_strategy.png", None))
    cost = table.groupby("strategy")[[c for c in table.columns if c.startswith("seconds_")]].sum().reset_index()
    sections.append(("Seconds per stage (all runs)", None, cost))
    return _write_report(out, "Strategy comparison", sections)
