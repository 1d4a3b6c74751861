"""No stage command repeats a config default as a flag (docs/architecture.md#configuration): every knob of
``progress features``, ``features import``, ``cluster``, ``warmup``, ``train`` and ``probe`` comes from the
run config through ``--config``/``--preset``/``--set``; the commands declare only their input/output paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
import typer.core
from pydantic import BaseModel

from progress_cli.main import app, main
from progress_cli.options import parse_set, resolve_config
from progress_core.errors import ConfigError
from progress_core.run.config import RunConfig

SHARED = {"config", "preset", "set_", "help"}
STAGE_COMMANDS = [("features",), ("features", "import"), ("cluster",), ("warmup",), ("train",), ("probe",)]
# Options of a stage command that are neither paths nor the shared config options, with why they stay.
NON_PATH = {
    ("cluster",): {"name"},
    ("warmup",): {"name"},
    ("train",): {"to_step", "init"},
    ("select",): {"round_index"},
}


def leaf_fields(model: type[BaseModel] = RunConfig, prefix: str = "") -> dict[str, str]:
    """Every leaf field of the run config: its own name → its dotted path."""
    leaves: dict[str, str] = {}
    for key, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            leaves.update(leaf_fields(annotation, f"{prefix}{key}."))
        else:
            leaves.setdefault(key, f"{prefix}{key}")
    return leaves


def command(path: tuple[str, ...]):
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def options(path: tuple[str, ...]) -> list[typer.core.TyperOption]:
    """The command's own options (the shared config options left out)."""
    params = command(path).params
    assert params and all(isinstance(p, typer.core.TyperOption) for p in params)
    return [p for p in params if p.name not in SHARED]


def option_names(param: typer.core.TyperOption) -> set[str]:
    return {param.name, *(opt.lstrip("-").replace("-", "_") for opt in param.opts + param.secondary_opts)}


def test_leaf_fields_cover_the_nested_sections():
    leaves = leaf_fields()
    assert leaves["niter"] == "clustering.niter" and leaves["patch_size"] == "training.model.patch_size"
    assert leaves["samples_per_cluster"] == "probe.samples_per_cluster" and leaves["kind"] == "probe.judge.kind"
    assert "clustering" not in leaves and "model" in leaves  # a section is no leaf; judge.model is one


@pytest.mark.parametrize("path", STAGE_COMMANDS, ids=" ".join)
def test_no_stage_flag_repeats_a_config_default(path):
    leaves = leaf_fields()
    params = options(path)
    repeated = {p.name: leaves[n] for p in params for n in option_names(p) & leaves.keys()}
    assert not repeated, f"progress {' '.join(path)} declares config fields as flags: {repeated}"
    knobs = {p.name for p in params if p.type_descriptor.annotation is not Path} - NON_PATH.get(path, set())
    assert not knobs, f"progress {' '.join(path)} declares knobs outside the run config: {knobs}"


@pytest.mark.parametrize("path", STAGE_COMMANDS, ids=" ".join)
def test_every_stage_command_takes_config_preset_and_set(path, monkeypatch, capsys):
    opts = {opt for p in command(path).params for opt in p.opts}
    assert {"--config", "--preset", "--set"} <= opts
    monkeypatch.setenv("COLUMNS", "400")
    assert main([*path, "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--config FILE, --preset NAME and --set KEY=VALUE" in help_text
    assert "`progress config --explain FIELD` describes a field" in help_text


@pytest.mark.parametrize("path", [(), *STAGE_COMMANDS, ("compare",), ("demo",)], ids=" ".join)
def test_help_shows_flags_as_flags_and_values_by_their_meaning(path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "400")
    assert main([*path, "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--help" in help_text
    assert not re.findall(r"<(?:bool|list\[\w+\]|dict)>", help_text), help_text


def test_select_takes_its_knobs_from_the_config():
    test_no_stage_flag_repeats_a_config_default(("select",))


def test_parse_set_nests_dotted_keys_and_reads_yaml_values():
    got = parse_set(["clustering.niter=10", "warmup.fractions=[0.2, 0.3]", "probe.samples_per_cluster=null"])
    assert got == {
        "clustering": {"niter": 10},
        "warmup": {"fractions": [0.2, 0.3]},
        "probe": {"samples_per_cluster": None},
    }
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set(["clustering.niter"])
    with pytest.raises(ConfigError, match="already given a value"):
        parse_set(["clustering=1", "clustering.niter=2"])


def test_resolve_config_layers_file_preset_and_sets(tmp_path: Path):
    assert resolve_config(None, None, None) == RunConfig()
    path = tmp_path / "run.yaml"
    path.write_text("clustering:\n  niter: 7\n  selection_k: 11\n")
    cfg = resolve_config(path, "paper", ["clustering.selection_k=12"])
    assert (cfg.clustering.niter, cfg.clustering.selection_k, cfg.pool_scale.annotation_k) == (7, 12, 1000)
    with pytest.raises(ConfigError, match="clustering.nitre"):
        resolve_config(None, None, ["clustering.nitre=3"])
