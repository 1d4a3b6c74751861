"""Feature shards as mapped tasks (flows/feature_shards.py) without a server: one task per range in its own
directory, each under the stage reuse rule, results in range order, and the runner chosen from the
orchestration settings (docs/architecture.md#orchestration)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import flows.feature_shards as shards_mod
import tasks.feature_shard as features_mod
from progress_core.features.config import FeatureConfig
from progress_core.features.store import ShardFeatures
from progress_core.run.config import OrchestrationConfig
from tasks.feature_shard import feature_shard
from tasks.stage import StageRecord

MANIFEST = StageRecord(stage="manifest", out_dir="/m", files={"manifest": "/m/manifest.parquet"}, content_hash="m1")


@pytest.fixture
def no_encoders(monkeypatch):
    """Shards computed from hand-made rows: the stage's own bookkeeping without loading encoders."""
    monkeypatch.setattr(features_mod, "_encoders", lambda cfg_json: (None, None))

    def extract(manifest, image_root, start, stop, *args):
        n = stop - start
        return ShardFeatures(start, np.ones((n, 2), np.float16), np.ones((n, 3), np.float16), np.zeros(n, bool))

    monkeypatch.setattr(features_mod, "extract_shard", extract)


class _Submitter:
    """Stands in for the ``features-shard`` task: records refresh flags and runs the stage function."""

    fn = feature_shard.fn

    def __init__(self):
        self.refresh: list[bool] = []
        self.out_dirs: list[str] = []

    def with_options(self, refresh_cache: bool):
        self.refresh.append(refresh_cache)
        return self

    def submit(self, **params):
        self.out_dirs.append(params["out_dir"])
        record = feature_shard.fn(**params)
        return SimpleNamespace(result=lambda: record)


def test_each_range_is_its_own_task_and_finished_shards_are_not_refreshed(tmp_path, monkeypatch, no_encoders):
    settings = FeatureConfig()
    feature_shard.fn(manifest=MANIFEST, start=4, stop=8, settings=settings, out_dir=str(tmp_path / "0000000004"))
    submitter = _Submitter()
    waited: list[int] = []
    monkeypatch.setattr(shards_mod, "feature_shard", submitter)
    monkeypatch.setattr(shards_mod, "wait", lambda futures: waited.append(len(futures)))
    records = shards_mod.submit_shards(MANIFEST, settings, [(0, 4), (4, 8), (8, 10)], str(tmp_path))
    assert submitter.out_dirs == [str(tmp_path / d) for d in ("0000000000", "0000000004", "0000000008")]
    assert submitter.refresh == [True, False, True], "only shards whose outputs do not verify refresh the cache"
    assert waited == [3], "every shard is awaited before any result is read"
    assert [(r.meta["start"], r.meta["stop"]) for r in records] == [(0, 4), (4, 8), (8, 10)]


def test_threads_run_in_the_flow_and_dask_in_a_subflow(monkeypatch):
    calls: list[tuple] = []
    monkeypatch.setattr(shards_mod, "submit_shards", lambda *a: calls.append(("threads", a)) or ["t"])

    class _Subflow:
        def with_options(self, task_runner):
            calls.append(("runner", task_runner))
            return lambda *a: calls.append(("dask", a)) or ["d"]

    monkeypatch.setattr(shards_mod, "feature_shards", _Subflow())
    args = (MANIFEST, FeatureConfig(), [(0, 1)], "/s")
    assert shards_mod.run_feature_shards(*args, OrchestrationConfig()) == ["t"]
    assert calls == [("threads", args)]
    calls.clear()
    dask = OrchestrationConfig(task_runner="dask", address="tcp://scheduler:8786")
    assert shards_mod.run_feature_shards(*args, dask) == ["d"]
    assert [c[0] for c in calls] == ["runner", "dask"] and calls[0][1].address == "tcp://scheduler:8786"


def test_dask_runner_uses_the_cluster_address_or_a_local_cluster_of_processes():
    remote = shards_mod.dask_task_runner(OrchestrationConfig(task_runner="dask", address="tcp://h:8786"))
    assert remote.address == "tcp://h:8786"
    local = shards_mod.dask_task_runner(OrchestrationConfig(task_runner="dask", n_workers=3, threads_per_worker=2))
    assert local.address is None and "LocalCluster" in str(local.cluster_class)
    assert local.cluster_kwargs == {"n_workers": 3, "threads_per_worker": 2, "processes": True}
