"""The 7B path on 2 CPU ranks: bf16, LoRA, DeepSpeed ZeRO-3 with every parameter partitioned, a text-only rank.

The packaged ``zero3.json`` keeps tensors under 1e6 elements whole on every rank, which is every tensor of the
tiny model; these tests write a copy with ``stage3_param_persistence_threshold`` 0 so each parameter is
sharded and gathered as it would be for the 7B model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_model import make_pool, pool_texts

from progress_core.model import ModelConfig, build_tiny_model, load_model
from progress_core.training import TrainingConfig, train_launched

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
def uninterrupted(setup):
    """Steps 0 -> 2 on 2 ranks in one piece."""
    root, rows, cfg = setup
    return train_launched(None, rows, root / "images", 2, cfg, root / "whole", progress=False, timeout_s=JOB_TIMEOUT_S)


def test_text_only_batch_runs_vision_between_embedding_and_language_model(setup):
    """A text-only micro-batch runs the embedding, vision tower, projector and language model in the order an
    image micro-batch does, all inside the model's forward (where ZeRO-3 starts each step's gather trace)."""
    from progress_core.training import Encoder, _sum_loss, samples_rows

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
