"""Atomic file output and content hashing (docs/architecture.md#stage-contract).

Outputs are committed by atomic rename, so a crash mid-round leaves no half-written file, and every stage is
keyed by the content hash of its inputs. Files get the mode the process umask allows (a shared ``/data``
stays readable by its group), not the 0600 of a temporary file.
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


def current_umask() -> int:
    """The process umask, read without changing it where the platform allows (Linux ``/proc``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~current_umask())
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


def write_bytes_if_changed(data: bytes, path: str | os.PathLike) -> bool:
    """Write ``data`` atomically unless ``path`` already holds exactly these bytes; True when it wrote.

    A file left as it was keeps its modification time, so a stage that regenerates identical inputs (the
    synthetic pool's images) leaves the size-and-mtime fingerprint of every later stage unchanged
    (docs/architecture.md#stage-contract).
    """
    target = Path(path)
    try:
        if target.stat().st_size == len(data) and target.read_bytes() == data:
            return False
    except OSError:
        pass
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return True


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


try:
    import xxhash as _xxhash
except ImportError:  # pragma: no cover - depends on the environment
    _xxhash = None

HASHERS = {"blake2b-128": lambda: hashlib.blake2b(digest_size=16)}
"""Content hash algorithms by the name written before a hash (``name:hexdigest``)."""
if _xxhash is not None:
    HASHERS["xxh3_128"] = _xxhash.xxh3_128
HASH_NAME = "xxh3_128" if _xxhash is not None else "blake2b-128"


def stream_hash(path: str | os.PathLike, chunk: int = 1 << 20, algorithm: str = HASH_NAME) -> str:
    """Content hash of one file, read in chunks: ``algorithm:hexdigest``, xxh3-128 by default (blake2b-128
    without ``xxhash``); a hash recorded with another algorithm is checked by naming it."""
    if algorithm not in HASHERS:
        raise ValueError(f"unknown content hash algorithm {algorithm!r} (known: {', '.join(sorted(HASHERS))})")
    h = HASHERS[algorithm]()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return f"{algorithm}:{h.hexdigest()}"


def files_fingerprint(paths: list[str | os.PathLike], contents: bool = False) -> str:
    """One fingerprint of many files: size and mtime of each (``contents``: their content hashes).

    Missing files count as missing (the fingerprint changes when one appears), never as an error: the
    stage that reads them reports them.
    """
    h = hashlib.sha256()
    for p in paths:
        h.update(os.fsencode(p))
        try:
            st = os.stat(p)
        except OSError:
            h.update(b"\0missing")
            continue
        h.update(stream_hash(p).encode() if contents else f"{st.st_size}-{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


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
