"""Continuing training: one run in pieces equals one run at once (docs/algorithm.md#training)."""

from __future__ import annotations

import functools
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from test_model import make_pool, pool_texts

from progress_core.errors import ConfigError
from progress_core.model.config import ModelConfig
from progress_core.model.tiny import build_tiny_model
from progress_core.selection.rounds import steps_for
from progress_core.training.config import TrainingConfig
from progress_core.training.loop import (
    STATE_JSON,
    DataWorkerError,
    data_order,
    read_train_state,
    step_loader,
    train_to_step,
)
from progress_core.training.samples import TrainingDataError


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    pool = make_pool(root, n=48)
    cfg = TrainingConfig(
        model=ModelConfig(patch_size=8),
        global_batch_size=4,
        per_device_batch_size=2,
        final_step=40,
        shuffle=False,
        learning_rate=3e-3,
    )
    init = build_tiny_model(pool_texts(pool), cfg.model, root / "init")
    return root, pool, cfg, init


def test_steps_follow_cumulative_samples():
    assert steps_for(50_000, 128) == 390 and steps_for(60_000, 128) == 468 and steps_for(133_000, 128) == 1039
    assert steps_for(127, 128) == 0
    with pytest.raises(ConfigError):
        steps_for(10, 0)


def test_data_order_cycles_seeded_permutations():
    a = data_order(5, 12, seed=1, start_step=3, shuffle=True)
    assert len(a) == 12 and sorted(a[:5]) == list(range(5)) and sorted(a[5:10]) == list(range(5))
    assert np.array_equal(a, data_order(5, 12, seed=1, start_step=3, shuffle=True))
    assert not np.array_equal(a, data_order(5, 12, seed=1, start_step=4, shuffle=True))
    assert list(data_order(3, 4, 0, 0, shuffle=False)) == [0, 1, 2, 0]


def test_two_pieces_equal_one_piece(setup, tmp_path):
    root, pool, cfg, init = setup
    whole = train_to_step(init, pool.iloc[:40], root / "images", 10, cfg, tmp_path / "whole", progress=False)
    first = train_to_step(init, pool.iloc[:20], root / "images", 5, cfg, tmp_path / "a", progress=False)
    second = train_to_step(first.checkpoint, pool.iloc[20:40], root / "images", 10, cfg, tmp_path / "b", progress=False)
    assert first.step == 5 and second.step == 10 and second.samples_seen == 40
    assert len(whole.losses) == 10
    np.testing.assert_allclose(first.losses + second.losses, whole.losses, rtol=1e-5, atol=1e-6)
    assert whole.losses[-1] < whole.losses[0]
    a = torch.load(whole.checkpoint / "training_state.pt", weights_only=False)
    b = torch.load(second.checkpoint / "training_state.pt", weights_only=False)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 10
    state = json.loads((second.checkpoint / STATE_JSON).read_text())
    assert state["step"] == 10 and read_train_state(second.checkpoint)["final_step"] == 40
    assert not list(tmp_path.glob(".*tmp"))


def test_bad_requests_are_named_errors(setup, tmp_path):
    root, pool, cfg, init = setup
    piece = train_to_step(init, pool.iloc[:8], root / "images", 2, cfg, tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match="before the checkpoint"):
        train_to_step(piece.checkpoint, pool, root / "images", 1, cfg, tmp_path / "d", progress=False)
    with pytest.raises(ConfigError, match="final_step"):
        train_to_step(piece.checkpoint, pool, root / "images", 41, cfg, tmp_path / "d", progress=False)
    bad = pool.iloc[:4].copy()
    bad.loc[bad.index[0], "image"] = "colour/missing.png"
    with pytest.raises(TrainingDataError, match="image file not found") as err:
        train_to_step(init, bad, root / "images", 1, cfg, tmp_path / "e", progress=False)
    named = f"id {bad['id'].iloc[0]!r}" if "sample_id" not in bad else f"sample_id {bad['sample_id'].iloc[0]}"
    assert str(err.value).startswith(named), "the sample is named by its id, not its position in a batch"
    with pytest.raises(ConfigError, match="multiple"):
        cfg.model_copy(update={"per_device_batch_size": 3}).micro_batches()


def test_data_workers_prepare_the_same_batches(setup, tmp_path):
    """Batches prepared by DataLoader worker processes train exactly as batches prepared in the training
    process, and a row a worker cannot read is raised in the training process as the row's one line."""
    root, pool, cfg, init = setup
    with_workers = cfg.model_copy(update={"data_workers": 2})
    here = train_to_step(init, pool.iloc[:24], root / "images", 6, cfg, tmp_path / "here", progress=False)
    forked = train_to_step(init, pool.iloc[:24], root / "images", 6, with_workers, tmp_path / "w", progress=False)
    assert forked.losses == here.losses
    assert cfg.loader_workers() == 0 and with_workers.loader_workers() == 2
    bad = pool.iloc[:12].copy()
    bad.loc[bad.index[9], "image"] = "colour/missing.png"
    with pytest.raises(TrainingDataError, match=r"^sample_id 9 \(id 's9'\): image file not found") as err:
        train_to_step(init, bad, root / "images", 3, with_workers, tmp_path / "bad", progress=False)
    assert "DataLoader worker" not in str(err.value)
    assert not (tmp_path / "bad").exists()


class _DiesAtStep:
    """Three steps of one micro-batch whose worker is killed (as the kernel's OOM killer would) at step 1."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, k: int) -> list[dict]:
        if k == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return [{"input_ids": torch.zeros(2, dtype=torch.long)}]


def test_a_data_worker_that_dies_is_one_named_error():
    with pytest.raises(DataWorkerError, match=r"DataLoader worker .*set training.data_workers: 0"):
        list(step_loader(_DiesAtStep(), workers=1))


def _cli_pool(tmp_path: Path) -> tuple[Path, Path]:
    """A 40-sample pool's manifest and image root; ``w1`` = samples 0-15, ``w2`` = 16-39, ``a`` = three
    annotation clusters (sample id mod 3), each a Parquet file in ``tmp_path``."""
    import pandas as pd

    from progress_core.data.manifest import build_manifest
    from progress_core.data.synthetic import generate_pool

    pool = generate_pool(tmp_path / "pool", n=40, n_eval=0, seed=0)
    manifest = tmp_path / "manifest.parquet"
    build_manifest(pool.pool_json, manifest, image_root=pool.image_root)
    pd.DataFrame({"sample_id": range(0, 16)}).to_parquet(tmp_path / "w1.parquet")
    pd.DataFrame({"sample_id": range(16, 40)}).to_parquet(tmp_path / "w2.parquet")
    pd.DataFrame({"sample_id": range(40), "cluster_id": [i % 3 for i in range(40)]}).to_parquet(tmp_path / "a.parquet")
    return manifest, pool.image_root


def _train_argv(
    tmp_path: Path, manifest: Path, images: Path, start: list[str], samples: str, to_step: int, out: str, extra=()
) -> list[str]:
    """``progress train`` of ``<samples>.parquet`` up to ``to_step`` from ``start`` (``--init``, ``--checkpoint
    DIR`` or neither), global batch 8, patch size 8."""
    argv = ["train", *start, "--samples", str(tmp_path / f"{samples}.parquet"), "--to-step", str(to_step), *extra]
    argv += ["--out", str(tmp_path / out), "--manifest", str(manifest), "--images", str(images)]
    return argv + ["--set", "training.global_batch_size=8", "--set", "training.model.patch_size=8"]


def test_cli_train_in_two_pieces_then_probe(tmp_path, capsys):
    import pyarrow.parquet as pq

    from progress_cli.main import main

    manifest, images = _cli_pool(tmp_path)
    train = functools.partial(_train_argv, tmp_path, manifest, images)
    assert main(train(["--init"], "w1", 2, "s2", ["--set", "schedule.final_step=5"])) == 0
    assert main(train(["--checkpoint", str(tmp_path / "s2")], "w2", 5, "s5")) == 0
    assert read_train_state(tmp_path / "s5")["step"] == 5 and read_train_state(tmp_path / "s5")["samples_seen"] == 40
    probe = ["probe", "--checkpoint", str(tmp_path / "s5"), "--manifest", str(manifest), "--images", str(images)]
    probe += ["--selected", str(tmp_path / "w1.parquet"), "--clusters", str(tmp_path / "a.parquet")]
    probe += ["--set", "probe.samples_per_cluster=4", "--out", str(tmp_path / "probe")]
    assert main(probe) == 0
    per_sample = pq.read_table(tmp_path / "probe" / "probe_samples.parquet").to_pandas()
    assert len(per_sample) == 12 and set(per_sample.sample_id) <= set(range(16))
    assert (per_sample.groupby("cluster_id").size() == 4).all()
    acc = pq.read_table(tmp_path / "probe" / "accuracy.parquet").to_pandas()
    assert acc["n"].tolist() == [4, 4, 4]
    assert main(train([], "w1", 2, "x")) == 1
    assert "exactly one of --checkpoint" in capsys.readouterr().err
    assert main(train(["--checkpoint", str(tmp_path / "s5")], "w1", 3, "x")) == 1
    assert "before the checkpoint" in capsys.readouterr().err


def test_lora_run_in_two_pieces_equals_one_piece(setup, tmp_path):
    """Real-mode code path (peft LoRA + projector LR group, adapter-only checkpoints) on the tiny base."""
    root, pool, cfg, init = setup
    lora = cfg.model_copy(
        update={
            "model": ModelConfig(mode="real", base_model=str(init), lora_r=4, lora_alpha=8, dtype="float32"),
            "learning_rate": 1e-3,
            "projector_lr": 1e-4,
        }
    )
    whole = train_to_step(None, pool.iloc[:24], root / "images", 6, lora, tmp_path / "whole", progress=False)
    first = train_to_step(None, pool.iloc[:12], root / "images", 3, lora, tmp_path / "a", progress=False)
    second = train_to_step(first.checkpoint, pool.iloc[12:24], root / "images", 6, lora, tmp_path / "b", progress=False)
    assert (second.checkpoint / "adapter_config.json").is_file()
    assert not (second.checkpoint / "model.safetensors").exists()
    np.testing.assert_allclose(first.losses + second.losses, whole.losses, rtol=1e-5, atol=1e-6)
    state = torch.load(second.checkpoint / "training_state.pt", weights_only=False)
    assert [g["lr"] for g in state["optimizer"]["param_groups"]][1] < state["optimizer"]["param_groups"][0]["lr"]
    from progress_core.probe.accuracy import generate_answers
    from progress_core.probe.config import ProbeConfig

    answers = generate_answers(
        second.checkpoint,
        pool.iloc[:3],
        root / "images",
        ProbeConfig(model=lora.model, max_new_tokens=3),
        progress=False,
    )
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)


def test_rows_are_named_by_sample_id_and_id_when_they_carry_them():
    from progress_core.training.samples import sample_labels, samples_rows

    rows = [
        {"sample_id": 70, "id": "a-70", "conversations": "[]", "image": None},
        {"id": "b", "conversations": "[]", "image": None},
        {"conversations": "[]", "image": None},
    ]
    assert sample_labels(rows) == ["sample_id 70 (id 'a-70')", "id 'b'", "row 2 (0-based)"]
    with pytest.raises(TrainingDataError, match=r"^sample_id 70 \(id 'a-70'\): conversations must be a non-empty"):
        samples_rows(rows)
