"""The deployments' entry flows (flows/entry.py) called as plain functions, with the selection and comparison
flows replaced by recorders: the RunConfig a short form builds, where its run goes, and what the Run form
documents (docs/architecture.md#configuration)."""

from __future__ import annotations

import logging
from datetime import datetime
from types import SimpleNamespace

import pytest

import flows.compare_strategies as compare_mod
import flows.entry as entry_mod
import flows.progress_selection as selection_mod
from flows.entry import DEFAULT_COMPARED, compare, flow_run_name, run_selection
from progress_core.run.config import load_config
from progress_core.selection.strategies import available_strategies


@pytest.fixture
def launched(monkeypatch, tmp_path):
    """The configs (and strategies) the entry flows hand on, instead of running them."""
    seen: list[dict] = []
    monkeypatch.setenv("PROGRESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(entry_mod, "get_run_logger", lambda: logging.getLogger("test-entry"))
    monkeypatch.setattr(
        selection_mod,
        "progress_selection",
        SimpleNamespace(fn=lambda config: seen.append({"config": config}) or {"run_dir": config.run_dir}),
    )
    monkeypatch.setattr(
        compare_mod,
        "compare_strategies",
        SimpleNamespace(fn=lambda config, strategies: seen.append({"config": config, "strategies": strategies}) or {}),
    )
    return seen


def test_run_selection_hands_the_forms_config_to_the_selection(launched, tmp_path):
    result = entry_mod._run_selection(
        preset="demo", strategy="tfs", budget=24, seed=3, advanced={"schedule": {"final_step": 40}}
    )
    cfg = launched[0]["config"]
    assert result == {"run_dir": str(tmp_path / "runs" / "demo")}
    assert cfg.preset == "demo" and cfg.selection.strategy == "tfs" and cfg.selection.selection_num == 24
    assert cfg.seed == 3 and cfg.schedule.final_step == 40
    demo = load_config(overrides={"preset": "demo"})
    assert cfg.training == demo.training and cfg.clustering == demo.clustering, "the rest is the preset's"


def test_empty_form_fields_take_the_preset_and_a_pool_is_passed_through(launched, tmp_path):
    entry_mod._run_selection(preset="paper", pool_json="/data/pool.json", image_root="/data/img", run_dir="exp1")
    cfg = launched[0]["config"]
    paper = load_config(overrides={"preset": "paper"})
    assert cfg.selection.selection_num == paper.selection.selection_num and cfg.seed == paper.seed
    assert cfg.data.pool_json == "/data/pool.json" and cfg.data.image_root == "/data/img"
    assert cfg.run_dir == str(tmp_path / "runs" / "exp1")


def test_compare_runs_every_strategy_under_one_compare_directory(launched, tmp_path):
    entry_mod._compare(preset="demo", strategies=["random", "tfs"], budget=8)
    call = launched[0]
    assert call["strategies"] == ["random", "tfs"] and call["config"].selection.selection_num == 8
    assert call["config"].run_dir == str(tmp_path / "runs" / "compare-demo")
    entry_mod._compare(preset="demo", run_dir="/abs/cmp")
    assert launched[1]["config"].run_dir == "/abs/cmp" and launched[1]["strategies"] == DEFAULT_COMPARED


def test_flow_names_run_names_and_documented_parameters():
    assert run_selection.name == "progress-selection" and compare.name == "compare-strategies"
    assert run_selection.flow_run_name is compare.flow_run_name, "both name runs by what, where and when"
    at = datetime(2026, 12, 4, 13, 5, 9)
    demo = {"preset": "demo", "strategy": "progress", "run_dir": "", "budget": 0, "seed": 42}
    assert flow_run_name(demo, at) == "progress · demo · budget preset · seed 42 · 12-04 13:05:09"
    other = {**demo, "strategy": "random", "run_dir": "/runs/ui-run", "budget": 32, "seed": 7}
    assert flow_run_name(other, at) == "random · ui-run · budget 32 · seed 7 · 12-04 13:05:09"
    assert flow_run_name(demo, at) != flow_run_name(demo, datetime(2026, 12, 4, 13, 5, 10)), "two runs, two names"
    cmp = {"preset": "demo", "strategies": ["progress", "random"], "run_dir": "", "budget": 0, "seed": 1}
    assert flow_run_name(cmp, at).startswith("compare progress,random · demo ·")
    assert set(DEFAULT_COMPARED) <= set(available_strategies()) and "progress" in DEFAULT_COMPARED
    for fn, names in (
        (run_selection, ["preset", "pool_json", "image_root", "run_dir", "strategy", "budget", "seed", "advanced"]),
        (compare, ["preset", "pool_json", "image_root", "run_dir", "strategies", "budget", "seed", "advanced"]),
    ):
        documented = [line.split(":")[0].strip() for line in fn.fn.__doc__.split("Args:")[1].strip().splitlines()]
        assert documented == names
    budget = entry_mod._ARGS["budget"]
    for preset in ("demo", "paper"):
        scale = load_config(overrides={"preset": preset}).pool_scale
        assert f"{preset} {scale.selection_num} per {scale.rows:,} rows" in budget
