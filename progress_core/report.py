"""What a run did, per concept family: selection shares and probe accuracy per round, as a table and a plot.

Only for pools with evaluation labels (the bundled pool): labels never feed selection, they explain it. The
point of PROGRESS (arXiv 2506.01085 §3) is that rounds move budget towards concepts whose accuracy is rising
now; this report shows whether they did.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from progress_core.io import atomic_path, write_parquet
from progress_core.rounds import read_ids


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
    acc.plot(ax=ax1, marker="o", ms=3)
    ax1.set(title="probe accuracy per concept family", xlabel="step", ylabel="accuracy", ylim=(-0.02, 1.02))
    ax1.legend(fontsize=7, ncol=2)
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
