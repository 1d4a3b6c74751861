"""The selection flow against a real Prefect server: files, artifacts, caching, resume after SIGKILL."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flowkit import artifacts, client_call, run_cli, run_to_end, small_config, states_by_stage, task_runs, write_config

from progress_core.id_sets import read_ids

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(prefect_api):
    return prefect_api


@pytest.fixture(scope="module")
def baseline(server, tmp_path_factory):
    api_url, home = server
    base = tmp_path_factory.mktemp("baseline")
    config = write_config(small_config(base / "run"), base / "run.yaml")
    first = run_to_end(config, api_url, home, base / "first.log")
    first_ids = read_ids(first["final_selection"])
    second = run_to_end(config, api_url, home, base / "second.log")
    return {"dir": base, "config": config, "first": first, "second": second, "first_ids": first_ids}


def test_run_writes_every_round(baseline, server):
    summary = baseline["first"]
    run = Path(summary["run_dir"])
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == list(range(len(rounds)))
    assert len(rounds) >= 4, "two warm-up rounds and at least two selection rounds"
    assert rounds[-1]["to_step"] == summary["final_step"] == 33, "the last selected batch is trained too"
    assert [r["strategy"] for r in rounds[:2]] == ["warmup:w1", "warmup:w2"]
    for r in rounds:
        rdir = run / "rounds" / f"r{r['round']:02d}"
        new = read_ids(rdir / "select" / f"new_{r['round']}.parquet")
        assert len(new) == r["new"]
        until = read_ids(rdir / "select" / f"selected_until_{r['from_step']}.parquet")
        assert len(until) == r["selected"]
        assert (rdir / "train" / "checkpoint" / "config.json").exists()
        per_cluster = pd.read_parquet(rdir / "probe" / "accuracy.parquet")
        per_sample = pd.read_parquet(rdir / "probe" / "probe_samples.parquet")
        assert per_cluster["n"].sum() == len(per_sample) == r["probe_n"]
        assert per_sample["sample_id"].size and not set(per_sample["sample_id"]) & set(until.tolist()), "held out"
        assert per_sample.groupby("cluster_id").size().max() <= 10
        assert r["budget"] == r["new"] and r["to_step"] - r["from_step"] == -(-r["new"] // 8)
    for a, b in zip(rounds, rounds[1:]):
        assert b["from_step"] == a["to_step"]
        assert b["selected"] == a["selected"] + b["new"]
    selected = read_ids(summary["final_selection"])
    assert len(np.unique(selected)) == len(selected) == rounds[-1]["selected"]
    export = Path(summary["export_dir"])
    assert (
        len(list(export.glob("Top_*_to_*.json"))) == 1
        and (export / "step_list.txt").read_text().split("\n")[-1] == "33"
    )

    api_url, _ = server
    name = client_call(api_url, lambda c: c.read_flow_run(summary["flow_run_id"])).name
    assert name.startswith("progress · run · budget "), "a command-line run is named like a UI run"
    arts = artifacts(api_url, summary["flow_run_id"])
    keys = {a.key for a in arts if a.key}
    for r in rounds:
        for kind in ("clusters", "summary"):
            assert f"run-round-{r['round']:02d}-{kind}" in keys
    assert {"run-progress", "run-rounds", "run-summary"} <= keys
    progress = [a for a in arts if a.type == "progress"]
    assert progress and float(progress[-1].data) == pytest.approx(100.0)


def test_second_run_executes_no_training_or_probe(baseline, server):
    api_url, _ = server
    first, second = baseline["first"], baseline["second"]
    assert second["rounds"] and [r["new"] for r in second["rounds"]] == [r["new"] for r in first["rounds"]]
    states = states_by_stage(task_runs(api_url, second["flow_run_id"]))
    assert len(states["train"]) == len(first["rounds"]) and set(states["train"]) == {"Cached"}
    assert len(states["probe"]) == len(first["rounds"]) and set(states["probe"]) == {"Cached"}
    assert set(states["select"]) == {"Cached"}
    np.testing.assert_array_equal(baseline["first_ids"], read_ids(second["final_selection"]))


def test_changing_selection_num_recomputes_only_downstream(baseline, server):
    api_url, home = server
    cfg = small_config(baseline["dir"] / "run", **{"selection.selection_num": 32})
    config = write_config(cfg, baseline["dir"] / "run32.yaml")
    summary = run_to_end(config, api_url, home, baseline["dir"] / "run32.log")
    states = states_by_stage(task_runs(api_url, summary["flow_run_id"]))
    for stage in ("pool", "manifest", "features", "kmeans", "warmup-pools", "commit"):
        assert set(states[stage]) == {"Cached"}, (stage, states[stage])
    assert set(states["train"][:2]) == {"Cached"}, "warm-up training is upstream of selection"
    assert "Completed" in states["select"] and "Completed" in states["train"]
    assert [r["new"] for r in summary["rounds"][2:]] and all(r["new"] <= 32 for r in summary["rounds"][2:])


def test_sigkill_mid_round_then_rerun_gives_same_selection(baseline, server, tmp_path):
    api_url, home = server
    config = write_config(small_config(tmp_path / "run"), tmp_path / "run.yaml")
    proc = run_cli(config, api_url, home, tmp_path / "killed.log")
    marker = tmp_path / "run" / "rounds" / "r02" / "select" / ".stage.json"
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before round 2 was reached"
    cache_record = Path(home) / "storage" / json.loads(marker.read_text())["record"]["key"]
    while not cache_record.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before round 2's selection was cached"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "summary.json").exists()
    resumed = run_to_end(config, api_url, home, tmp_path / "resumed.log")
    states = states_by_stage(task_runs(api_url, resumed["flow_run_id"]))
    assert set(states["train"][:2]) == {"Cached"} and states["select"][0] == "Cached"
    np.testing.assert_array_equal(read_ids(resumed["final_selection"]), baseline["first_ids"])
