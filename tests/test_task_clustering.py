"""The k-means stage (tasks/clustering.py) called as a plain function on three hand-made concept blobs: its
files and record, the knobs its key follows, and reuse without a second k-means
(docs/algorithm.md#concept-clustering)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

import tasks.clustering as clustering_mod
from progress_core.clustering.config import ClusteringConfig
from progress_core.clustering.store import load_clustering
from progress_core.io import write_npy
from tasks.clustering import kmeans_stage
from tasks.stage import EVENTS, StageRecord, outputs_hash

PER_BLOB = 10


def blob_features(directory, seed: int = 0) -> StageRecord:
    """Three tight blobs of ``PER_BLOB`` unit rows each around orthogonal directions, stored as float16."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8, dtype=np.float32)[[0, 3, 6]]
    x = np.repeat(centres, PER_BLOB, axis=0) + 0.05 * rng.normal(size=(3 * PER_BLOB, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    path = write_npy(x.astype(np.float16), directory / "features.npy")
    files = {"features": str(path)}
    return StageRecord(
        stage="features",
        out_dir=str(directory),
        files=files,
        rows={"features": x.shape[0]},
        content_hash=outputs_hash(files),
    )


@pytest.fixture
def runs(monkeypatch):
    calls: list[int] = []
    real = clustering_mod.spherical_kmeans

    def counted(x, k, **kw):
        calls.append(k)
        return real(x, k, **kw)

    monkeypatch.setattr(clustering_mod, "spherical_kmeans", counted)
    return calls


def test_kmeans_writes_named_files_and_finds_the_blobs(tmp_path, runs):
    features = blob_features(tmp_path)
    settings = ClusteringConfig(niter=10, use_gpu=False)
    out = tmp_path / "clusters" / "annotation"
    rec = kmeans_stage.fn(features=features, name="annotation", k=3, settings=settings, out_dir=str(out))
    assert rec.files == {
        "assignment": str(out / "annotation_assignment.parquet"),
        "centroids": str(out / "annotation_centroids.npy"),
    }
    assert rec.rows == {"assignment": 3 * PER_BLOB} and rec.meta == {"name": "annotation", "k": 3, "used": 3}
    table = pq.read_table(rec.files["assignment"])
    assert table.column_names == ["sample_id", "cluster_id", "similarity"]
    assert table.column("sample_id").to_pylist() == list(range(3 * PER_BLOB))
    cid = table.column("cluster_id").to_numpy().reshape(3, PER_BLOB)
    assert (cid == cid[:, :1]).all() and len(set(cid[:, 0])) == 3, "one cluster per blob"
    assert load_clustering(out, "annotation").centroids.shape == (3, 8)
    assert runs == [3]


def test_kmeans_key_follows_k_seed_and_features_and_reuses_otherwise(tmp_path, runs):
    features = blob_features(tmp_path)
    settings = ClusteringConfig(niter=10, use_gpu=False)
    out = str(tmp_path / "c")
    first = kmeans_stage.fn(features=features, name="selection", k=3, settings=settings, out_dir=out)
    again = kmeans_stage.fn(features=features, name="selection", k=3, settings=settings, out_dir=out)
    assert runs == [3] and EVENTS[-1].action == "reused" and again.content_hash == first.content_hash
    more = kmeans_stage.fn(features=features, name="selection", k=4, settings=settings, out_dir=out)
    assert runs == [3, 4] and more.meta["k"] == 4 and more.key != first.key
    reseeded = kmeans_stage.fn(
        features=features, name="selection", k=4, settings=settings.model_copy(update={"seed": 7}), out_dir=out
    )
    assert runs == [3, 4, 4] and reseeded.key != more.key
    other = blob_features(tmp_path / "other", seed=1)
    kmeans_stage.fn(
        features=other, name="selection", k=4, settings=settings.model_copy(update={"seed": 7}), out_dir=out
    )
    assert runs == [3, 4, 4, 4]


def test_kmeans_recomputes_damaged_centroids(tmp_path, runs):
    features = blob_features(tmp_path)
    settings = ClusteringConfig(niter=10, use_gpu=False)
    out = str(tmp_path / "c")
    rec = kmeans_stage.fn(features=features, name="annotation", k=3, settings=settings, out_dir=out)
    centroids = rec.path("centroids")
    good = centroids.read_bytes()
    centroids.write_bytes(good[:-4] + b"\0\0\0\0")
    again = kmeans_stage.fn(features=features, name="annotation", k=3, settings=settings, out_dir=out)
    assert runs == [3, 3] and "content hash differs" in EVENTS[-1].reason
    assert centroids.read_bytes() == good and again.content_hash == rec.content_hash
