"""The export stage (tasks/export.py) called as a plain function on hand-made round records: which records it
exports, under which steps, what it counts, and that a damaged export file is rewritten, never reused
(docs/algorithm.md#differences-from-the-original-scripts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tasks.export as export_mod
from progress_core.data.manifest import build_manifest
from progress_core.id_sets import write_ids
from progress_core.probe.accuracy_table import accuracy_from_verdicts, write_accuracy_table
from tasks.export import export_stage
from tasks.stage import EVENTS, StageRecord

N = 10


def _ids(directory: Path, name: str, ids) -> str:
    return str(write_ids(np.asarray(ids, dtype=np.int64), directory / f"{name}.parquet"))


@pytest.fixture
def run(tmp_path) -> dict:
    rows = [
        {"id": f"s{i}", "conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]}
        for i in range(N)
    ]
    (tmp_path / "pool.json").write_text(json.dumps(rows))
    build_manifest(tmp_path / "pool.json", tmp_path / "manifest.parquet")
    manifest = StageRecord(
        stage="manifest",
        out_dir=str(tmp_path),
        files={"manifest": str(tmp_path / "manifest.parquet")},
        content_hash="m",
    )
    assignment = pa.table(
        {"sample_id": np.arange(N), "cluster_id": np.arange(N) % 3, "similarity": np.full(N, 0.5, np.float32)}
    )
    pq.write_table(assignment, tmp_path / "annotation_assignment.parquet")
    annotation = StageRecord(
        stage="kmeans", out_dir=str(tmp_path), files={"assignment": str(tmp_path / "annotation_assignment.parquet")}
    )
    pools = StageRecord(
        stage="warmup_pools",
        out_dir=str(tmp_path),
        files={"w1": _ids(tmp_path, "w1", [0, 1]), "w2": _ids(tmp_path, "w2", [1, 2, 3])},
        content_hash="p",
    )
    warm = StageRecord(stage="commit_warmup", out_dir=str(tmp_path), meta={"step": 0}, content_hash="w")
    rounds = [warm]
    for step, new, before in ((3, [4, 5], [0, 1, 2, 3]), (5, [9], [0, 1, 2, 3, 4, 5])):
        until = before + new
        rest = [i for i in range(N) if i not in until]
        rounds.append(
            StageRecord(
                stage="select",
                out_dir=str(tmp_path),
                files={
                    "new": _ids(tmp_path, f"new{step}", new),
                    "selected_until": _ids(tmp_path, f"until{step}", until),
                    "remaining_after": _ids(tmp_path, f"rest{step}", rest),
                },
                meta={"step": step, "probabilities": {"2": 0.75, "0": 0.25}},
                content_hash=f"select{step}",
            )
        )
    probes = []
    for step, verdicts in ((3, [1, 0, 1]), (5, [1, 1, 1])):
        path = write_accuracy_table(accuracy_from_verdicts([0, 2, 2], verdicts), tmp_path / f"acc{step}.parquet")
        probes.append(
            StageRecord(stage="probe", out_dir=str(tmp_path), files={"per_cluster": str(path)}, meta={"step": step})
        )
    return dict(
        manifest=manifest,
        annotation=annotation,
        pools=pools,
        rounds=rounds,
        probes=probes,
        steps=[1, 2, 3, 5],
        selection_num=2,
        out_dir=str(tmp_path / "export"),
    )


@pytest.fixture
def exports(monkeypatch):
    calls: list[int] = []
    real = export_mod.export_original
    monkeypatch.setattr(export_mod, "export_original", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    return calls


def test_selection_rounds_and_probes_are_exported_under_their_steps(run):
    rec = export_stage.fn(**run)
    out = Path(run["out_dir"])
    assert (out / "step_list.txt").read_text() == "1\n2\n3\n5"
    assert not (out / "Selected_until_0.json").exists(), "warm-up commits are exported as the warm-up pools"
    assert [r["index"] for r in json.loads((out / "Selected_until_5.json").read_text())] == [0, 1, 2, 3, 4, 5, 9]
    assert [r["index"] for r in json.loads((out / "selection_step_3/fastest_acc_data_2.json").read_text())] == [4, 5]
    assert json.loads((out / "selection_step_3/fastest_selected_cluster_accuracies_2.json").read_text()) == {
        "2": 0.75,
        "0": 0.25,
    }
    acc = json.loads((out / "selection_step_5/combined_results_internVL.json").read_text())["cluster_accuracies"]
    assert acc["2"] == {"correct": 2, "total": 2, "accuracy": 1.0}
    assert rec.rows["Remaining_after_3.json"] == 4 and rec.rows["Top_2_to_4.json"] == 2
    assert rec.rows["llava_10_with_cluster_id.json"] == N and rec.rows["step_list.txt"] == 4
    summary = json.loads(Path(rec.files["summary"]).read_text())
    assert summary["rows_per_file"] == {k: v for k, v in rec.rows.items()}


def test_export_is_reused_and_follows_the_budget_in_its_file_names(run, exports):
    first = export_stage.fn(**run)
    again = export_stage.fn(**run)
    assert exports == [1] and EVENTS[-1].action == "reused" and again.content_hash == first.content_hash
    renamed = export_stage.fn(**{**run, "selection_num": 7500})
    assert exports == [1, 1] and renamed.key != first.key
    assert (Path(run["out_dir"]) / "selection_step_5" / "fastest_acc_data_7500.json").exists()
    assert "selection_step_5/fastest_acc_data_7500.json" in renamed.files
    assert "selection_step_5/fastest_acc_data_2.json" not in renamed.files, "an older export is no output"


def test_a_damaged_export_file_is_rewritten_not_reused(run, exports):
    first = export_stage.fn(**run)
    target = Path(run["out_dir"]) / "Selected_until_3.json"
    good = target.read_bytes()
    target.write_bytes(good.replace(b'"s4"', b'"s8"'))
    again = export_stage.fn(**run)
    assert exports == [1, 1], "a file of the export changed after it was written"
    assert target.read_bytes() == good and again.content_hash == first.content_hash


def test_last_remaining_writes_only_the_last_rounds_remaining_pool(run):
    """``export_remaining: last`` (a pool of millions of rows): of the remaining-pool files only the one the
    original scripts continue from is written; everything else is as with every round's."""
    every = export_stage.fn(**run)
    last = export_stage.fn(**{**run, "out_dir": run["out_dir"] + "-last", "remaining": "last"})
    remaining = {name for name in every.rows if name.startswith("Remaining")}
    assert remaining == {"Remaining_6.json", "Remaining_after_3.json", "Remaining_after_5.json"}
    assert {name for name in last.rows if name.startswith("Remaining")} == {"Remaining_after_5.json"}
    assert {k: v for k, v in every.rows.items() if k not in remaining} == {
        k: v for k, v in last.rows.items() if k != "Remaining_after_5.json"
    }
    out = Path(run["out_dir"] + "-last")
    assert not (out / "Remaining_after_3.json").exists() and not (out / "Remaining_6.json").exists()
    assert (out / "Remaining_after_5.json").read_bytes() == (
        Path(run["out_dir"]) / "Remaining_after_5.json"
    ).read_bytes()
