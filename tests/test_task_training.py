"""Init-model and train stages (tasks/training.py) called as plain functions, with the trainer replaced by a
recorder: which checkpoint and settings a piece starts from, which rows it trains on, what its record says,
and that a rebuilt checkpoint does not invalidate the stages after it (docs/algorithm.md#training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tasks.model_init as model_init_mod
import tasks.training as training_mod
from progress_core.id_sets import write_ids
from progress_core.model.config import ModelConfig
from progress_core.training.config import TrainingConfig
from progress_core.training.loop import TrainResult
from tasks.model_init import init_model_stage
from tasks.stage import EVENTS, StageRecord
from tasks.training import train_stage

N = 8


@pytest.fixture
def manifest(tmp_path) -> StageRecord:
    conversations = [
        json.dumps([{"from": "human", "value": f"<image>\nq{i}"}, {"from": "gpt", "value": f"a{i}"}]) for i in range(N)
    ]
    table = pa.table(
        {
            "sample_id": np.arange(N),
            "id": [f"s{i}" for i in range(N)],
            "conversations": conversations,
            "image": [f"{i}.png" for i in range(N)],
        }
    )
    pq.write_table(table, tmp_path / "manifest.parquet")
    return StageRecord(
        stage="manifest",
        out_dir=str(tmp_path),
        files={"manifest": str(tmp_path / "manifest.parquet")},
        rows={"manifest": N},
        content_hash="m",
        meta={"image_root": "/images"},
    )


@pytest.fixture
def builds(monkeypatch):
    calls: list[list[str]] = []

    def build(texts, cfg, out_dir):
        calls.append(list(texts))
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "weights.bin").write_bytes(b"w" * 8 + bytes([len(calls)]))
        return out

    monkeypatch.setattr(model_init_mod, "build_tiny_model", build)
    return calls


@pytest.fixture
def trainer(monkeypatch):
    calls: list[dict] = []

    def train(checkpoint, rows, image_root, target_step, settings, out_dir, log_line=None):
        calls.append(
            {
                "checkpoint": checkpoint,
                "ids": rows.column("id").to_pylist(),
                "image_root": image_root,
                "target_step": target_step,
                "settings": settings,
            }
        )
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "adapter.bin").write_bytes(b"x" * target_step)
        losses = [np.float32(2.5), np.float32(1.25)][: calls[-1]["target_step"] % 3]
        return TrainResult(checkpoint=out, step=target_step, losses=losses, samples_seen=rows.num_rows)

    monkeypatch.setattr(training_mod, "train_launched", train)
    return calls


def _samples(tmp_path: Path, ids: list[int]) -> StageRecord:
    path = write_ids(np.array(ids), tmp_path / f"new-{'-'.join(map(str, ids))}.parquet")
    return StageRecord(stage="select", out_dir=str(tmp_path), files={"new": str(path)}, content_hash=str(ids))


def test_real_mode_names_the_base_model_and_writes_nothing(tmp_path, manifest, builds):
    settings = ModelConfig(mode="real", base_model="/models/llava")
    out = tmp_path / "model_init"
    rec = init_model_stage.fn(manifest=manifest, settings=settings, out_dir=str(out))
    assert rec.files == {} and rec.meta == {"base_model": "/models/llava"} and builds == []
    assert rec.content_hash == rec.key, "checkpoint stages hand their key downstream, not their bytes"
    assert init_model_stage.fn(manifest=manifest, settings=settings, out_dir=str(out)).key == rec.key
    assert EVENTS[-1].action == "reused"


def test_tiny_model_is_built_from_the_pools_text_and_a_rebuild_keeps_the_hash(tmp_path, manifest, builds):
    out = tmp_path / "model_init"
    rec = init_model_stage.fn(manifest=manifest, settings=ModelConfig(), out_dir=str(out))
    assert (
        len(builds) == 1 and builds[0] == pq.read_table(manifest.files["manifest"]).column("conversations").to_pylist()
    )
    assert rec.files == {"checkpoint": str(out / "model")} and rec.meta == {"base_model": str(out / "model")}
    init_model_stage.fn(manifest=manifest, settings=ModelConfig(), out_dir=str(out))
    assert len(builds) == 1
    (out / "model" / "weights.bin").write_bytes(b"damaged")
    rebuilt = init_model_stage.fn(manifest=manifest, settings=ModelConfig(), out_dir=str(out))
    assert len(builds) == 2 and (out / "model" / "weights.bin").read_bytes() != b"w" * 8 + b"\x01"
    assert rebuilt.content_hash == rec.content_hash, "bytes that differ between builds must not invalidate training"


def test_first_piece_starts_from_the_tiny_model_as_base(tmp_path, manifest, builds, trainer):
    init = init_model_stage.fn(manifest=manifest, settings=ModelConfig(), out_dir=str(tmp_path / "model_init"))
    settings = TrainingConfig(global_batch_size=2)
    rec = train_stage.fn(
        start=init,
        samples=_samples(tmp_path, [5, 1, 3]),
        manifest=manifest,
        target_step=4,
        settings=settings,
        round_index=0,
        out_dir=str(tmp_path / "r00" / "train"),
    )
    call = trainer[0]
    assert call["checkpoint"] is None and call["settings"].model.base_model == init.files["checkpoint"]
    assert settings.model.base_model != init.files["checkpoint"], "the caller's settings are not changed"
    assert call["ids"] == ["s5", "s1", "s3"] and call["image_root"] == "/images" and call["target_step"] == 4
    assert rec.files == {"checkpoint": str(tmp_path / "r00" / "train" / "checkpoint")}
    assert rec.rows == {"samples": 3}
    assert rec.meta == {"step": 4, "losses": [2.5], "round": 0, "final_loss": 2.5}
    assert type(rec.meta["losses"][0]) is float and rec.content_hash == rec.key


def test_later_pieces_continue_the_previous_checkpoint(tmp_path, manifest, trainer):
    previous = StageRecord(
        stage="train", out_dir=str(tmp_path / "r00"), files={"checkpoint": "/ckpt/r00"}, content_hash="t0"
    )
    settings = TrainingConfig(global_batch_size=2)
    kwargs = dict(start=previous, samples=_samples(tmp_path, [0, 7]), manifest=manifest, settings=settings)
    out = str(tmp_path / "r01" / "train")
    rec = train_stage.fn(**kwargs, target_step=6, round_index=1, out_dir=out)
    assert trainer[0]["checkpoint"] == "/ckpt/r00" and trainer[0]["settings"] == settings
    assert rec.meta["losses"] == [] and rec.meta["final_loss"] is None
    assert train_stage.fn(**kwargs, target_step=6, round_index=1, out_dir=out).key == rec.key and len(trainer) == 1
    further = train_stage.fn(**kwargs, target_step=8, round_index=1, out_dir=out)
    assert len(trainer) == 2 and further.key != rec.key and further.meta["final_loss"] == 1.25
    other = previous.model_copy(update={"content_hash": "t0-retrained"})
    train_stage.fn(**{**kwargs, "start": other}, target_step=8, round_index=1, out_dir=out)
    assert len(trainer) == 3, "a retrained start checkpoint retrains this piece"


def test_training_runs_on_the_gpu_pool_and_retries():
    assert "gpu" in train_stage.tags and train_stage.retries == 2
