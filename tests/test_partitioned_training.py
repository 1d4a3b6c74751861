"""The 7B path on 2 CPU ranks: bf16, LoRA, DeepSpeed ZeRO-3 with every parameter partitioned, a text-only rank.

The packaged ``zero3.json`` keeps tensors under 1e6 elements whole on every rank, which is every tensor of the
tiny model; these tests write a copy with ``stage3_param_persistence_threshold`` 0 so each parameter is
sharded and gathered as it would be for the 7B model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_model import make_pool, pool_texts

from progress_core.model.config import ModelConfig
from progress_core.model.loading import load_model
from progress_core.model.tiny import build_tiny_model
from progress_core.training.config import TrainingConfig
from progress_core.training.loop import read_train_state, train_launched, train_to_step

pytest.importorskip("deepspeed", reason="deepspeed is not installed (make install builds it against CPU torch)")

JOB_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny LLaVA, bf16 LoRA config under partitioned ZeRO-3, and 8 rows ordered so that rank 1's share of
    both global batches is text-only rows (rank 0: rows 0-1 of each step, rank 1: rows 2-3)."""
    root = tmp_path_factory.mktemp("partitioned")
    pool = make_pool(root, n=12)
    init = build_tiny_model(pool_texts(pool), ModelConfig(patch_size=8), root / "init")
    ds = json.loads((Path(__file__).resolve().parent.parent / "deployments" / "zero3.json").read_text())
    ds["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    (root / "zero3_partitioned.json").write_text(json.dumps(ds))
    model = ModelConfig(mode="real", base_model=str(init), lora_r=4, lora_alpha=8, lora_dropout=0.0, dtype="bfloat16")
    cfg = TrainingConfig(
        model=model,
        global_batch_size=4,
        per_device_batch_size=2,
        final_step=10,
        shuffle=False,
        learning_rate=3e-3,
        projector_lr=1e-4,
        num_threads=1,
        nproc_per_node=2,
        use_deepspeed=True,
        deepspeed_config=str(root / "zero3_partitioned.json"),
    )
    rows = pool.iloc[[0, 1, 2, 5, 3, 4, 8, 11]]
    assert rows["image"].isna().tolist() == [False, False, True, True] * 2
    return root, rows, cfg


@pytest.fixture(scope="module")
def resumed(setup):
    """Steps 0 -> 1 on 2 ranks, then 1 -> 2 resumed from that checkpoint's adapter and engine state."""
    root, rows, cfg = setup
    first = train_launched(
        None, rows.iloc[:4], root / "images", 1, cfg, root / "a", progress=False, timeout_s=JOB_TIMEOUT_S
    )
    second = train_launched(
        first.checkpoint, rows.iloc[4:], root / "images", 2, cfg, root / "b", progress=False, timeout_s=JOB_TIMEOUT_S
    )
    return first, second


@pytest.fixture(scope="module")
def one_process(setup):
    """The same 0 -> 2 in one process without DeepSpeed, accumulation 2: the same micro-batches."""
    root, rows, cfg = setup
    one = cfg.model_copy(update={"nproc_per_node": None, "use_deepspeed": False, "gradient_accumulation_steps": 2})
    return train_to_step(None, rows, root / "images", 2, one, root / "one", progress=False)


def test_zero3_bf16_lora_on_two_partitioned_ranks_trains_and_resumes(setup, resumed, one_process):
    """bf16 LoRA under ZeRO-3 initialises (one dtype for adapter and projector), trains with every parameter
    partitioned, and resumed at step 1 from its adapter and engine state goes on with the losses of one
    uninterrupted process (its weights after the resumed step: the next test)."""
    root, rows, cfg = setup
    first, second = resumed
    assert (first.checkpoint / "deepspeed").is_dir() and second.step == 2
    np.testing.assert_allclose(first.losses + second.losses, one_process.losses, rtol=1e-5)
    every_parameter = len(list(load_model(cfg.model.base_model, cfg.model)[0].parameters()))
    for piece in resumed:
        assert read_train_state(piece.checkpoint)["partitioned_parameters"] == every_parameter
    saved = load_file(second.checkpoint / "adapter_model.safetensors")
    assert any("multi_modal_projector" in k for k in saved) and any("lora_B" in k for k in saved)
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}


def test_text_only_micro_batch_on_one_rank_trains_partitioned_like_one_process(setup, resumed, one_process):
    """Rank 1 holds only text rows at both steps; under partitioned ZeRO-3 every rank must gather the vision
    tower and projector at the same point, or the job dies on a collective mismatch (a hang under NCCL).

    One process with accumulation 2 sees the same micro-batches. Losses agree to float rounding (above);
    weights to a few bf16 units in the last place: DeepSpeed steps float32 master weights and rounds them to
    bf16 once, the one process steps the bf16 weights themselves. 1e-4 is a thirtieth of one step's size
    (lr 3e-3), so a rank whose gradients were lost, or a reset optimiser, could not pass.
    """
    ours = load_file(resumed[1].checkpoint / "adapter_model.safetensors")
    theirs = load_file(one_process.checkpoint / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    moved = 0
    for key in ours:
        torch.testing.assert_close(ours[key].float(), theirs[key].float(), rtol=2**-6, atol=1e-4)
        moved += int("lora_B" in key and bool(ours[key].any()))
    assert moved > 0


def test_text_only_batch_runs_vision_between_embedding_and_language_model(setup):
    """A text-only micro-batch runs the embedding, vision tower, projector and language model in the order an
    image micro-batch does, all inside the model's forward (where ZeRO-3 starts each step's gather trace)."""
    from progress_core.training.loop import _sum_loss
    from progress_core.training.samples import Encoder, samples_rows

    root, rows, cfg = setup
    model, processor = load_model(cfg.model.base_model, cfg.model)
    encoder = Encoder(processor, model.config.image_token_index, root / "images", 256)
    llava = model.get_base_model()
    order: list[str] = []
    parts = {
        "embed": llava.get_input_embeddings(),
        "vision": llava.model.vision_tower,
        "projector": llava.model.multi_modal_projector,
        "language": llava.model.language_model.layers[0],
    }
    for name, module in parts.items():
        module.register_forward_pre_hook(lambda *a, name=name: order.append(name))
    model.register_forward_pre_hook(lambda *a: order.append("forward"))
    model.register_forward_hook(lambda *a: order.append("end"))

    def run(batch_rows):
        encoded = [encoder.encode(c, im, i) for i, (c, im) in enumerate(samples_rows(batch_rows))]
        batch = encoder.collate(encoded, list(range(len(encoded))))
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
        order.clear()
        _sum_loss(model, batch, keep_vision=True)
        return list(dict.fromkeys(order))

    with_images, text_only = run(rows.iloc[:2]), run(rows.iloc[2:4])
    assert with_images == ["forward", "embed", "vision", "projector", "language", "end"]
    assert text_only == with_images


def test_bf16_lora_adapter_and_projector_share_one_dtype_fresh_and_resumed(setup, resumed):
    """peft would up-cast the adapter to float32 beside the bf16 projector copy; both loaders keep bf16, and a
    model that still mixes dtypes is refused with the parameters named."""
    from progress_core.model.checkpoint import ModelError
    from progress_core.model.loading import check_one_trainable_dtype

    root, rows, cfg = setup
    fresh = load_model(cfg.model.base_model, cfg.model)[0]
    again = load_model(resumed[0].checkpoint, cfg.model)[0]
    for model in (fresh, again):
        trainable = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
        assert set(trainable.values()) == {torch.bfloat16}
        assert any("lora_A" in n for n in trainable) and any("multi_modal_projector" in n for n in trainable)
    next(p for n, p in fresh.named_parameters() if "lora_A" in n).data = torch.zeros(1)
    with pytest.raises(ModelError, match=r"trainable parameters mix dtypes: bfloat16 \(.*\), float32 \(.*lora_A"):
        check_one_trainable_dtype(fresh)
