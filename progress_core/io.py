"""Atomic file output and content hashing.

DESIGN §3: outputs are committed by atomic rename, so a crash mid-round leaves no half-written file, and
every stage is keyed by the content hash of its inputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet(table: pa.Table | Any, path: str | os.PathLike) -> Path:
    """Write a pyarrow Table (or pandas DataFrame) to Parquet atomically."""
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def write_json(obj: Any, path: str | os.PathLike, indent: int | None = None) -> Path:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent, ensure_ascii=False)
    return Path(path)


def write_npy(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a .npy file atomically (memory-mappable with ``np.load(mmap_mode='r')``)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)
    return Path(path)


def parquet_schema(path: str | os.PathLike, error: type[Exception], what: str) -> pa.Schema:
    """Schema of the Parquet file at ``path``; ``error`` (a named error) when it is missing or not Parquet."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} not found: {str(p)!r}")
    try:
        return pq.read_schema(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise error(f"{str(p)!r} is not a Parquet file: {exc}") from None


def file_hash(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, or of a directory's files (relative names and contents, sorted)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        if p.is_dir():
            h.update(str(q.relative_to(p)).encode())
        with open(q, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()
