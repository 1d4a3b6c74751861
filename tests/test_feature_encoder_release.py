"""The feature encoders cached for the shards are dropped, and their GPU memory returned, after the last shard."""

from __future__ import annotations

import pytest
import torch

import flows.feature_shards as feature_shards
import tasks.feature_shard as features_mod
from progress_core.features.config import FeatureConfig
from progress_core.run.config import OrchestrationConfig


def test_release_drops_the_cached_encoders_and_empties_the_cuda_cache(monkeypatch):
    loads: list[str] = []
    emptied: list[bool] = []
    monkeypatch.setattr(features_mod, "load_image_encoder", lambda cfg: loads.append("image") or "image-encoder")
    monkeypatch.setattr(features_mod, "load_text_encoder", lambda cfg: loads.append("text") or "text-encoder")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    settings = FeatureConfig(batch_size=3).model_dump_json()
    features_mod._load_encoders.cache_clear()
    features_mod._encoders(settings)
    features_mod.release_encoders()
    assert emptied == [True] and features_mod._load_encoders.cache_info().currsize == 0
    features_mod._encoders(settings)
    assert loads == ["image", "text"] * 2
    features_mod._load_encoders.cache_clear()


def test_shards_on_the_flow_runner_release_the_encoders_when_done_or_failed(monkeypatch):
    events: list[str] = []
    monkeypatch.setattr(feature_shards, "release_encoders", lambda: events.append("released"))
    monkeypatch.setattr(feature_shards, "submit_shards", lambda *a: events.append("shards") or ["record"])
    args = (None, FeatureConfig(), [(0, 1)], "shards", OrchestrationConfig())
    assert feature_shards.run_feature_shards(*args) == ["record"] and events == ["shards", "released"]

    def failing(*a):
        raise RuntimeError("shard failed")

    monkeypatch.setattr(feature_shards, "submit_shards", failing)
    with pytest.raises(RuntimeError, match="shard failed"):
        feature_shards.run_feature_shards(*args)
    assert events == ["shards", "released", "released"]
