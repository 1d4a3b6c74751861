"""`progress config --explain FIELD`: one place says what a knob means, its defaults and what it recomputes."""

from __future__ import annotations

from progress_cli.main import main
from progress_core.run.config_doc import explain


def test_explain_names_description_defaults_per_preset_and_the_stages_given():
    text = explain("pool_scale.annotation_k", ["kmeans[annotation]"], ["select"])
    assert text.splitlines()[0] == "pool_scale.annotation_k"
    assert "default (demo): 40" in text
    assert "default (paper): 1000" in text
    assert "enters the key of: kmeans[annotation]" in text and "where their outputs change: select" in text
    assert "enters the key" not in explain("clustering.annotation_k")


def test_cli_explain_and_a_typo(capsys):
    assert main(["config", "--explain", "pool_scale.selection_num"]) == 0
    out = capsys.readouterr().out
    assert "SELECTION_NUM" in out and "default (paper): 7500" in out and "default (demo): 250" in out
    assert main(["config", "--explain", "selection.temprature"]) == 1
    err = capsys.readouterr().err
    assert "unknown config field 'selection.temprature'" in err and "selection.temperature" in err
