"""COINCIDE warm-up pools (docs/algorithm.md#warm-up-pools): W1, W2 = W(f2) − W(f1), the remaining pool, and the pruning
order used by the ``coincide`` baseline."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from progress_core.clustering.coincide import coincide_selection, warmup_pools
from progress_core.clustering.config import PruningSettings, WarmupConfig
from progress_core.clustering.store import load_clustering
from progress_core.features.store import PagedRows, load_features
from progress_core.id_sets import write_ids
from tasks.stage import StageRecord, stage, stage_cache_key


@task(name="warmup-pools", task_run_name="warmup-pools", cache_key_fn=stage_cache_key, persist_result=True)
@stage("warmup_pools")
def warmup_stage(
    features: StageRecord, selection_clusters: StageRecord, settings: WarmupConfig, out_dir: str
) -> StageRecord:
    """Both pruning runs on the selection clustering; files ``w1``, ``w2``, ``remaining``, ``order``."""
    x = PagedRows(load_features(features.files["features"], mmap=True))
    fine = load_clustering(Path(selection_clusters.out_dir), selection_clusters.meta["name"])
    pools = warmup_pools(
        x, fine, fractions=tuple(settings.fractions), temperature=settings.temperature, sigma=settings.sigma
    )
    out = Path(out_dir)
    files, rows = {}, {}
    for name in ("w1", "w2", "remaining", "order"):
        ids = getattr(pools, name)
        files[name] = str(write_ids(ids, out / f"{name}.parquet"))
        rows[name] = int(len(ids))
    return StageRecord(stage="warmup_pools", out_dir=out_dir, files=files, rows=rows)


@task(name="coincide-order", task_run_name="coincide-order", cache_key_fn=stage_cache_key, persist_result=True)
@stage("coincide_order")
def coincide_order_stage(
    features: StageRecord, selection_clusters: StageRecord, budget: int, settings: PruningSettings, out_dir: str
) -> StageRecord:
    """The COINCIDE baseline's whole budget chosen at once by cluster-wise pruning (docs/algorithm.md#baseline-strategies)."""
    x = PagedRows(load_features(features.files["features"], mmap=True))
    fine = load_clustering(Path(selection_clusters.out_dir), selection_clusters.meta["name"])
    ids = coincide_selection(x, fine, budget, temperature=settings.temperature, sigma=settings.sigma)
    path = write_ids(ids, Path(out_dir) / "coincide_order.parquet")
    return StageRecord(stage="coincide_order", out_dir=out_dir, files={"order": str(path)}, rows={"order": len(ids)})
