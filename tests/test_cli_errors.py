"""What a user gets for a command line or config the CLI cannot use: one ``error:`` line saying what to do,
never an exception's class name, and the exit status of the kind of problem (2 usage, 1 bad config)."""

from __future__ import annotations

import pytest

from progress_cli.main import main


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "error: no command given: pick one of the commands above (`progress COMMAND --help` shows its options)"),
        (["bogus"], "error: No such command 'bogus'. (see `progress --help`)"),
        (["selct"], "error: No such command 'selct'. Did you mean 'select'? (see `progress --help`)"),
        (["manifest"], "error: Missing argument 'pool_json'. (see `progress manifest --help`)"),
        (["cluster", "--k", "3"], "error: No such option: --k (see `progress cluster --help`)"),
    ],
)
def test_usage_problems_are_one_helpful_line(capsys, argv, expected):
    assert main(argv) == 2
    assert _errors(capsys) == [expected]


def test_yaml_syntax_error_names_the_file_and_line(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("seed: 1\ndata:\n  pool_json: [a,\n    b: c\n")
    assert main(["run", "--config", str(config)]) == 1
    errors = _errors(capsys)
    assert len(errors) == 1 and errors[0].startswith(f"error: {config}, line ")
    assert "not valid YAML" in errors[0] and "<unicode string>" not in errors[0]


@pytest.mark.parametrize("where", ["set", "file"])
def test_unknown_config_key_gets_a_did_you_mean(capsys, tmp_path, where):
    config = tmp_path / "run.yaml"
    config.write_text("selection:\n  selction_num: 3\n")
    argv = ["run", "--config", str(config)] if where == "file" else ["run", "--set", "selection.selction_num=3"]
    assert main(argv) == 1
    (line,) = _errors(capsys)
    assert line.startswith("error: invalid config field 'selection.selction_num': unknown field; did you mean ")
    assert "selection.selection_num" in line


def test_unknown_key_without_a_close_field_says_where_fields_are_listed(capsys):
    assert main(["run", "--set", "xyzzy=3"]) == 1
    assert _errors(capsys) == [
        "error: invalid config field 'xyzzy': unknown field; remove it or check its spelling "
        "(`progress config` lists every field)"
    ]
