"""`progress config --explain FIELD`: one place says what a knob means, its defaults and what it recomputes."""

from __future__ import annotations

import pytest

from cli.main import main
from progress_core.run.config_doc import explain, field_paths, invalidated_stages


def test_explain_names_description_defaults_per_preset_and_recomputed_stages():
    text = explain("clustering.annotation_k")
    assert text.splitlines()[0] == "clustering.annotation_k"
    assert "default (demo): 40" in text
    assert "default (paper): 1000" in text
    assert "recomputes: clusters, warm-up pools, rounds, export" in text


@pytest.mark.parametrize(
    ("path", "stages"),
    [
        (
            "data.synthetic_n",
            ["pool", "manifest", "features", "clusters", "warm-up pools", "model init", "rounds", "export"],
        ),
        (
            "data.allow_duplicate_ids",
            ["manifest", "features", "clusters", "warm-up pools", "model init", "rounds", "export"],
        ),
        ("selection.temperature", ["rounds", "export"]),
        ("training.model", ["model init", "rounds", "export"]),
        ("training.learning_rate", ["rounds", "export"]),
        ("export_original", ["export"]),
        ("orchestration", []),
    ],
)
def test_invalidated_stages_follow_the_stage_graph(path, stages):
    assert invalidated_stages(path) == stages


def test_every_field_has_a_stage_rule():
    for path in field_paths():
        if not path.startswith("orchestration"):
            assert invalidated_stages(path), f"{path} maps to no stage"


def test_cli_explain_and_a_typo(capsys):
    assert main(["config", "--explain", "selection.selection_num"]) == 0
    out = capsys.readouterr().out
    assert "SELECTION_NUM" in out and "default (paper): 7500" in out
    assert main(["config", "--explain", "selection.temprature"]) == 1
    err = capsys.readouterr().err
    assert "unknown config field 'selection.temprature'" in err and "selection.temperature" in err
