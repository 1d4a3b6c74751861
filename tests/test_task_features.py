"""Feature stages (tasks/feature_shard.py) called as plain functions on a few rows: a shard's record, its reuse and
key, encoders loaded once per process, and the combine over hand-made shards (docs/algorithm.md#features)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tasks.feature_combine as combine_mod
import tasks.feature_shard as features_mod
from progress_core.data.manifest import build_manifest
from progress_core.features.config import FeatureConfig
from progress_core.features.store import ShardFeatures, combine_features, load_features, save_shard
from tasks.feature_combine import combine_stage
from tasks.feature_shard import feature_shard
from tasks.stage import EVENTS, StageRecord, outputs_hash

N = 6


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> StageRecord:
    """Six rows; row 4's image file is missing (an unreadable image, not a rejected row)."""
    d = tmp_path_factory.mktemp("shard-manifest")
    (d / "img").mkdir()
    rows = []
    for i in range(N):
        turns = [{"from": "human", "value": f"<image>\nWhat colour is shape {i}?"}, {"from": "gpt", "value": "red"}]
        rows.append({"id": f"s{i}", "image": f"{i}.png", "conversations": turns})
        if i != 4:
            Image.new("RGB", (32, 32), (40 * i, 255 - 40 * i, 90)).save(d / "img" / f"{i}.png")
    (d / "pool.json").write_text(json.dumps(rows))
    build_manifest(d / "pool.json", d / "manifest.parquet")
    return StageRecord(
        stage="manifest",
        out_dir=str(d),
        files={"manifest": str(d / "manifest.parquet")},
        rows={"manifest": N},
        content_hash="manifest-v1",
        meta={"image_root": str(d / "img")},
    )


@pytest.fixture
def extractions(monkeypatch):
    calls: list[tuple[int, int]] = []
    real = features_mod.extract_shard

    def counted(manifest, image_root, start, stop, *args):
        calls.append((start, stop))
        return real(manifest, image_root, start, stop, *args)

    monkeypatch.setattr(features_mod, "extract_shard", counted)
    return calls


def test_shard_records_its_range_and_unreadable_images_and_is_reused(manifest, extractions, tmp_path):
    settings = FeatureConfig(batch_size=4)
    out = str(tmp_path / "shards" / "0000000003")
    rec = feature_shard.fn(manifest=manifest, start=3, stop=N, settings=settings, out_dir=out)
    assert extractions == [(3, N)]
    assert rec.rows == {"shard": 3} and rec.meta == {"start": 3, "stop": N, "failed_sample_ids": [4]}
    assert Path(rec.files["shard"]).name == "shard_000000003.npz"
    with np.load(rec.files["shard"]) as z:
        assert z["image"].shape[0] == 3 and z["image_failed"].tolist() == [False, True, False]
        assert not z["image"][1].any() and z["image"][0].any() and z["text"][1].any()
    again = feature_shard.fn(manifest=manifest, start=3, stop=N, settings=settings, out_dir=out)
    assert extractions == [(3, N)] and again.content_hash == rec.content_hash and EVENTS[-1].action == "reused"
    moved = manifest.model_copy(update={"out_dir": "/elsewhere"})
    feature_shard.fn(manifest=moved, start=3, stop=N, settings=settings, out_dir=out)
    assert extractions == [(3, N)], "the key reads the manifest's content hash, not where it lies"
    edited = manifest.model_copy(update={"content_hash": "manifest-v2"})
    feature_shard.fn(manifest=edited, start=3, stop=N, settings=settings, out_dir=out)
    assert extractions == [(3, N)] * 2


def test_encoders_are_loaded_once_per_settings(monkeypatch):
    loads: list[str] = []
    monkeypatch.setattr(features_mod, "load_image_encoder", lambda cfg: loads.append("image") or "image-encoder")
    monkeypatch.setattr(features_mod, "load_text_encoder", lambda cfg: loads.append("text") or "text-encoder")
    features_mod._load_encoders.cache_clear()
    try:
        a = FeatureConfig(batch_size=3).model_dump_json()
        assert features_mod._encoders(a) == ("image-encoder", "text-encoder")
        assert features_mod._encoders(a) == ("image-encoder", "text-encoder") and loads == ["image", "text"]
        features_mod._encoders(FeatureConfig(batch_size=5).model_dump_json())
        assert loads == ["image", "text"] * 2
    finally:
        features_mod._load_encoders.cache_clear()


def _shard(directory: Path, start: int, n: int, failed: list[int], seed: int) -> StageRecord:
    rng = np.random.default_rng(seed)
    image_failed = np.zeros(n, bool)
    image_failed[[i - start for i in failed]] = True
    image = rng.normal(size=(n, 4)).astype(np.float16)
    image[image_failed] = 0
    shard = ShardFeatures(start, image, rng.normal(size=(n, 3)).astype(np.float16), image_failed)
    out = directory / f"{start:010d}"
    path = save_shard(shard, out)
    files = {"shard": str(path)}
    return StageRecord(
        stage="features_shard",
        out_dir=str(out),
        files=files,
        rows={"shard": n},
        content_hash=outputs_hash(files),
        meta={"start": start, "stop": start + n, "failed_sample_ids": failed},
    )


def test_combine_tiles_the_shards_in_order_and_counts_failures(tmp_path, monkeypatch):
    shards = [_shard(tmp_path / "shards", 3, 2, [4], 1), _shard(tmp_path / "shards", 0, 3, [0], 2)]
    combines: list[int] = []
    real = combine_mod.combine_shards
    monkeypatch.setattr(combine_mod, "combine_shards", lambda *a: combines.append(1) or real(*a))
    out = str(tmp_path / "features")
    rec = combine_stage.fn(shards=shards, balanced=False, out_dir=out)
    assert rec.rows == {"features": 5} and rec.meta["image_dim"] == 4 and rec.meta["text_dim"] == 3
    assert rec.meta["n_image_failures"] == 2 and sorted(rec.meta["failed_sample_ids"]) == [0, 4]
    parts = [np.load(s.files["shard"]) for s in sorted(shards, key=lambda s: s.meta["start"])]
    expected = combine_features(np.concatenate([p["image"] for p in parts]), np.concatenate([p["text"] for p in parts]))
    np.testing.assert_array_equal(load_features(rec.files["features"], mmap=False), expected)
    assert np.allclose(np.linalg.norm(expected.astype(np.float32), axis=1), 1, atol=1e-2)

    assert combine_stage.fn(shards=shards, balanced=False, out_dir=out).content_hash == rec.content_hash
    assert combines == [1]
    balanced = combine_stage.fn(shards=shards, balanced=True, out_dir=out)
    assert combines == [1, 1] and balanced.key != rec.key and balanced.content_hash != rec.content_hash
    redone = _shard(tmp_path / "shards", 3, 2, [4], 9)
    changed = combine_stage.fn(shards=[redone, shards[1]], balanced=True, out_dir=out)
    assert combines == [1, 1, 1] and changed.key != balanced.key
