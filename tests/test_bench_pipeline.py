"""benchmarks/bench_pipeline.py at 20K rows: every stage runs, the export has the original's file names with the real counts, the
imported features are the combined inputs, and the cached re-run recomputes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from progress_core.features.store import combine_features

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
STAGES = [
    "manifest",
    "features-import",
    "kmeans[annotation]",
    "kmeans[selection]",
    "warmup-pools",
    "probe-tables",
    "rounds",
    "export",
]


def test_pipeline_20k(tmp_path):
    out = tmp_path / "results.json"
    cmd = [sys.executable, "benchmarks/bench_pipeline.py", "--rows", "20000", "--no-baselines"]
    proc = subprocess.run(
        [*cmd, "--workdir", str(tmp_path), "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert list(results["stages"]) == STAGES
    assert all(r["seconds"] > 0 and r["peak_mb"] > 0 for r in results["stages"].values())
    assert results["cached_recomputed"] == 0 and results["stage_markers"] == 20
    assert "SUMMARY: bench_pipeline | cached re-run |" in proc.stdout

    run = tmp_path / "run"
    image, text = np.load(tmp_path / "image_features.npy"), np.load(tmp_path / "text_features.npy")
    feats = np.load(run / "features" / "features.npy", mmap_mode="r")
    np.testing.assert_array_equal(feats, combine_features(image, text))
    manifest = pq.read_table(run / "manifest" / "manifest.parquet", columns=["id", "image"])
    assert manifest.num_rows == 20000
    assert 0.04 < manifest.column("image").null_count / 20000 < 0.08
    assert manifest.column("id").to_pandas().duplicated().sum() > 0

    export = run / "export"
    steps = [int(s) for s in (export / "step_list.txt").read_text().split("\n")]
    assert len(steps) == 7 and steps == sorted(steps)
    (w2,) = export.glob("Top_*_to_*.json")
    w1_label, union_label = w2.stem.removeprefix("Top_").split("_to_")
    assert (export / f"Top_{w1_label}.json").exists() and len(list(export.glob("Remaining_[0-9]*.json"))) == 1
    sizes = []
    for step in steps[1:-1]:
        rows = json.loads((export / f"Selected_until_{step}.json").read_text())
        assert {"cluster_id", "dist_to_cent", "index", "conversations"} <= set(rows[0])
        sizes.append(len(rows))
    warm = len(json.loads((export / f"Top_{union_label}.json").read_text()))
    assert warm < sizes[0] and sizes == sorted(set(sizes)) and sizes[-1] <= warm + 5 * 225
