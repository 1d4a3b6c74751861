"""Run and comparison reports: self-contained HTML whose plots exist and decode, markdown with embedded PNGs."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from progress_core.io import write_parquet
from progress_core.reporting.report import comparison_report, probe_noise_table, run_report, spread_table
from progress_core.reporting.summary import RoundSummary, RunSummary, total_seconds


def _check(report, out: Path) -> None:
    page = report.html.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert srcs, "the page shows its plots"
    for src in srcs:
        with Image.open(out / src) as im:
            im.verify()
    embedded = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", report.markdown)
    assert len(embedded) == len(srcs)
    for data in embedded:
        assert Image.open(io.BytesIO(base64.b64decode(data))).size[0] > 100


def _round(tmp: Path, i: int, kind: str) -> RoundSummary:
    d = tmp / "rounds" / f"r{i:02d}"
    if kind != "-":
        rel = np.array([0.5, -0.2, np.nan, 1.0]) * i
        write_parquet(
            pd.DataFrame(
                {
                    "cluster_id": np.arange(4),
                    "rel": rel,
                    "probability": [0.2, np.nan, np.nan, 0.8],
                    "selected": [4, 1, 0, 11],
                    "acc_prev": [0.25, 0.5, np.nan, 0.0],
                    "acc_now": [0.5, 0.5, 0.25, 1.0],
                    "se_now": [0.25, 0.25, 0.2, 0.0],
                    "se_change": [0.3, 0.35, np.nan, 0.1],
                }
            ),
            d / "select" / "selection_clusters.parquet",
        )
    return RoundSummary(
        round=i,
        strategy="progress",
        from_step=i * 2,
        to_step=i * 2 + 2,
        budget=16,
        new=16,
        selected=16 * (i + 1),
        remaining=100,
        probe_accuracy=0.1 * i,
        stage_seconds={"select": 0.1, "train": 2.0, "probe": 1.0},
        quota_mode=kind,
        dir=str(d),
    )


def test_run_report(tmp_path):
    rounds = [_round(tmp_path, i, "-" if i < 2 else "redistribute") for i in range(4)]
    summary = RunSummary(
        run_dir=str(tmp_path),
        strategy="progress",
        seed=0,
        final_step=8,
        step=8,
        n_samples=164,
        n_selected=64,
        rounds=rounds,
        stage_seconds=total_seconds(rounds, {"prepare": 5.0}),
    )
    assert summary.stage_seconds == {"prepare": 5.0, "select": 0.4, "train": 8.0, "probe": 4.0}
    report = run_report(summary, None, None, tmp_path)
    _check(report, tmp_path)
    assert "cluster_changes.png" in report.plots and "redistribute" in report.html.read_text()
    noise = probe_noise_table([r.model_dump() for r in rounds])
    assert noise["round"].tolist() == [2, 3], "selection rounds only"
    assert noise.to_dict("records")[0] == {
        "round": 2,
        "clusters": 3,
        "median SE now": 0.225,
        "median SE change": 0.3,
        "changes beyond 2 SE": "33%",
    }, "one of three changes (0 → 1 at SE 0.1) is beyond the noise"
    assert "Probe noise" in report.html.read_text()


def test_comparison_report(tmp_path):
    rows = []
    for budget in (0.1, 0.2):
        for strategy in ("progress", "random"):
            for seed in range(3):
                rows.append(
                    {
                        "strategy": strategy,
                        "budget": budget,
                        "seed": seed,
                        "accuracy": 0.1 + budget + 0.01 * seed,
                        "seconds_train": 1.0,
                        "seconds_probe": 0.5 if strategy == "progress" else 0.0,
                    }
                )
    rows += [
        {"strategy": "full", "budget": 1.0, "seed": s, "accuracy": 0.5, "seconds_train": 3.0, "seconds_probe": 0.0}
        for s in range(3)
    ]
    table = pd.DataFrame(rows)
    concepts = table.loc[table.index.repeat(2)].assign(concept=["a", "b"] * len(table))
    write_parquet(table, tmp_path / "comparison.parquet")
    write_parquet(concepts, tmp_path / "comparison_concepts.parquet")
    report = comparison_report(tmp_path / "comparison.parquet", tmp_path / "comparison_concepts.parquet", tmp_path)
    _check(report, tmp_path)
    spread = spread_table(table).set_index(["budget", "strategy"])
    assert spread.loc[(0.2, "progress"), "mean"] == pytest.approx(0.31) and spread.loc[(0.2, "progress"), "seeds"] == 3
    assert spread.loc[(0.2, "progress"), "sd"] == pytest.approx(0.01)
