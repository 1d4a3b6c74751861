import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from progress_core.data.manifest import build_manifest, read_manifest
from progress_core.errors import ConfigError
from progress_core.id_sets import IdSetFileError, read_ids
from progress_core.probe.accuracy_table import accuracy_from_verdicts
from progress_core.reporting.export import RoundExport, all_rows_file_name, export_original, warmup_file_names
from progress_core.selection.rounds import (
    RoundFiles,
    RoundInvariantError,
    apply_round,
    commit_round,
    next_step,
    steps_for,
    warmup_sets,
)


def test_step_bookkeeping_matches_the_paper():
    assert steps_for(50_000, 128) == 390
    assert steps_for(60_000, 128) == 468
    assert next_step(469, 7_300, 128) == 469 + 57
    assert next_step(469, 127, 128) == 469
    with pytest.raises(ConfigError):
        steps_for(10, 0)


def test_commit_round_writes_sets(tmp_path):
    selected = np.array([5, 1])
    remaining = np.array([0, 2, 3, 4, 6, 7])
    sel, rem = commit_round(tmp_path, 1, 469, np.array([6, 2]), selected, remaining)
    assert sel.tolist() == [5, 1, 6, 2]
    assert rem.tolist() == [0, 3, 4, 7]
    files = RoundFiles(tmp_path)
    assert files.new(1).name == "new_1.parquet"
    assert read_ids(files.new(1)).tolist() == [6, 2]
    assert read_ids(tmp_path / "selected_until_469.parquet").tolist() == [5, 1, 6, 2]
    assert read_ids(tmp_path / "remaining_after_469.parquet").tolist() == [0, 3, 4, 7]
    assert pq.read_schema(files.new(1)).field("sample_id").type == pa.int64()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "new_1.parquet",
        "remaining_after_469.parquet",
        "selected_until_469.parquet",
    ]


@pytest.mark.parametrize(
    "new, sel, rem, match",
    [
        ([9], [1], [2, 3], "sample_id 9 is not in the remaining pool"),
        ([2, 2], [1], [2, 3], "new: sample_id 2 appears more than once"),
        ([2], [1, 3], [2, 3], "sample_id 3 is both selected and remaining"),
    ],
)
def test_round_invariants(tmp_path, new, sel, rem, match):
    with pytest.raises(RoundInvariantError, match=match):
        commit_round(tmp_path, 1, 10, np.array(new), np.array(sel), np.array(rem))
    assert list(tmp_path.iterdir()) == []


def test_read_ids_errors(tmp_path):
    pq.write_table(pa.table({"x": [1]}), tmp_path / "x.parquet")
    with pytest.raises(IdSetFileError, match="no integer 'sample_id'"):
        read_ids(tmp_path / "x.parquet")
    with pytest.raises(IdSetFileError, match="not found"):
        read_ids(tmp_path / "none.parquet")


def test_warmup_sets():
    w2_only, union, pool = warmup_sets(10, [4, 1, 7], [1, 8, 4, 2])
    assert w2_only.tolist() == [8, 2]
    assert union.tolist() == [4, 1, 7, 8, 2]
    assert pool.tolist() == [0, 3, 5, 6, 9]


def make_pool(tmp_path, n=12):
    rows = []
    for i in range(n):
        row = {"id": f"s{i}"}
        if i % 4:
            row["image"] = f"coco/img{i}.png"
        row["conversations"] = [
            {"from": "human", "value": ("<image>\n" if i % 4 else "") + f"q{i}?"},
            {"from": "gpt", "value": f"a{i}" if i % 5 else f"a{i} – café 東京 🙂"},
        ]
        if i == 3:
            row["model"] = "x"
        rows.append(row)
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(rows))
    build_manifest(pool, tmp_path / "manifest.parquet")
    return rows, read_manifest(tmp_path / "manifest.parquet")


def test_export_original_round_trip(tmp_path):
    rows, manifest = make_pool(tmp_path)
    n = len(rows)
    cid = np.array([i % 3 for i in range(n)], dtype=np.int64)
    sim = (np.arange(n) / 16).astype(np.float32)
    assignment = pd.DataFrame({"sample_id": np.arange(n), "cluster_id": cid, "similarity": sim})
    w1, w2 = np.array([0, 5]), np.array([5, 9, 2])
    selected = np.array([0, 5, 9, 2])
    remaining = np.array([1, 3, 4, 6, 7, 8, 10, 11])
    new = np.array([7, 3, 11])
    sel, rem = apply_round(new, selected, remaining)
    out = tmp_path / "orig"
    acc = accuracy_from_verdicts([0, 2, 2], [1, 0, 1])
    counts = export_original(
        out,
        manifest,
        assignment,
        w1,
        w2,
        [RoundExport(469, new, sel, rem, num=7500, probabilities={1: 0.25, 2: 0.75})],
        step_list=[391, 469, 469],
        accuracy_tables={469: acc},
    )

    def load(name):
        return json.loads((out / name).read_text())

    def expected(i):
        return {**rows[i], "cluster_id": int(cid[i]), "dist_to_cent": float(sim[i]), "index": i}

    assert load("llava_12_with_cluster_id.json") == [expected(i) for i in range(n)]
    assert list(load("llava_12_with_cluster_id.json")[3]) == [
        "id",
        "image",
        "conversations",
        "model",
        "cluster_id",
        "dist_to_cent",
        "index",
    ]
    assert load("Top_2.json") == [expected(i) for i in (0, 5)]
    assert [r["index"] for r in load("Top_2_to_4.json")] == [9, 2]
    assert [r["index"] for r in load("Top_4.json")] == [0, 5, 9, 2]
    assert [r["index"] for r in load("Remaining_8.json")] == [1, 3, 4, 6, 7, 8, 10, 11]
    assert load("selection_step_469/fastest_acc_data_7500.json") == [expected(i) for i in (7, 3, 11)]
    assert [r["index"] for r in load("Selected_until_469.json")] == [0, 5, 9, 2, 7, 3, 11]
    assert [r["index"] for r in load("Remaining_after_469.json")] == [1, 4, 6, 8, 10]
    assert load("selection_step_469/fastest_selected_cluster_accuracies_7500.json") == {"2": 0.75, "1": 0.25}
    assert load("selection_step_469/combined_results_internVL.json")["cluster_accuracies"] == {
        "0": {"correct": 1, "total": 1, "accuracy": 1.0},
        "2": {"correct": 1, "total": 2, "accuracy": 0.5},
    }
    assert (out / "step_list.txt").read_bytes() == b"391\n469\n469"
    summary = load("export_summary.json")
    assert summary["n_samples"] == 12
    assert summary["rows_per_file"]["Top_4.json"] == 4 == counts["Top_4.json"]
    assert summary["rows_per_file"]["Remaining_after_469.json"] == 5


def test_export_file_names_carry_the_real_counts_and_the_papers_names_on_llava_665k():
    n = 665_298
    w1, union = int(0.075 * n), int(0.09 * n)
    assert all_rows_file_name(n) == "llava_665k_with_cluster_id.json"
    assert warmup_file_names(w1, union, n - union) == {
        "w1": "Top_50K.json",
        "w2": "Top_50K_to_60K.json",
        "warmup": "Top_60K.json",
        "pool": "Remaining_605K.json",
    }
    assert all_rows_file_name(300) == "llava_300_with_cluster_id.json"
    assert warmup_file_names(45, 60, 240)["w2"] == "Top_45_to_60.json"
    assert warmup_file_names(12_300, 12_400, 50_000)["w2"] == "Top_12300_to_12400.json", "no name shared"


def test_export_rejects_misaligned_assignment(tmp_path):
    from progress_core.reporting.export import ExportError, OriginalExporter

    _, manifest = make_pool(tmp_path, n=4)
    bad = pd.DataFrame({"sample_id": [0, 1, 2], "cluster_id": [0, 0, 0], "similarity": [1.0, 1.0, 1.0]})
    with pytest.raises(ExportError, match="does not cover"):
        OriginalExporter(tmp_path / "o", manifest, bad)


@pytest.mark.parametrize(("copy_rows", "max_read"), [(8192, 64 << 20), (3, 64 << 20), (2, 1)])
def test_files_copied_from_the_all_rows_file_equal_serialised_ones(tmp_path, monkeypatch, copy_rows, max_read):
    import progress_core.reporting.export as export

    monkeypatch.setattr(export, "COPY_ROWS", copy_rows)
    monkeypatch.setattr(export, "MAX_READ_BYTES", max_read)
    rows, manifest = make_pool(tmp_path)
    n = len(rows)
    assignment = pd.DataFrame(
        {"sample_id": np.arange(n), "cluster_id": np.arange(n) % 3, "similarity": np.linspace(0, 1, n)}
    )
    copied = export.OriginalExporter(tmp_path / "copied", tmp_path / "manifest.parquet", assignment)
    serialised = export.OriginalExporter(tmp_path / "serialised", manifest, assignment)
    all_rows = copied.write_all()
    cases = {"empty.json": [], "one.json": [7], "shuffled.json": [11, 0, 7, 3, 3, 10, 1], "all.json": range(n)}
    for name, ids in cases.items():
        copied.write_rows(ids, f"sub/{name}")
        serialised.write_rows(ids, f"sub/{name}")
        made = (tmp_path / "copied" / "sub" / name).read_bytes()
        assert made == (tmp_path / "serialised" / "sub" / name).read_bytes(), name
        assert [r["index"] for r in json.loads(made)] == list(ids)
    assert (tmp_path / "copied" / "sub" / "all.json").read_bytes() == all_rows.read_bytes()
    assert copied.counts["sub/shuffled.json"] == 7
    assert copied._table is None, "streamed from the manifest file, the whole table was never read"
