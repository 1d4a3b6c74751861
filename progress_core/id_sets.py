"""Sample-id set files: Parquet with one ``sample_id: int64`` column (docs/architecture.md#file-kinds).

Every stage that hands a set of samples to another (warm-up pools, a round's new, selected and remaining
samples, the COINCIDE order) writes and reads it here, so the file kind has one writer and one reader.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from progress_core.errors import ProgressError
from progress_core.io import parquet_schema, write_parquet


class IdSetFileError(ProgressError):
    """A sample-id Parquet file is missing or has no ``sample_id`` integer column."""


def write_ids(ids: np.ndarray, path: str | os.PathLike, extra: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write a sample-id set as Parquet (``sample_id:int64`` plus optional columns), atomically."""
    columns = {"sample_id": pa.array(np.asarray(ids, dtype=np.int64), type=pa.int64())}
    for name, values in (extra or {}).items():
        columns[name] = pa.array(np.asarray(values))
    return write_parquet(pa.table(columns), path)


def read_ids(path: str | os.PathLike) -> np.ndarray:
    """Read the ``sample_id`` column of a sample-id Parquet file, in file order."""
    p = Path(path)
    schema = parquet_schema(p, IdSetFileError, "sample-id file")
    if "sample_id" not in schema.names or not pa.types.is_integer(schema.field("sample_id").type):
        raise IdSetFileError(f"{str(p)!r} has no integer 'sample_id' column (columns: {schema.names})")
    col = pq.read_table(p, columns=["sample_id"]).column("sample_id")
    if col.null_count:
        raise IdSetFileError(f"{str(p)!r}: sample_id has {col.null_count} null values")
    return col.to_numpy().astype(np.int64, copy=False)
