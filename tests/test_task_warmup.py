"""Warm-up pool and COINCIDE order stages (tasks/warmup.py) as plain functions on a hand-made clustering:
their files hold exactly what the core computes, the pools partition the pool, and the keys follow the
settings (docs/algorithm.md#warm-up-pools)."""

from __future__ import annotations

import numpy as np
import pytest
from test_task_clustering import PER_BLOB, blob_features

import tasks.warmup as warmup_mod
from progress_core.clustering.coincide import coincide_selection, warmup_pools
from progress_core.clustering.config import ClusteringConfig, WarmupConfig
from progress_core.clustering.store import load_clustering
from progress_core.features.store import load_features
from progress_core.id_sets import read_ids
from tasks.clustering import kmeans_stage
from tasks.stage import EVENTS
from tasks.warmup import coincide_order_stage, warmup_stage

N = 3 * PER_BLOB


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("warmup")
    features = blob_features(d)
    clusters = kmeans_stage.fn(
        features=features,
        name="selection",
        k=6,
        settings=ClusteringConfig(niter=10, use_gpu=False),
        out_dir=str(d / "clusters"),
    )
    return features, clusters


@pytest.fixture
def prunings(monkeypatch):
    calls: list[str] = []
    real_pools, real_order = warmup_mod.warmup_pools, warmup_mod.coincide_selection
    monkeypatch.setattr(warmup_mod, "warmup_pools", lambda *a, **kw: calls.append("pools") or real_pools(*a, **kw))
    monkeypatch.setattr(
        warmup_mod, "coincide_selection", lambda *a, **kw: calls.append("order") or real_order(*a, **kw)
    )
    return calls


def test_warmup_files_partition_the_pool_as_the_core_computes(inputs, prunings, tmp_path):
    features, clusters = inputs
    settings = WarmupConfig(fractions=(0.2, 0.3))
    rec = warmup_stage.fn(features=features, selection_clusters=clusters, settings=settings, out_dir=str(tmp_path))
    ids = {name: read_ids(rec.files[name]) for name in ("w1", "w2", "remaining", "order")}
    assert rec.rows == {name: len(v) for name, v in ids.items()}
    x = load_features(features.files["features"], mmap=False)
    expected = warmup_pools(x, load_clustering(clusters.out_dir, "selection"), fractions=(0.2, 0.3))
    for name, got in ids.items():
        np.testing.assert_array_equal(got, getattr(expected, name))
    parts = np.concatenate([ids["w1"], ids["w2"], ids["remaining"]])
    assert np.array_equal(np.sort(parts), np.arange(N)), "W1, W2 and the remaining pool partition the pool"
    assert set(ids["w1"]) | set(ids["w2"]) <= set(ids["order"]) and 0 < len(ids["w1"]) <= len(ids["order"])
    again = warmup_stage.fn(features=features, selection_clusters=clusters, settings=settings, out_dir=str(tmp_path))
    assert prunings == ["pools"] and EVENTS[-1].action == "reused" and again.content_hash == rec.content_hash
    wider = warmup_stage.fn(
        features=features,
        selection_clusters=clusters,
        settings=WarmupConfig(fractions=(0.2, 0.4)),
        out_dir=str(tmp_path),
    )
    assert prunings == ["pools", "pools"] and wider.key != rec.key and wider.rows["w2"] > rec.rows["w2"]


def test_coincide_order_holds_the_budget_and_follows_it(inputs, prunings, tmp_path):
    features, clusters = inputs
    settings = WarmupConfig(fractions=(0.2, 0.3))
    out = str(tmp_path / "coincide")
    rec = coincide_order_stage.fn(
        features=features, selection_clusters=clusters, budget=12, settings=settings, out_dir=out
    )
    order = read_ids(rec.files["order"])
    assert rec.rows == {"order": 12} and len(set(order.tolist())) == 12
    x = load_features(features.files["features"], mmap=False)
    np.testing.assert_array_equal(order, coincide_selection(x, load_clustering(clusters.out_dir, "selection"), 12))
    coincide_order_stage.fn(features=features, selection_clusters=clusters, budget=12, settings=settings, out_dir=out)
    assert prunings == ["order"]
    hotter = coincide_order_stage.fn(
        features=features,
        selection_clusters=clusters,
        budget=12,
        settings=settings.model_copy(update={"temperature": 0.5}),
        out_dir=out,
    )
    assert prunings == ["order", "order"] and hotter.key != rec.key
    smaller = coincide_order_stage.fn(
        features=features, selection_clusters=clusters, budget=5, settings=settings, out_dir=out
    )
    assert smaller.rows == {"order": 5} and prunings == ["order"] * 3
