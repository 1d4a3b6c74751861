"""Help texts say what the code does: the step count rounds up, the probe set follows probe.source, and options
show what to type (KEY=VALUE, NAME) rather than Python types."""

from __future__ import annotations

import pytest
import typer

from progress_cli.main import app, main

COMMANDS = sorted(typer.main.get_command(app).commands)


def _help(capsys, monkeypatch, *argv: str) -> str:
    monkeypatch.setenv("COLUMNS", "240")
    assert main([*argv, "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_options_show_what_to_type_not_python_types(capsys, monkeypatch, command):
    text = _help(capsys, monkeypatch, command)
    assert "<list[str]>" not in text
    for line in text.splitlines():
        if "--set " in line and "Override" in line:
            assert "KEY=VALUE" in line
        if any(flag in line for flag in ("--debug", "--init", "--full", "--strict", "--allow-duplicate-ids")):
            assert "<bool>" not in line, line


def test_train_help_says_the_steps_round_up(capsys, monkeypatch):
    text = _help(capsys, monkeypatch, "train")
    assert "ceil(samples / global batch)" in text and "samples // global batch" not in text


def test_probe_help_names_the_probe_source(capsys, monkeypatch):
    text = " ".join(_help(capsys, monkeypatch, "probe").split())
    assert "probe.source" in text and "held_out (the default)" in text
    assert "Answer <= N selected samples" not in text
