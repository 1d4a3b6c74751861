"""compare_strategies: shared upstream stages computed once, equal budgets, held-out accuracy per concept."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from flowkit import REPO, env_for, small_config, states_by_stage, task_runs, write_config

pytestmark = pytest.mark.slow


def test_two_strategies_share_upstream_and_are_evaluated(prefect_api, tmp_path):
    api_url, home = prefect_api
    cfg = small_config(tmp_path / "cmp", **{"data.synthetic_n_eval": 60, "schedule.final_step": 25})
    config = write_config(cfg, tmp_path / "cmp.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "compare", "--config", str(config), "-s", "progress", "-s", "random"],
        cwd=REPO,
        env=env_for(api_url, home),
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "held-out accuracy" in proc.stdout
    long = pd.read_parquet(tmp_path / "cmp" / "comparison.parquet")
    assert set(long["strategy"]) == {"progress", "random"}
    per = long.groupby("strategy")["n"].sum()
    assert per["progress"] == per["random"] == 60, "every evaluation row answered by each strategy's model"
    assert {"colour", "random"} <= set(long["concept"])
    summaries = {s: json.loads((tmp_path / "cmp" / s / "summary.json").read_text()) for s in ("progress", "random")}
    assert summaries["progress"]["step"] == summaries["random"]["step"] == 25, "equal budgets"
    assert (
        not (tmp_path / "cmp" / "progress" / "features").exists()
        and (tmp_path / "cmp" / "shared" / "features").exists()
    )
    random_run = task_runs(api_url, summaries["random"]["flow_run_id"])
    states = states_by_stage(random_run)
    for stage in ("pool", "manifest", "features", "kmeans", "warmup-pools", "init-model"):
        assert set(states[stage]) == {"Cached"}, (stage, states[stage])
