"""Feature files: shards, the combined matrix and its row writer (docs/architecture.md#file-kinds)."""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from progress_core.errors import ProgressError
from progress_core.io import atomic_path


class FeatureError(ProgressError):
    """Feature extraction cannot proceed (bad manifest, unusable encoder, inconsistent shards)."""


@dataclass
class ShardFeatures:
    """Raw (not yet combined) features of manifest rows ``start:stop``."""

    start: int
    image: np.ndarray
    text: np.ndarray
    image_failed: np.ndarray
    failed_sample_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def n(self) -> int:
        return int(self.text.shape[0])


def combine_features(image: np.ndarray, text: np.ndarray, balanced: bool = False, chunk: int = 65536) -> np.ndarray:
    """Joint feature of docs/algorithm.md#features: ``concat(image, text)`` with unit-norm rows, float16.

    ``balanced=False`` (original): one global L2 normalisation, so the raw DINOv2 norm (tens) dominates
    the unit-norm MiniLM part. ``balanced=True``: each part L2-normalised and scaled by 1/sqrt(2) (as
    COINCIDE weighs its modalities), then rows are renormalised so text-only rows are unit-norm too.
    All-zero rows stay zero. Computed in float32, chunk by chunk, to bound memory at 665K rows.
    """
    if image.shape[0] != text.shape[0]:
        raise FeatureError(f"image rows {image.shape[0]} != text rows {text.shape[0]}")
    n, di = image.shape
    out = np.empty((n, di + text.shape[1]), np.float16)
    for s in range(0, n, chunk):
        im = np.asarray(image[s : s + chunk], np.float32)
        tx = np.asarray(text[s : s + chunk], np.float32)
        if balanced:
            im, tx = l2_rows(im) / np.sqrt(2.0), l2_rows(tx) / np.sqrt(2.0)
        both = np.empty((im.shape[0], out.shape[1]), np.float32)
        both[:, :di], both[:, di:] = im, tx
        norms = np.sqrt(np.einsum("ij,ij->i", both, both))
        if not np.isfinite(norms).all():
            bad = s + int(np.flatnonzero(~np.isfinite(norms))[0])
            raise FeatureError(f"non-finite feature at sample_id {bad}")
        np.divide(both, norms[:, None], out=both, where=norms[:, None] > 0)
        out[s : s + chunk] = both
    return out


def save_shard(shard: ShardFeatures, directory: str | os.PathLike) -> Path:
    """Write one shard's raw parts as ``shard_<start>.npz`` atomically (for mapped extraction)."""
    path = Path(directory) / f"shard_{shard.start:09d}.npz"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(
                f, start=np.int64(shard.start), image=shard.image, text=shard.text, image_failed=shard.image_failed
            )
    return path


def load_shards(paths: Sequence[str | os.PathLike]) -> ShardFeatures:
    """Concatenate shards written by :func:`save_shard`; they must tile ``0..N`` without gaps."""
    parts = []
    for p in paths:
        with np.load(p) as z:
            parts.append(ShardFeatures(int(z["start"]), z["image"], z["text"], z["image_failed"]))
    parts.sort(key=lambda s: s.start)
    pos = 0
    for s in parts:
        if s.start != pos:
            raise FeatureError(f"shards do not tile the manifest: expected start {pos}, found {s.start}")
        pos += s.n
    failed = np.concatenate([s.image_failed for s in parts]) if parts else np.zeros(0, bool)
    return ShardFeatures(
        0,
        np.concatenate([s.image for s in parts]),
        np.concatenate([s.text for s in parts]),
        failed,
        np.flatnonzero(failed).astype(np.int64),
    )


class NpyRowWriter:
    """Write a ``(rows, cols)`` float16 ``.npy`` chunk by chunk, in order, renamed into place when complete."""

    def __init__(self, path: str | os.PathLike, rows: int, cols: int):
        self.path, self.rows, self.cols = Path(path), rows, cols
        self.written = 0

    def __enter__(self) -> NpyRowWriter:
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._file = open(tmp, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False}
        header["shape"] = (self.rows, self.cols)
        np.lib.format.write_array_header_2_0(self._file, header)
        return self

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=np.float16)
        if block.ndim != 2 or block.shape[1] != self.cols:
            raise FeatureError(f"block of shape {block.shape} does not fit {self.cols} columns")
        self._file.write(block.tobytes())
        self.written += block.shape[0]

    def __exit__(self, exc_type, exc, tb) -> None:
        self._file.close()
        if exc_type is None and self.written != self.rows:
            exc = FeatureError(f"wrote {self.written} of {self.rows} rows to {self.path}")
            self._atomic.__exit__(type(exc), exc, None)
            raise exc
        self._atomic.__exit__(exc_type, exc, tb)


def combine_shards(
    paths: Sequence[str | os.PathLike], out_path: str | os.PathLike, balanced: bool = False
) -> tuple[int, int, int, np.ndarray]:
    """Combine shards written by :func:`save_shard` into the float16 feature matrix, one shard in memory at a
    time (docs/algorithm.md#features). The shards must tile ``0..N`` without gaps.

    Returns ``(rows, image_dim, text_dim, failed_sample_ids)``.
    """
    heads = []
    for p in paths:
        with np.load(p) as z:
            heads.append(
                (int(z["start"]), int(z["text"].shape[0]), int(z["image"].shape[1]), int(z["text"].shape[1]), p)
            )
    heads.sort(key=lambda h: h[0])
    pos = 0
    for start, n, *_ in heads:
        if start != pos:
            raise FeatureError(f"shards do not tile the manifest: expected start {pos}, found {start}")
        pos += n
    if not heads:
        raise FeatureError("no feature shards to combine")
    image_dim, text_dim = heads[0][2], heads[0][3]
    failed = []
    with NpyRowWriter(out_path, pos, image_dim + text_dim) as out:
        for start, _, di, dt, p in heads:
            if (di, dt) != (image_dim, text_dim):
                raise FeatureError(f"shard at {start} has dims {di}+{dt}, the first shard {image_dim}+{text_dim}")
            with np.load(p) as z:
                out.write(combine_features(z["image"], z["text"], balanced))
                failed.append(start + np.flatnonzero(z["image_failed"]))
    return pos, image_dim, text_dim, np.concatenate(failed).astype(np.int64)


def load_features(path: str | os.PathLike, mmap: bool = True) -> np.ndarray:
    """Memory-map (or load) a feature matrix written by :func:`extract_features`."""
    try:
        feats = np.load(path, mmap_mode="r" if mmap else None)
    except Exception as exc:  # noqa: BLE001
        raise FeatureError(f"cannot read features {path}: {exc}") from exc
    if feats.ndim != 2:
        raise FeatureError(f"features {path} must be 2-D, got shape {feats.shape}")
    return feats


def release_pages(features: np.ndarray) -> None:
    """Drop a memory-mapped array's pages from this process's resident set (they stay in the page cache)."""
    mapping = getattr(features, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


FAULT_BYTES = 2 << 20
"""What one read fault in a file mapping can make resident: the page cache holds large folios (up to 2 MB on
x86-64) and a fault maps the whole folio, so one scattered 2.8 KB row can add 2 MB to the resident set."""


class PagedRows:
    """Row gathers (``rows[ids]``, ``shape``) from a memory-mapped feature matrix that keep the resident set small.

    COINCIDE's per-cluster kernels (docs/algorithm.md#warm-up-pools) read every row three times in cluster
    order, i.e. scattered over the file. Every row read is counted as :data:`FAULT_BYTES` and the mapped pages
    are dropped once ``release_bytes`` are counted, so a pool whose features exceed the memory goal (3M rows x
    1408 float16 = 8.4 GB) is pruned holding about ``release_bytes`` of them plus one cluster's reads
    (benchmarks/README.md: the CPU path at 3M rows). A plain array is indexed as is.
    """

    def __init__(self, features: np.ndarray, release_bytes: int = 1 << 30):
        self.features = features
        self.shape = features.shape
        self.dtype = features.dtype
        self._mapping = getattr(features, "_mmap", None)
        self._page_bytes = max(FAULT_BYTES, features.shape[1] * features.dtype.itemsize)
        self._release_bytes = release_bytes
        self._read = 0

    def __getitem__(self, rows) -> np.ndarray:
        out = np.asarray(self.features[rows])
        if self._mapping is not None:
            self._read += len(out) * self._page_bytes
            if self._read >= self._release_bytes:
                release_pages(self.features)
                self._read = 0
        return out


def l2_rows(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation; all-zero rows stay zero (no NaN)."""
    x = np.asarray(x, np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
