"""Dual k-means stages (docs/algorithm.md#concept-clustering): the annotation clustering labels every sample with its concept
``cluster_id``; the selection clustering feeds COINCIDE warm-up pruning."""

from __future__ import annotations

import numpy as np
from prefect import task

from progress_core.clustering.config import KMeansSettings
from progress_core.clustering.kmeans import spherical_kmeans
from progress_core.clustering.store import save_clustering
from progress_core.features.store import load_features
from tasks.stage import StageRecord, stage, stage_cache_key


@task(name="kmeans", cache_key_fn=stage_cache_key, persist_result=True, task_run_name="kmeans[{name}]")
@stage("kmeans")
def kmeans_stage(features: StageRecord, name: str, k: int, settings: KMeansSettings, out_dir: str) -> StageRecord:
    """Spherical faiss k-means with ``k`` centres; writes ``<name>_assignment.parquet`` and centroids."""
    x = load_features(features.files["features"], mmap=True)
    result = spherical_kmeans(
        x,
        k,
        niter=settings.niter,
        seed=settings.seed,
        max_points_per_centroid=settings.max_points_per_centroid,
        gpu=settings.use_gpu,
        spherical=settings.spherical,
    )
    assignment, centroids = save_clustering(result, out_dir, name)
    used = int(np.unique(result.assignment).size)
    return StageRecord(
        stage="kmeans",
        out_dir=out_dir,
        files={"assignment": str(assignment), "centroids": str(centroids)},
        rows={"assignment": int(result.assignment.shape[0])},
        meta={"name": name, "k": k, "used": used},
    )
