"""Small readers shared by the task wrappers: manifest rows and cluster ids for a sample-id set."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from progress_core.id_sets import read_ids
from tasks.stage import StageRecord


def ids_of(record: StageRecord | None, name: str) -> np.ndarray | None:
    """The sample ids in output ``name`` of ``record`` (None when there is no record)."""
    return None if record is None else read_ids(record.files[name])


def cluster_ids(annotation: StageRecord) -> np.ndarray:
    """Annotation ``cluster_id`` of every sample, indexed by sample_id."""
    table = pq.read_table(annotation.files["assignment"], columns=["sample_id", "cluster_id"])
    out = np.empty(table.num_rows, dtype=np.int64)
    out[table.column("sample_id").to_numpy()] = table.column("cluster_id").to_numpy()
    return out


def manifest_rows(
    manifest: StageRecord, ids: np.ndarray, columns=("sample_id", "id", "conversations", "image")
) -> pa.Table:
    """Manifest rows of ``ids`` in the order given (row i of the manifest is sample_id i)."""
    table = pq.read_table(manifest.files["manifest"], columns=list(columns))
    return table.take(pa.array(np.asarray(ids, dtype=np.int64)))
