"""``progress compare`` argument parsing and its printed table (the flow itself: test_compare.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from progress_cli.compare import _floats, format_comparison, parse_sweep
from progress_cli.main import main
from progress_core.errors import ConfigError


def test_parse_sweep_any_field():
    assert parse_sweep("selection.temperature=0.25,0.5,1.0") == ("selection.temperature", [0.25, 0.5, 1.0])
    assert parse_sweep("probe.source=held_out,selected") == ("probe.source", ["held_out", "selected"])
    assert parse_sweep(None) == (None, [])
    with pytest.raises(ConfigError, match="FIELD=V1"):
        parse_sweep("selection.temperature")
    with pytest.raises(ConfigError, match="no values"):
        parse_sweep("selection.temperature=")


def test_a_sweep_mapping_sets_several_fields_of_one_variant(tmp_path):
    from flowkit import small_config

    from flows.compare_strategies import run_config
    from progress_core.run.config import RunConfig

    field, values = parse_sweep("selection={allocation: damped, progress_signal: abs_change_2se}")
    assert (field, values) == ("selection", [{"allocation": "damped", "progress_signal": "abs_change_2se"}])
    base = RunConfig.model_validate(small_config(tmp_path / "cmp"))
    cfg = run_config(base, tmp_path, tmp_path / "shared", "progress", 0.3, 1, (field, values[0]))
    assert (cfg.selection.strategy, cfg.selection.allocation, cfg.selection.progress_signal) == (
        "progress",
        "damped",
        "abs_change_2se",
    )
    assert cfg.run_dir.endswith("progress[allocation=damped,progress_signal=abs_change_2se]/seed1")
    with pytest.raises(ConfigError, match="one mapping"):
        parse_sweep("selection={}")


def test_budgets_and_table():
    assert _floats("0.1,0.2, 0.3") == [0.1, 0.2, 0.3]
    with pytest.raises(ConfigError, match="--budgets"):
        _floats("0.1,x")
    table = pd.DataFrame(
        {"strategy": ["progress"] * 2 + ["random"] * 2, "budget": [0.2] * 4, "accuracy": [0.3, 0.5, 0.2, 0.2]}
    )
    text = format_comparison(table, 0.25)
    assert "0.400 ± 0.141 (2)" in text and "0.200 ± 0.000 (2)" in text and "majority-answer baseline: 0.250" in text


def test_compare_is_registered(capsys):
    assert main(["compare", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--seeds" in out and "--budgets" in out and "--sweep" in out


def test_unknown_config_field_is_named():
    assert main(["compare", "--set", "selection.temprature=1", "--seeds", "1"]) == 1
