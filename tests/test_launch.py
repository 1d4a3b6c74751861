"""Training as a launched multi-process job (torch.distributed.run, gloo on CPU): same numbers as one process."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from test_model import make_pool, pool_texts

from progress_core.errors import ConfigError
from progress_core.model.config import ModelConfig
from progress_core.model.tiny import build_tiny_model
from progress_core.training.config import TrainingConfig
from progress_core.training.launch import LaunchError, free_port, launch_command
from progress_core.training.loop import train_launched, train_to_step, vision_keepalive


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch")
    pool = make_pool(root, n=24)
    cfg = TrainingConfig(
        model=ModelConfig(patch_size=8),
        global_batch_size=4,
        per_device_batch_size=2,
        final_step=10,
        shuffle=False,
        learning_rate=3e-3,
        num_threads=1,
    )
    init = build_tiny_model(pool_texts(pool), cfg.model, root / "init")
    return root, pool, cfg, init


def test_batch_product_is_checked_before_anything_starts(setup, tmp_path):
    root, pool, cfg, init = setup
    bad = cfg.model_copy(update={"gradient_accumulation_steps": 2, "nproc_per_node": 3})
    with pytest.raises(
        ConfigError, match=r"global_batch_size 4 != per_device_batch_size 2 x .*accumulation_steps 2 x "
    ):
        train_launched(init, pool, root / "images", 1, bad, tmp_path / "x")
    assert not (tmp_path / "x").exists() and not list(tmp_path.iterdir())
    assert cfg.model_copy(update={"gradient_accumulation_steps": 2}).micro_batches(1) == (2, 2)
    assert cfg.model_copy(update={"per_device_batch_size": None}).micro_batches(4) == (1, 1)


def test_launch_command_uses_torch_distributed_run_with_a_free_port():
    port = free_port()
    cmd = launch_command("m:f", "/j/job.json", 4, port, "127.0.0.1")
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert "--nproc-per-node=4" in cmd and f"--master-port={port}" in cmd and "--master-addr=127.0.0.1" in cmd
    assert cmd[-4:] == ["-m", "progress_core.training.launch", "m:f", "/j/job.json"]


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_rank_with_accumulation(setup, tmp_path):
    """2 ranks x batch 2 == 1 rank x accumulation 2 x batch 2: same losses and weights within float tolerance."""
    root, pool, cfg, init = setup
    one = train_to_step(
        init,
        pool,
        root / "images",
        3,
        cfg.model_copy(update={"gradient_accumulation_steps": 2}),
        tmp_path / "one",
        progress=False,
    )
    lines: list[str] = []
    two = train_launched(
        init,
        pool,
        root / "images",
        3,
        cfg.model_copy(update={"nproc_per_node": 2}),
        tmp_path / "two",
        log_line=lines.append,
        progress=False,
    )
    assert two.step == 3 and two.samples_seen == 12 and len(two.losses) == 3
    np.testing.assert_allclose(two.losses, one.losses, rtol=1e-5, atol=1e-6)
    a, b = load_file(one.checkpoint / "model.safetensors"), load_file(two.checkpoint / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert any("launching progress_core.training.loop:run_train_job on 2 process(es), gloo" in line for line in lines)
    assert not list(tmp_path.glob(".*job*"))


@pytest.mark.slow
def test_launched_lora_run_resumed_equals_uninterrupted(setup, tmp_path):
    """Interrupted at step 2 and resumed on 2 ranks == 0 -> 4 at once (LoRA dropout: per-rank RNG restored)."""
    root, pool, cfg, init = setup
    lora = cfg.model_copy(
        update={
            "model": ModelConfig(mode="real", base_model=str(init), lora_r=4, lora_alpha=8, dtype="float32"),
            "nproc_per_node": 2,
            "projector_lr": 1e-4,
        }
    )
    whole = train_launched(None, pool.iloc[:16], root / "images", 4, lora, tmp_path / "whole", progress=False)
    first = train_launched(None, pool.iloc[:8], root / "images", 2, lora, tmp_path / "a", progress=False)
    second = train_launched(first.checkpoint, pool.iloc[8:16], root / "images", 4, lora, tmp_path / "b", progress=False)
    assert second.step == 4 and (second.checkpoint / "adapter_config.json").is_file()
    np.testing.assert_array_equal(first.losses + second.losses, whole.losses)
    state = torch.load(second.checkpoint / "training_state.pt", weights_only=False)
    assert len(state["rng_per_rank"]) == 2


@pytest.mark.slow
def test_failing_rank_is_a_launch_error_with_its_last_lines(setup, tmp_path):
    root, pool, cfg, init = setup
    bad = pool.iloc[:8].copy()
    bad.loc[bad.index[3], "image"] = "colour/missing.png"
    with pytest.raises(LaunchError, match=r"(?s)failed on rank 1 .*image file not found"):
        train_launched(init, bad, root / "images", 1, cfg.model_copy(update={"nproc_per_node": 2}), tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_cli_train_with_nproc_per_node_two(tmp_path, capsys):
    from progress_cli.main import main
    from progress_core.data.manifest import build_manifest
    from progress_core.data.synthetic import generate_pool

    pool = generate_pool(tmp_path / "pool", n=24, n_eval=0, seed=0)
    manifest = tmp_path / "manifest.parquet"
    build_manifest(pool.pool_json, manifest, image_root=pool.image_root)
    pd.DataFrame({"sample_id": range(16)}).to_parquet(tmp_path / "w1.parquet")
    args = ["train", "--samples", str(tmp_path / "w1.parquet"), "--manifest", str(manifest)]
    args += ["--images", str(pool.image_root), "--init", "--to-step", "2", "--out", str(tmp_path / "ck")]
    sets = ["training.global_batch_size=4", "training.model.patch_size=8", "training.num_threads=1"]
    sets += ["schedule.final_step=4", "training.nproc_per_node=2"]
    args += [arg for item in sets for arg in ("--set", item)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "launching progress_core.training.loop:run_train_job on 2 process(es)" in out
    assert f"wrote {tmp_path / 'ck'}: step 2, samples seen 8" in out
    assert (tmp_path / "ck" / "model.safetensors").is_file()


def test_text_only_micro_batch_still_runs_the_vision_tower(setup):
    """Every rank runs the same modules (ZeRO-3 gathers); the zero image adds exactly nothing to the loss."""
    from progress_core.model.loading import load_model
    from progress_core.training.loop import _sum_loss
    from progress_core.training.samples import Encoder, samples_rows

    root, pool, cfg, init = setup
    model, processor = load_model(init, cfg.model)
    encoder = Encoder(processor, model.config.image_token_index, root / "images", 256)
    text_rows = samples_rows(pool[pool["image"].isna()].iloc[:2])
    batch = encoder.collate([encoder.encode(c, im, i) for i, (c, im) in enumerate(text_rows)], [0, 1])
    assert "pixel_values" not in batch
    calls = []
    model.model.vision_tower.register_forward_hook(lambda *a: calls.append(1))

    plain = _sum_loss(model, batch)
    plain.backward()
    assert calls == [] and model.model.multi_modal_projector.linear_1.weight.grad is None
    model.zero_grad(set_to_none=True)

    kept = _sum_loss(model, batch, keep_vision=True)
    kept.backward()
    assert calls == [1] and float(kept.detach()) == float(plain.detach())
    grad = model.model.multi_modal_projector.linear_1.weight.grad
    assert grad is not None and not grad.any()
    assert float(vision_keepalive(model, torch.device("cpu"), torch.float32)) == 0.0


def test_deepspeed_outside_a_launched_job_is_a_config_error(setup, tmp_path):
    root, pool, cfg, init = setup
    pytest.importorskip("deepspeed", reason="deepspeed is not installed")
    with pytest.raises(ConfigError, match="needs the launcher"):
        train_to_step(init, pool, root / "images", 1, cfg.model_copy(update={"use_deepspeed": True}), tmp_path / "x")


@pytest.mark.slow
def test_a_job_past_its_timeout_is_stopped(tmp_path):
    from progress_core.training.launch import launch

    job = tmp_path / "job.sh"
    job.write_text("#!/bin/sh\nsleep 120\n")
    job.chmod(0o755)
    with pytest.raises(LaunchError, match="did not finish within 8 s"):
        launch("os:system", job, nproc_per_node=1, backend="gloo", timeout_s=8)
