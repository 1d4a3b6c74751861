"""GPU smoke check: every GPU code path at tiny size, offline, one line per path (``make gpu-check``).

Paths: faiss k-means on the GPU against the CPU; a tiny LLaVA trained the way the 7B model is (bf16 LoRA
under DeepSpeed ZeRO-3 with every parameter partitioned, a text-only micro-batch on the last rank) through
the launcher on every visible GPU for two steps, then resumed from that checkpoint; the lmdeploy judge
(TurboMind and PyTorch engines, tensor-parallel over every visible GPU) serving a tiny random Llama saved
here (garbage answers count as unjudged: the check is the wiring and that the engine is closed); the probe
(generation with the tiny LLaVA, then that judge) through the code a round's probe runs; DINOv2 features
from a random local ``Dinov2Model``.

Each path runs in its own process with a time limit, so a hang or a crash in a CUDA library becomes a
"failed" line instead of stopping the check. Without a GPU every path is reported as skipped.
Exit status: 1 when any path failed, else 0.

    python scripts/gpu_check.py [--work DIR] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# name -> seconds it may take (all together stay under 8 minutes)
CHECKS = {
    "faiss-kmeans": 50,
    "deepspeed-zero3-train-resume": 150,
    "lmdeploy-turbomind": 70,
    "lmdeploy-pytorch": 70,
    "probe-generate-judge": 90,
    "dinov2": 30,
}
RESULT_PREFIX = "GPU-CHECK-RESULT "
CPU_ENV = "PROGRESS_GPU_CHECK_CPU"


class Skip(Exception):
    """The path cannot run here (no GPU, package not installed)."""


def _cpu_mode() -> bool:
    return os.environ.get(CPU_ENV) == "1"


def _need_cuda() -> int:
    """GPUs visible; with --cpu, paths that can also run on the CPU do so on one rank (wiring check)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count()
    if _cpu_mode():
        return 1
    raise Skip("no GPU")


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise Skip(f"{module} not installed (pip install '.[gpu]')")


# ----------------------------------------------------------------------------------------------- paths


def check_faiss(work: Path) -> str:
    import numpy as np

    from progress_core.clustering.kmeans import faiss_gpu_count, spherical_kmeans

    _need_cuda()
    if faiss_gpu_count() == 0:
        raise Skip("faiss sees no GPU (CPU-only faiss build)")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 64))
    x = (centres[rng.integers(0, 20, 20000)] + 0.05 * rng.normal(size=(20000, 64))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    gpu = spherical_kmeans(x, 20, niter=20, seed=1234, gpu=True)
    cpu = spherical_kmeans(x, 20, niter=20, seed=1234, gpu=False)
    if not gpu.device.startswith("gpu"):
        raise AssertionError(f"k-means ran on {gpu.device}")
    same = float((gpu.assignment == cpu.assignment).mean())
    if same < 0.99:
        raise AssertionError(f"GPU and CPU assignments agree on only {same:.1%}")
    drift = float(np.abs(gpu.centroids - cpu.centroids).max())
    return f"{gpu.device}: {same:.2%} same assignments as the CPU, max centroid difference {drift:.1e}"


def partitioned_zero3(work: Path) -> Path:
    """The packaged ZeRO-3 config with ``stage3_param_persistence_threshold`` 0, so the tiny model's tensors
    are sharded and gathered as the 7B model's are (the packaged 1e6 keeps every tiny tensor whole)."""
    config = json.loads((ROOT / "deployments" / "zero3.json").read_text())
    config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = work / "zero3_partitioned.json"
    path.write_text(json.dumps(config))
    return path


TEXT_ROW = {
    "conversations": json.dumps([{"from": "human", "value": "What is 2 plus 3?"}, {"from": "gpt", "value": "5"}]),
    "image": None,
}


def rank_rows(image_rows: list[dict], world: int, per_device: int, accum: int, steps: int) -> list[dict]:
    """Rows in training order (no shuffle) whose last micro-batch of the last rank is text-only at every step:
    with several ranks that rank has no image at all, the case where ZeRO-3 gathers must still line up."""
    rows, images = [], iter(image_rows)
    for _ in range(steps):
        for rank in range(world):
            for micro in range(accum):
                text = rank == world - 1 and micro == accum - 1
                rows += [TEXT_ROW if text else next(images) for _ in range(per_device)]
    return rows


def _training_setup(work: Path, n_ranks: int):
    """(config, rows of 3 steps, image root) of the training check."""
    import torch

    from progress_core.data.manifest import build_manifest, read_manifest
    from progress_core.data.synthetic import generate_pool
    from progress_core.model.config import ModelConfig
    from progress_core.model.tiny import build_tiny_model
    from progress_core.training.config import TrainingConfig

    pool = generate_pool(work / "pool", n=64, n_eval=0, seed=0)
    manifest = work / "manifest.parquet"
    build_manifest(pool.pool_json, manifest, image_root=pool.image_root)
    table = read_manifest(manifest, columns=["image", "conversations"]).to_pylist()
    texts = [t["value"] for row in table for t in json.loads(row["conversations"])]
    init = build_tiny_model(texts, ModelConfig(patch_size=8), work / "init")
    bf16 = not torch.cuda.is_available() or torch.cuda.is_bf16_supported()
    dtype = "bfloat16" if bf16 else "float32"
    model = ModelConfig(mode="real", base_model=str(init), lora_r=8, lora_alpha=16, lora_dropout=0.0, dtype=dtype)
    accum = 2 if n_ranks == 1 else 1
    cfg = TrainingConfig(
        model=model,
        global_batch_size=2 * n_ranks * accum,
        per_device_batch_size=2,
        gradient_accumulation_steps=accum,
        final_step=3,
        nproc_per_node=n_ranks,
        use_deepspeed=True,
        deepspeed_config=str(partitioned_zero3(work)),
        shuffle=False,
        learning_rate=1e-3,
    )
    images = [row for row in table if row["image"] is not None]
    return cfg, rank_rows(images, n_ranks, 2, accum, 3), pool.image_root


def check_training(work: Path) -> str:
    from progress_core.training.loop import read_train_state, train_launched

    n_gpus = _need_cuda()
    _need("deepspeed")
    n_ranks = n_gpus if _device() == "cuda" else 2
    cfg, rows, image_root = _training_setup(work, n_ranks)
    per_step = cfg.global_batch_size
    log = (work / "train.log").open("w")
    try:
        first = train_launched(
            None,
            rows[: 2 * per_step],
            image_root,
            2,
            cfg,
            work / "step2",
            log_line=lambda s: print(s, file=log),
            timeout_s=60,
        )
        if not (first.checkpoint / "deepspeed").is_dir():
            raise AssertionError("no DeepSpeed engine state in the checkpoint")
        second = train_launched(
            first.checkpoint,
            rows[2 * per_step :],
            image_root,
            3,
            cfg,
            work / "step3",
            log_line=lambda s: print(s, file=log),
            timeout_s=60,
        )
    finally:
        log.close()
    partitioned = read_train_state(second.checkpoint).get("partitioned_parameters")
    if not partitioned:
        raise AssertionError(f"ZeRO-3 partitioned {partitioned} parameters")
    losses = ", ".join(f"{x:.3f}" for x in first.losses + second.losses)
    return (
        f"{n_ranks} rank(s), {cfg.model.dtype} LoRA, ZeRO-3 with {partitioned} parameters partitioned, text-only "
        f"micro-batch on rank {n_ranks - 1}, steps 0->2 then resumed 2->3, losses {losses}"
    )


def _tiny_llama(out: Path) -> Path:
    """A random Llama with head size 128 (TurboMind's) and 8 heads, so it splits over 1, 2, 4 or 8 GPUs."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from progress_core.model.tiny import build_word_tokenizer
    from progress_core.probe.judges import judge_prompt

    texts = [judge_prompt("What colour is it?", "red", "blue"), "Answer - correct incorrect Reason -"]
    tokenizer = build_word_tokenizer(texts)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    torch.manual_seed(0)
    heads = 8
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128 * heads,
        intermediate_size=256 * heads,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).to(torch.float16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def check_lmdeploy(work: Path, engine: str) -> str:
    import torch

    from progress_core.probe.judges import make_judge

    n_gpus = _need_cuda()
    _need("lmdeploy")
    cfg = _judge_config(work, engine, n_gpus)
    if not torch.cuda.is_available():
        raise Skip("lmdeploy needs a GPU")
    free_before = torch.cuda.mem_get_info()[0]
    questions = ["What colour is it?"] * 6
    with make_judge(cfg) as judge:
        verdicts = judge.judge(questions, ["red"] * 6, ["blue"] * 6)
        free_during = torch.cuda.mem_get_info()[0]
    free_after = torch.cuda.mem_get_info()[0]
    if len(verdicts) != 6:
        raise AssertionError(f"{len(verdicts)} verdicts for 6 answers")
    unjudged = sum(v.verdict is None for v in verdicts)
    held = (free_before - free_during) / 2**30
    left = (free_before - free_after) / 2**30
    return (
        f"tp {cfg.tp}, 6 answers, {unjudged} unjudged (random weights), engine held {held:.1f} GiB, "
        f"{left:.1f} GiB still held after close"
    )


def _judge_config(work: Path, engine: str, tp: int):
    """The lmdeploy judge on the tiny random Llama, tensor-parallel over ``tp`` GPUs."""
    from progress_core.probe.config import JudgeConfig

    model = work / "judge-llama"
    if not model.is_dir():
        _tiny_llama(model)
    return JudgeConfig(
        kind="llm",
        backend="lmdeploy",
        engine=engine,
        model=str(model),
        tp=tp,
        session_len=2048,
        cache_max_entry_count=0.05,
        batch_size=4,
        max_new_tokens=8,
        timeout_s=60,
    )


def check_probe(work: Path) -> str:
    """A round's probe on the GPU: the tiny LLaVA answers (token-budget batches), its CUDA cache is released,
    then the lmdeploy judge over every GPU decides (``progress_core.probe.accuracy.probe``)."""
    import torch

    from progress_core.probe.accuracy import probe
    from progress_core.probe.config import ProbeConfig
    from progress_core.probe.judges import make_judge

    n_gpus = _need_cuda()
    _need("lmdeploy")
    if not torch.cuda.is_available():
        raise Skip("lmdeploy needs a GPU")
    cfg, rows, image_root = _training_setup(work, 1)
    samples = [{**row, "sample_id": i, "cluster_id": i % 2} for i, row in enumerate(rows[:8])]
    with make_judge(_judge_config(work, "turbomind", n_gpus)) as judge:
        result = probe(cfg.model.base_model, samples, image_root, judge, ProbeConfig(batch_tokens=512), progress=False)
    if len(result.per_sample) != len(samples) or int(result.per_cluster["n"].sum()) != len(samples):
        raise AssertionError(f"probe tables cover {len(result.per_sample)} of {len(samples)} samples")
    return f"{len(samples)} answers generated on {_device()}, judged with tp {n_gpus}: {result.stats}"


def check_dinov2(work: Path) -> str:
    import numpy as np
    from PIL import Image
    from transformers import Dinov2Config, Dinov2Model

    from progress_core.features.config import FeatureConfig
    from progress_core.features.extract import load_image_encoder

    _need_cuda()
    path = work / "dinov2"
    config = Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    Dinov2Model(config).save_pretrained(path)
    encoder = load_image_encoder(FeatureConfig(image_encoder=str(path), device=_device()))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (48 + 8 * i, 64, 3), dtype=np.uint8)) for i in range(4)]
    feats = encoder.encode(images)
    if feats.shape != (4, 64) or not np.isfinite(feats).all():
        raise AssertionError(f"features of shape {feats.shape}, finite: {np.isfinite(feats).all()}")
    return f"4 images -> {feats.shape[1]}-d features on {encoder.device} ({encoder.dtype})"


RUNNERS = {
    "faiss-kmeans": check_faiss,
    "deepspeed-zero3-train-resume": check_training,
    "lmdeploy-turbomind": lambda work: check_lmdeploy(work, "turbomind"),
    "lmdeploy-pytorch": lambda work: check_lmdeploy(work, "pytorch"),
    "probe-generate-judge": check_probe,
    "dinov2": check_dinov2,
}


# ------------------------------------------------------------------------------------------- driver


def run_one(name: str, work: Path) -> tuple[str, str]:
    """(status, detail) of one path in this process."""
    work.mkdir(parents=True, exist_ok=True)
    try:
        return "ok", RUNNERS[name](work)
    except Skip as why:
        return "skipped", str(why)
    except Exception as exc:  # noqa: BLE001  (every failure becomes one report line)
        return "failed", f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"


def run_isolated(name: str, work: Path) -> tuple[str, str]:
    """One path in a child process with its time limit; a crash or hang is a failure with its reason."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--work", str(work)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    log = work / f"{name}.log"
    work.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        try:
            subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=CHECKS[name], check=False)
        except subprocess.TimeoutExpired:
            return "failed", f"did not finish within {CHECKS[name]} s (log: {log})"
    lines = log.read_text(errors="replace").splitlines()
    for line in reversed(lines):
        if line.startswith(RESULT_PREFIX):
            status, detail = json.loads(line[len(RESULT_PREFIX) :])
            return status, detail
    tail = " | ".join(lines[-3:]) if lines else "no output"
    return "failed", f"crashed: {tail} (log: {log})"


def gpu_present() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    parser.add_argument("--only", action="append", choices=sorted(CHECKS), help="run only this path (repeatable)")
    parser.add_argument(
        "--cpu", action="store_true", help="without a GPU, run the paths that can run on the CPU (checks the wiring)"
    )
    parser.add_argument("--child", choices=sorted(CHECKS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cpu:
        os.environ[CPU_ENV] = "1"
    if args.child:
        status, detail = run_one(args.child, args.work)
        print(RESULT_PREFIX + json.dumps([status, detail]), flush=True)
        return 0
    names = args.only or list(CHECKS)
    work = args.work or Path(tempfile.mkdtemp(prefix="progress-gpu-check-"))
    failed = 0
    started = time.monotonic()
    try:
        present = gpu_present()
        for name in names:
            t0 = time.monotonic()
            if present or args.cpu:
                status, detail = run_isolated(name, work / name)
            else:
                status, detail = "skipped", "no GPU"
            failed += status == "failed"
            print(f"{name:<30} {status:<8} {detail} [{time.monotonic() - t0:.0f} s]", flush=True)
    finally:
        if args.work is None and not failed:
            shutil.rmtree(work, ignore_errors=True)
    where = f"; logs in {work}" if failed else ""
    print(
        f"gpu-check: {len(names) - failed} of {len(names)} paths not failed in {time.monotonic() - started:.0f} s{where}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
