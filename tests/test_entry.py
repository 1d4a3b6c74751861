"""The short form over the run config, the commented YAML and the artifact helpers that need no server."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flows.approval import planned_rounds
from flows.entry import build_config, resolve_run_dir, run_selection
from progress_cli.main import main
from progress_core.errors import ConfigError
from progress_core.run.config import load_config
from progress_core.run.config_doc import commented_yaml, describe
from progress_core.selection.schedule import initial_state
from tasks.artifacts import artifact_key, budget_lines, png_data_uri, round_key
from tasks.stage import StageRecord


def test_unset_fields_take_the_chosen_presets_values():
    paper = build_config("paper")
    assert paper.sized_to_pool(665_298)[0].selection.selection_num == 7500 and paper.training.global_batch_size == 128
    demo = build_config("demo", strategy="random", budget=12, seed=7, advanced={"selection": {"temperature": 0.2}})
    assert demo.selection.selection_num == 12 and demo.selection.strategy == "random" and demo.seed == 7
    assert demo.selection.temperature == 0.2 and demo.training.global_batch_size == 8
    assert build_config("demo", advanced={"selection": {"strategy": "tfs"}}).selection.strategy == "tfs"
    assert build_config("demo", strategy="random", advanced={"selection": {"strategy": "tfs"}}).selection.strategy == (
        "random"
    ), "the top-level fields win over advanced"
    with_pool = build_config("paper", pool_json="/data/pool.json", image_root="/data/img")
    assert with_pool.data.pool_json == "/data/pool.json" and with_pool.data.image_root == "/data/img"
    assert build_config("demo", budget=0).selection.selection_num is None, "0 = the preset's, scaled to the pool"
    with pytest.raises(ConfigError, match="selection.selection_num"):
        build_config("demo", budget=-3)
    with pytest.raises(ConfigError, match="bogus"):
        build_config("demo", advanced={"bogus": 1})


def test_relative_run_dirs_go_under_progress_runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PROGRESS_RUNS_DIR", str(tmp_path / "runs"))
    assert resolve_run_dir("", "demo") == str(tmp_path / "runs" / "demo")
    assert resolve_run_dir("x/y", "paper") == str(tmp_path / "runs" / "x" / "y")
    assert resolve_run_dir("/abs/run", "demo") == "/abs/run"
    assert build_config("paper").run_dir == str(tmp_path / "runs" / "paper")
    assert build_config("demo", advanced={"run_dir": "adv"}).run_dir == str(tmp_path / "runs" / "adv")
    monkeypatch.delenv("PROGRESS_RUNS_DIR")
    assert resolve_run_dir("", "demo") == str(Path("runs/demo").resolve())


def test_form_descriptions_come_from_the_config_model():
    from prefect.utilities.callables import parameter_schema

    props = parameter_schema(run_selection).model_dump()["properties"]
    assert props["seed"]["description"].startswith(describe("seed"))
    assert props["pool_json"]["description"] == describe("data.pool_json")
    assert props["strategy"]["enum"] and props["strategy"]["default"] == "progress"
    assert props["preset"]["enum"] == ["demo", "paper", "paper-8gpu"]
    for name, default in (("budget", 0), ("seed", 42)):
        assert props[name]["type"] == "integer" and props[name]["default"] == default, "no int/None toggle"
        assert "anyOf" not in props[name]


@pytest.mark.parametrize("preset", ["demo", "paper"])
def test_commented_yaml_loads_back_and_explains_every_field(preset):
    cfg = load_config(overrides={"preset": preset})
    text = commented_yaml(cfg)
    assert load_config(overrides=yaml.safe_load(text)) == cfg
    assert f"# {describe('selection.selection_num')}\n  selection_num:" in text
    assert f"# {describe('orchestration.approve_after_warmup')}" in " ".join(text.split("\n"))


def test_config_command_prints_the_comments(capsys):
    assert main(["config", "--preset", "paper"]) == 0
    out = capsys.readouterr().out
    assert "# SELECTION_NUM" in out and yaml.safe_load(out)["pool_scale"]["selection_num"] == 7500


def test_planned_rounds_after_the_warmup():
    cfg = load_config(overrides={"selection": {"selection_num": 50}, "training": {"global_batch_size": 8}})
    state = replace(initial_state(cfg, 10_000), round_index=2, step=15, final_step=29, remaining=9_000)
    # 50 → 48 per round (6 steps); 14 steps = 112 samples left: 48, then 64 whose tail of 16 < 0.5 * 48 merges
    assert planned_rounds(state) == {
        "rounds": 2,
        "from_step": 15,
        "to_step": 29,
        "samples": 112,
        "per_round": [
            {"round": 2, "samples": 48, "from_step": 15, "to_step": 21},
            {"round": 3, "samples": 64, "from_step": 21, "to_step": 29},
        ],
    }
    capped = load_config(
        overrides={
            "schedule": {"max_rounds": 1},
            "selection": {"selection_num": 48},
            "training": {"global_batch_size": 8},
        }
    )
    state = replace(initial_state(capped, 10_000), round_index=2, step=15, final_step=400, remaining=9_000)
    assert planned_rounds(state)["per_round"] == [{"round": 2, "samples": 48, "from_step": 15, "to_step": 21}]


def test_artifact_keys_sort_in_round_order(tmp_path):
    keys = [round_key(tmp_path / "My Run", r, "summary") for r in (0, 2, 10)]
    assert keys == sorted(keys) and keys[1] == "my-run-round-02-summary"
    assert artifact_key(tmp_path / "My Run", "summary") == "my-run-summary"


def _commit(meta: dict, new: int, remaining: int) -> StageRecord:
    return StageRecord(
        stage="select", out_dir="x", rows={"new": new, "selected_until": 100, "remaining_after": remaining}, meta=meta
    )


def test_budget_lines_say_how_much_was_used_and_why(tmp_path):
    (tmp_path / "config.json").write_text('{"selection": {"redistribute_overflow": false}}')
    table = pd.DataFrame({"selected": [5, 3, 0], "pool left": [0, 4, 9]})
    short = "\n".join(budget_lines(_commit({"strategy": "progress", "budget": 10}, 8, 13), table, str(tmp_path)))
    assert "**8 of 10**" in short and "80%" in short
    assert "1 cluster ran out of samples" in short and "redistribution off" in short
    full = "\n".join(
        budget_lines(
            _commit({"strategy": "progress", "budget": 8, "redistribute_overflow": True}, 8, 13), table, "/nowhere"
        )
    )
    assert "**8 of 8**" in full and "overflow): on" in full
    warm = budget_lines(_commit({"strategy": "warmup:w1"}, 40, 360), table, str(tmp_path))
    assert warm == ["- budget: the whole warm-up pool W1 (40 samples)"]
    assert budget_lines(_commit({}, 3, 1), table, str(tmp_path)) == ["- budget: 3 samples selected"]


def test_png_data_uri():
    assert png_data_uri(b"\x89PNG").startswith("data:image/png;base64,iVBOR")
