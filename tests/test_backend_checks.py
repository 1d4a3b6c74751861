"""The pre-run validation checks the GPUs the launched training needs and imports every selected backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from progress_core.run.backend_checks import check_backend_imports, check_training_gpus, selected_backends
from progress_core.run.config import load_config
from progress_core.run.validation import check_run

REPO = Path(__file__).resolve().parent.parent


def _fields(problems: list[str]) -> list[str]:
    return [p.split(":")[0] for p in problems]


def test_paper_8gpu_on_four_visible_gpus_is_refused_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    cfg = load_config(None, {"preset": "paper-8gpu", "run_dir": str(tmp_path / "run")})
    problems = [p for p in check_run(cfg, check_disk=False) if p.startswith("training.nproc_per_node")]
    assert problems == [
        "training.nproc_per_node: 8 processes need 8 GPUs, 4 visible; set it to 4 (or auto) and raise "
        "gradient_accumulation_steps to keep global_batch_size"
    ]
    four = load_config(None, {"preset": "paper", "run_dir": str(tmp_path / "run")})
    assert "training.nproc_per_node" not in _fields(check_run(four, check_disk=False))


def test_cpu_ranks_and_explicit_nccl_without_gpus():
    cpu = load_config(None, {"training": {"nproc_per_node": 2}}).training
    assert check_training_gpus(cpu, 0) == []
    nccl = cpu.model_copy(update={"dist_backend": "nccl"})
    assert check_training_gpus(nccl, 0) == [
        "training.nproc_per_node: 2 processes need 2 GPUs, 0 visible; run on a GPU node, or set "
        "training.dist_backend=gloo for CPU ranks"
    ]
    assert check_training_gpus(cpu.model_copy(update={"nproc_per_node": "auto"}), 0) == []


def test_every_selected_backend_is_imported_and_a_broken_one_named(tmp_path):
    """The paper preset on 4 GPUs imports faiss, peft, deepspeed (auto: installed, GPUs, launched) and
    lmdeploy; a build that raises on import (not only a missing one) is one line naming it."""
    cfg = load_config(None, {"preset": "paper", "run_dir": str(tmp_path / "run")})
    imported: list[str] = []

    def fake_import(name):
        imported.append(name)
        if name == "deepspeed":
            raise RuntimeError("deepspeed was built against torch 2.5\nsecond line")
        if name == "lmdeploy":
            raise ModuleNotFoundError("No module named 'lmdeploy'")

    def installed(name):
        return object()

    problems = check_backend_imports(cfg, 4, import_module=fake_import, find_spec=installed)
    assert imported == ["faiss", "peft", "deepspeed", "lmdeploy"]
    assert problems == [
        "training.use_deepspeed: needs deepspeed, which does not import (RuntimeError: deepspeed was built "
        "against torch 2.5); pip install 'progress-flows[gpu]'",
        "probe.judge.backend: needs lmdeploy, which does not import (ModuleNotFoundError: No module named "
        "'lmdeploy'); pip install 'progress-flows[gpu]'",
    ]
    assert [m for _, m, _ in selected_backends(cfg, 0, find_spec=installed)] == ["faiss", "peft", "lmdeploy"]
    demo = load_config(None, {"run_dir": str(tmp_path / "run")})
    assert [m for _, m, _ in selected_backends(demo, 4, find_spec=installed)] == ["faiss"]
    forced = demo.model_copy(update={"training": demo.training.model_copy(update={"use_deepspeed": True})})
    assert [m for _, m, _ in selected_backends(forced, 0, find_spec=lambda name: None)] == ["faiss", "deepspeed"]


@pytest.mark.skipif(__import__("importlib").util.find_spec("lmdeploy") is not None, reason="lmdeploy is installed here")
def test_progress_run_paper_8gpu_on_four_gpus_stops_before_any_stage(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    cmd = [sys.executable, "-m", "progress_cli", "run", "--preset", "paper-8gpu", "--run-dir", str(run_dir)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    fields = [line.removeprefix("error: ").split(":")[0] for line in proc.stderr.strip().splitlines()]
    assert "training.nproc_per_node" in fields and "probe.judge.backend" in fields, proc.stderr
    assert not run_dir.exists()
