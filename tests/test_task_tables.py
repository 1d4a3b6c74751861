"""The task wrappers' readers (tasks/_tables.py): ids of a record's output, cluster ids indexed by sample_id,
and manifest rows in the order asked for."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from progress_core.id_sets import write_ids
from tasks._tables import cluster_ids, ids_of, manifest_rows
from tasks.stage import StageRecord


def test_ids_of_reads_the_named_output_and_none_without_record(tmp_path):
    path = write_ids(np.array([7, 2, 5]), tmp_path / "new.parquet")
    record = StageRecord(stage="select", out_dir=str(tmp_path), files={"new": str(path)})
    np.testing.assert_array_equal(ids_of(record, "new"), [7, 2, 5])
    assert ids_of(None, "new") is None


def test_cluster_ids_are_indexed_by_sample_id_whatever_the_row_order(tmp_path):
    table = pa.table({"sample_id": [3, 0, 2, 1], "cluster_id": [30, 0, 20, 10], "similarity": [0.1] * 4})
    pq.write_table(table, tmp_path / "annotation_assignment.parquet")
    record = StageRecord(
        stage="kmeans", out_dir=str(tmp_path), files={"assignment": str(tmp_path / "annotation_assignment.parquet")}
    )
    out = cluster_ids(record)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [0, 10, 20, 30])


def test_manifest_rows_follow_the_ids_given(tmp_path):
    n = 6
    table = pa.table(
        {
            "sample_id": np.arange(n),
            "id": [f"s{i}" for i in range(n)],
            "conversations": [json.dumps([{"from": "human", "value": f"q{i}"}]) for i in range(n)],
            "image": [f"{i}.png" for i in range(n)],
        }
    )
    pq.write_table(table, tmp_path / "manifest.parquet")
    manifest = StageRecord(
        stage="manifest", out_dir=str(tmp_path), files={"manifest": str(tmp_path / "manifest.parquet")}
    )
    rows = manifest_rows(manifest, np.array([4, 1, 4]))
    assert rows.column_names == ["sample_id", "id", "conversations", "image"]
    assert rows.column("id").to_pylist() == ["s4", "s1", "s4"]
    assert manifest_rows(manifest, [2], columns=("id",)).to_pylist() == [{"id": "s2"}]
    assert manifest_rows(manifest, np.array([], dtype=np.int64)).num_rows == 0
