"""Bring your own features: store features computed elsewhere as the features stage's output (PROGRESS §3.1).

A user who already has DINOv2 / MiniLM features on disk skips extraction. Three layouts are accepted:

* the original scripts' pair of ``.npy`` files, image part and text part, row ``i`` = pool row ``i``
  (combined exactly as :func:`progress_core.features.store.combine_features` combines extracted parts);
* one joint ``.npy`` matrix in pool order, or keyed by sample id through an ``ids`` file (``.npy`` of int
  sample ids or a Parquet file with a ``sample_id`` column), row ``j`` = sample ``ids[j]``;
* a Parquet file with a ``sample_id`` column and a list column ``features`` (joint) or ``image`` + ``text``.

The result is the same float16, unit-norm, memory-mappable ``features.npy`` the extraction writes
(docs/algorithm.md#features). Inputs are read in row chunks with plain file reads, never loaded whole and
never memory-mapped for sequential layouts, so the import's peak memory is a few chunks whatever the pool
size. A row count or a set of ids that does not match the manifest is a named error, never a silent
misalignment.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from progress_core.features.store import FeatureError, NpyRowWriter, combine_features
from progress_core.io import atomic_path, file_hash, write_json

CHUNK_ROWS = 16384


class FeatureImportError(FeatureError):
    """Imported features cannot be used (unreadable file, wrong layout, non-finite values)."""


class FeatureRowCountError(FeatureImportError):
    """An imported feature file has a different number of rows than the manifest."""


class FeatureIdMismatchError(FeatureImportError):
    """The sample ids of keyed features are not exactly the manifest's ``0..N-1`` (missing, unknown or repeated)."""


@dataclass
class ImportReport:
    """What :func:`import_features` wrote."""

    path: Path
    n: int
    dim: int
    image_dim: int
    text_dim: int
    layout: str
    n_zero_rows: int


@dataclass(frozen=True)
class NpyInfo:
    """Shape, dtype and data offset of a C-ordered 2-D ``.npy`` file."""

    path: Path
    rows: int
    cols: int
    dtype: np.dtype
    offset: int


def npy_info(path: str | os.PathLike) -> NpyInfo:
    """Read only the header of a ``.npy`` file; a missing file, another format or a non-2-D array is an error."""
    p = Path(path)
    if not p.is_file():
        raise FeatureImportError(f"feature file not found: {str(p)!r}")
    try:
        with open(p, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except (ValueError, OSError) as exc:
        raise FeatureImportError(f"{str(p)!r} is not a .npy file: {exc}") from None
    if len(shape) != 2:
        raise FeatureImportError(f"{str(p)!r}: features must be 2-D (rows x dims), got shape {shape}")
    if fortran:
        raise FeatureImportError(f"{str(p)!r}: Fortran-ordered arrays are not supported; save with np.save(C order)")
    if dtype.kind != "f":
        raise FeatureImportError(f"{str(p)!r}: features must be floating point, got {dtype}")
    return NpyInfo(p, int(shape[0]), int(shape[1]), dtype, offset)


def iter_npy_rows(info: NpyInfo, chunk: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, rows)`` chunks of a 2-D ``.npy`` read with plain reads (bounded memory, no page-cache mapping)."""
    row_bytes = info.cols * info.dtype.itemsize
    with open(info.path, "rb") as f:
        f.seek(info.offset)
        for start in range(0, info.rows, chunk):
            count = min(chunk, info.rows - start)
            block = np.fromfile(f, dtype=info.dtype, count=count * info.cols)
            if block.size != count * info.cols:
                raise FeatureImportError(f"{str(info.path)!r} is truncated at row {start + block.size // info.cols}")
            yield start, block.reshape(count, info.cols)
        if row_bytes and f.read(1):
            raise FeatureImportError(f"{str(info.path)!r} has trailing bytes after {info.rows} rows")


def _check_rows(info_rows: int, n_rows: int, what: str) -> None:
    if info_rows != n_rows:
        raise FeatureRowCountError(
            f"{what} has {info_rows} rows but the manifest has {n_rows}; features in pool order need one row per sample"
        )


def _read_ids(path: str | os.PathLike) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise FeatureImportError(f"ids file not found: {str(p)!r}")
    if p.suffix == ".parquet":
        try:
            table = pq.read_table(p, columns=["sample_id"])
        except (pa.ArrowInvalid, KeyError, OSError) as exc:
            raise FeatureImportError(f"{str(p)!r}: cannot read a sample_id column: {exc}") from None
        ids = table.column("sample_id").to_numpy()
    else:
        try:
            ids = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise FeatureImportError(f"{str(p)!r} is not a .npy of sample ids: {exc}") from None
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise FeatureImportError(f"{str(p)!r}: sample ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    return ids.astype(np.int64)


def check_ids(ids: np.ndarray, n_rows: int, source: str) -> np.ndarray:
    """The permutation putting keyed rows into sample-id order; :class:`FeatureIdMismatchError` unless ``ids``
    is exactly ``0..n_rows-1`` in some order (the error names missing, unknown and repeated ids)."""
    ids = np.asarray(ids, np.int64)
    unknown = ids[(ids < 0) | (ids >= n_rows)]
    inside = ids[(ids >= 0) & (ids < n_rows)]
    counts = np.bincount(inside, minlength=n_rows)
    missing, repeated = np.flatnonzero(counts == 0), np.flatnonzero(counts > 1)
    if unknown.size or missing.size or repeated.size:
        parts = []
        for label, arr in (("missing", missing), ("unknown", unknown), ("repeated", repeated)):
            if arr.size:
                parts.append(f"{arr.size} {label} (e.g. {', '.join(map(str, arr[:5].tolist()))})")
        raise FeatureIdMismatchError(
            f"{source}: sample ids do not match the manifest's 0..{n_rows - 1}: " + "; ".join(parts)
        )
    return np.argsort(ids, kind="stable")


def _parquet_matrix(column: pa.ChunkedArray | pa.Array, source: str, name: str) -> np.ndarray:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_fixed_size_list(arr.type):
        width = arr.type.list_size
    elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        lengths = np.diff(arr.offsets.to_numpy())
        if lengths.size and (lengths != lengths[0]).any():
            raise FeatureImportError(f"{source}: column {name!r} has rows of different lengths")
        width = int(lengths[0]) if lengths.size else 0
    else:
        raise FeatureImportError(f"{source}: column {name!r} must be a list of floats, got {arr.type}")
    if arr.null_count:
        raise FeatureImportError(f"{source}: column {name!r} has {arr.null_count} null rows")
    values = arr.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, np.float32).reshape(len(arr), width)


def _finite(block: np.ndarray, start: int, source: str) -> None:
    ok = np.isfinite(block).all(axis=1)
    if not ok.all():
        raise FeatureImportError(f"{source}: non-finite feature at row {start + int(np.flatnonzero(~ok)[0])}")


def import_features(
    out_path: str | os.PathLike,
    n_rows: int,
    *,
    image: str | os.PathLike | None = None,
    text: str | os.PathLike | None = None,
    features: str | os.PathLike | None = None,
    ids: str | os.PathLike | None = None,
    balanced: bool = False,
    chunk: int = CHUNK_ROWS,
) -> ImportReport:
    """Write ``out_path`` (float16 ``(n_rows, dim)``, row i = sample_id i) from features computed elsewhere.

    Give either ``image`` and ``text`` (the original's two ``.npy`` files in pool order) or ``features``
    (a joint ``.npy`` in pool order, optionally keyed by ``ids``, or a Parquet file keyed by ``sample_id``).
    Pairs are combined as extraction combines them (``balanced`` as in ``FeatureConfig``); joint features
    are L2-normalised per row. All-zero rows stay zero and are counted.
    """
    out_path = Path(out_path)
    if (image is None) != (text is None):
        raise FeatureImportError("give both the image and the text feature files, or one joint features file")
    if (image is None) == (features is None):
        raise FeatureImportError("give either image + text feature files or one joint features file, not both")
    if image is not None:
        if ids is not None:
            raise FeatureImportError("ids apply to a joint features file; image/text files are in pool order")
        return _import_pair(out_path, n_rows, npy_info(image), npy_info(text), balanced, chunk)
    features = Path(features)
    if features.suffix == ".parquet":
        if ids is not None:
            raise FeatureImportError("a Parquet features file carries its own sample_id column; drop ids")
        return _import_parquet(out_path, n_rows, features, balanced, chunk)
    info = npy_info(features)
    if ids is None:
        _check_rows(info.rows, n_rows, str(features))
        return _import_joint_in_order(out_path, n_rows, info, chunk)
    key = _read_ids(ids)
    if key.size != info.rows:
        raise FeatureRowCountError(f"{ids}: {key.size} ids for {info.rows} feature rows in {features}")
    order = check_ids(key, n_rows, str(ids))
    return _import_joint_keyed(out_path, n_rows, info, order, chunk)


def _import_pair(out_path: Path, n: int, im: NpyInfo, tx: NpyInfo, balanced: bool, chunk: int) -> ImportReport:
    _check_rows(im.rows, n, f"image features {str(im.path)!r}")
    _check_rows(tx.rows, n, f"text features {str(tx.path)!r}")
    zero = 0
    with NpyRowWriter(out_path, n, im.cols + tx.cols) as out:
        for (start, a), (_, b) in zip(iter_npy_rows(im, chunk), iter_npy_rows(tx, chunk)):
            _finite(a, start, str(im.path))
            _finite(b, start, str(tx.path))
            block = combine_features(a, b, balanced)
            zero += int((~block.any(axis=1)).sum())
            out.write(block)
    return ImportReport(out_path, n, im.cols + tx.cols, im.cols, tx.cols, "image+text", zero)


def _joint(block: np.ndarray) -> np.ndarray:
    return combine_features(block, np.zeros((block.shape[0], 0), np.float32))


def _import_joint_in_order(out_path: Path, n: int, info: NpyInfo, chunk: int) -> ImportReport:
    zero = 0
    with NpyRowWriter(out_path, n, info.cols) as out:
        for start, block in iter_npy_rows(info, chunk):
            _finite(block, start, str(info.path))
            joint = _joint(block)
            zero += int((~joint.any(axis=1)).sum())
            out.write(joint)
    return ImportReport(out_path, n, info.cols, 0, 0, "joint", zero)


def _import_joint_keyed(out_path: Path, n: int, info: NpyInfo, order: np.ndarray, chunk: int) -> ImportReport:
    """Gather rows into sample-id order: random reads, so the source is memory-mapped (read-only)."""
    source = np.load(info.path, mmap_mode="r")
    zero = 0
    with NpyRowWriter(out_path, n, info.cols) as out:
        for start in range(0, n, chunk):
            rows = order[start : start + chunk]
            sort = np.argsort(rows)
            block = np.empty((rows.size, info.cols), info.dtype)
            block[sort] = source[rows[sort]]
            _finite(block, start, str(info.path))
            joint = _joint(block)
            zero += int((~joint.any(axis=1)).sum())
            out.write(joint)
    del source
    return ImportReport(out_path, n, info.cols, 0, 0, "joint, keyed by sample_id", zero)


def _import_parquet(out_path: Path, n: int, path: Path, balanced: bool, chunk: int) -> ImportReport:
    """Scatter Parquet batches into sample-id order (an output memmap takes the random writes)."""
    if not path.is_file():
        raise FeatureImportError(f"feature file not found: {str(path)!r}")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FeatureImportError(f"{str(path)!r} is not a Parquet file: {exc}") from None
    names = set(pf.schema_arrow.names)
    if "sample_id" not in names:
        raise FeatureImportError(f"{str(path)!r}: keyed features need a sample_id column, found {sorted(names)}")
    if "features" in names:
        columns = ["features"]
    elif {"image", "text"} <= names:
        columns = ["image", "text"]
    else:
        raise FeatureImportError(f"{str(path)!r}: need a 'features' list column or 'image' and 'text' list columns")
    ids = pq.read_table(path, columns=["sample_id"]).column("sample_id").to_numpy()
    check_ids(ids, n, str(path))
    first = next(pf.iter_batches(batch_size=1, columns=columns))
    widths = [_parquet_matrix(first.column(c), str(path), c).shape[1] for c in columns]
    dim = sum(widths)
    zero = 0
    with atomic_path(out_path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, dim))
        start = 0
        for batch in pf.iter_batches(batch_size=chunk, columns=["sample_id", *columns]):
            parts = [_parquet_matrix(batch.column(c), str(path), c) for c in columns]
            for c, part, w in zip(columns, parts, widths):
                if part.shape[1] != w:
                    raise FeatureImportError(f"{str(path)!r}: column {c!r} changes width from {w} to {part.shape[1]}")
                _finite(part, start, f"{path} column {c!r}")
            block = combine_features(parts[0], parts[1], balanced) if len(parts) == 2 else _joint(parts[0])
            zero += int((~block.any(axis=1)).sum())
            out[batch.column("sample_id").to_numpy()] = block
            start += batch.num_rows
        out.flush()
        del out
    image_dim, text_dim = (widths[0], widths[1]) if len(widths) == 2 else (0, 0)
    return ImportReport(out_path, n, dim, image_dim, text_dim, f"parquet ({', '.join(columns)})", zero)


def source_fingerprint(paths: Sequence[str | os.PathLike], memo: str | os.PathLike | None = None) -> str:
    """Content hash of the source files (the import stage's cache key, docs/architecture.md#stage-contract).

    Hashing gigabytes on every re-run would cost seconds, so each file's sha256 is remembered in ``memo``
    (a small JSON) under its path, size and modification time; a file that changes is hashed again.
    """
    known: dict[str, str] = {}
    memo_path = Path(memo) if memo is not None else None
    if memo_path is not None and memo_path.is_file():
        try:
            known = json.loads(memo_path.read_text())
        except ValueError:
            known = {}
    h = hashlib.sha256()
    changed = False
    for p in paths:
        q = Path(p).resolve()
        if not q.is_file():
            raise FeatureImportError(f"feature file not found: {str(p)!r}")
        st = q.stat()
        tag = f"{q}|{st.st_size}|{st.st_mtime_ns}"
        if tag not in known:
            known[tag] = file_hash(q)
            changed = True
        h.update(known[tag].encode())
    if memo_path is not None and changed:
        write_json(known, memo_path, indent=1)
    return h.hexdigest()[:24]
