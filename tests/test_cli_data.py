import json

import pandas as pd
import pytest

from progress_cli.main import main
from progress_core.data.manifest import read_manifest


def _message_lines(err):
    """stderr without tqdm progress-bar lines."""
    return [line for line in err.strip().splitlines() if "%|" not in line]


def _turns(q, a):
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "synth"
    assert main(["prepare", "synthetic", "--out", str(out), "--n", "150", "--n-eval", "30", "--seed", "2"]) == 0
    return out


def test_prepare_synthetic_writes_pool_manifest_and_prints_stats(prepared, capsys, tmp_path):
    for name in ("pool.json", "eval.json", "labels.parquet", "manifest.parquet", "images"):
        assert (prepared / name).exists()
    assert read_manifest(prepared / "manifest.parquet").num_rows == 150
    assert len(json.loads((prepared / "eval.json").read_text())) == 30
    out = tmp_path / "again"
    assert main(["prepare", "synthetic", "--out", str(out), "--n", "150", "--n-eval", "30", "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    assert "navigation_hard" in printed and "majority_rate" in printed
    assert str(out / "manifest.parquet") in printed and str(out / "labels.parquet") in printed
    assert (out / "pool.json").read_bytes() == (prepared / "pool.json").read_bytes()


def test_manifest_export_round_trip(prepared, tmp_path, capsys):
    m = tmp_path / "m.parquet"
    assert main(["manifest", str(prepared / "pool.json"), "--images", str(prepared / "images"), "--out", str(m)]) == 0
    assert "150 of 150 rows" in capsys.readouterr().out
    assert main(["export", str(m), "--out", str(tmp_path / "back.json")]) == 0
    assert json.loads((tmp_path / "back.json").read_text()) == json.loads((prepared / "pool.json").read_text())


def test_strict_error_is_one_line_exit_1_and_skip_writes_rejects(tmp_path, capsys):
    rows = [
        {"id": "a", "conversations": _turns("q", "a")},
        {"id": "b", "conversations": [{"from": "gpt", "value": "x"}]},
        {"id": "a", "conversations": _turns("q", "a")},
    ]
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(rows))
    assert main(["manifest", str(pool), "--out", str(tmp_path / "m.parquet"), "--strict"]) == 1
    err = _message_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("error:") and "row 1" in err[0] and "human" in err[0]
    assert not (tmp_path / "m.parquet").exists()

    assert main(["manifest", str(pool), "--out", str(tmp_path / "m.parquet"), "--skip"]) == 0
    assert "rejected: 2 (DuplicateIdError=1, TurnOrderError=1)" in capsys.readouterr().out
    assert read_manifest(tmp_path / "m.parquet").column("id").to_pylist() == ["a"]
    rejected = [json.loads(x) for x in (tmp_path / "m.rejected.jsonl").read_text().splitlines()]
    assert [(r["row"], r["error"]) for r in rejected] == [(1, "TurnOrderError"), (2, "DuplicateIdError")]


def test_missing_images_and_files_are_one_line_errors(prepared, tmp_path, capsys):
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps([{"id": "a", "image": "coco/x.jpg", "conversations": _turns("q", "a")}]))
    cases = [
        ["manifest", str(pool), "--images", str(prepared / "images"), "--out", str(tmp_path / "m.parquet")],
        ["manifest", str(tmp_path / "none.json"), "--out", str(tmp_path / "m.parquet")],
        ["export", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "o.json")],
        ["stats", str(prepared / "pool.json")],
        ["stats", str(prepared / "manifest.parquet"), "--labels", str(tmp_path / "none.parquet")],
        ["prepare", "synthetic", "--out", str(tmp_path / "s"), "--n", "0"],
    ]
    for argv in cases:
        assert main(argv) == 1, argv
        err = _message_lines(capsys.readouterr().err)
        assert len(err) == 1 and err[0].startswith("error:"), (argv, err)
    assert not (tmp_path / "m.parquet").exists()


def test_stats_by_source_and_by_concept(prepared, capsys):
    assert main(["stats", str(prepared / "manifest.parquet")]) == 0
    by_source = capsys.readouterr().out
    assert "150 rows" in by_source and "navigation" in by_source and "text_only" in by_source
    assert main(["stats", str(prepared / "manifest.parquet"), "--labels", str(prepared / "labels.parquet")]) == 0
    by_concept = capsys.readouterr().out
    labels = pd.read_parquet(prepared / "labels.parquet")
    for concept in labels.loc[labels["split"] == "pool", "concept"].unique():
        assert concept in by_concept


@pytest.mark.parametrize(
    "argv, words",
    [
        (["prepare", "synthetic", "--help"], ["--n-eval", "--seed", "concept"]),
        (["manifest", "--help"], ["--images", "--skip", "rejected"]),
        (["export", "--help"], ["--out", "LLaVA"]),
        (["stats", "--help"], ["--labels", "concept"]),
    ],
)
def test_every_command_has_help(argv, words, capsys):
    assert main(argv) == 0
    text = capsys.readouterr().out
    for word in words:
        assert word in text
