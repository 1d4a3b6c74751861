"""Clustering files: each sample's nearest centre and the centroids (docs/architecture.md#file-kinds).

The annotation and selection k-means write them; warm-up pools, the COINCIDE order, selection and the
export read them, so a change to how k-means runs does not re-key their readers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from progress_core.errors import ProgressError
from progress_core.io import write_npy, write_parquet


@dataclass
class KMeansResult:
    """Centroids, the nearest centre of every row and the inner product with it."""

    centroids: np.ndarray
    assignment: np.ndarray
    similarity: np.ndarray
    device: str = "cpu"

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])


def assignment_table(result: KMeansResult) -> pa.Table:
    """Assignment Parquet table of the shared contract: sample_id, cluster_id, similarity."""
    n = result.assignment.shape[0]
    return pa.table(
        {
            "sample_id": pa.array(np.arange(n, dtype=np.int64)),
            "cluster_id": pa.array(result.assignment.astype(np.int64)),
            "similarity": pa.array(result.similarity.astype(np.float32)),
        }
    )


def clustering_paths(out_dir: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """``(<name>_assignment.parquet, <name>_centroids.npy)`` inside ``out_dir``."""
    d = Path(out_dir)
    return d / f"{name}_assignment.parquet", d / f"{name}_centroids.npy"


def save_clustering(result: KMeansResult, out_dir: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Write the assignment Parquet and the centroids .npy atomically."""
    a_path, c_path = clustering_paths(out_dir, name)
    write_parquet(assignment_table(result), a_path)
    write_npy(result.centroids.astype(np.float32), c_path)
    return a_path, c_path


def load_clustering(out_dir: str | os.PathLike, name: str) -> KMeansResult:
    """Read a clustering written by :func:`save_clustering`."""
    a_path, c_path = clustering_paths(out_dir, name)
    if not a_path.is_file() or not c_path.is_file():
        raise ClusteringError(f"no clustering {name!r} in {out_dir} (expected {a_path.name}, {c_path.name})")
    table = pq.read_table(a_path)
    ids = table.column("sample_id").to_numpy()
    order = np.argsort(ids, kind="stable")
    if not np.array_equal(ids[order], np.arange(len(ids))):
        raise ClusteringError(f"{a_path}: sample_id is not 0..N-1")
    centroids = np.load(c_path)
    assignment = table.column("cluster_id").to_numpy()[order].astype(np.int64)
    if assignment.size and (assignment.min() < 0 or assignment.max() >= centroids.shape[0]):
        raise ClusteringError(f"{a_path}: cluster_id outside 0..{centroids.shape[0] - 1}")
    return KMeansResult(
        centroids=centroids.astype(np.float32),
        assignment=assignment,
        similarity=table.column("similarity").to_numpy()[order].astype(np.float32),
    )


class ClusteringError(ProgressError):
    """Base class of clustering failures."""
