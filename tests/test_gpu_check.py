"""The GPU smoke check runs anywhere: without a GPU every path is reported skipped, nothing crashes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_check  # noqa: E402


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would really run")
def test_without_a_gpu_every_path_is_skipped():
    done = _run()
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for name in gpu_check.CHECKS:
        (line,) = [x for x in lines if x.startswith(name + " ")]
        assert line.split()[1:4] == ["skipped", "no", "GPU"], line
    assert lines[-1].startswith(f"gpu-check: {len(gpu_check.CHECKS)} of {len(gpu_check.CHECKS)} paths not failed")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cpu_mode_runs_what_needs_no_gpu_and_names_what_is_missing(tmp_path):
    done = _run(
        "--cpu", "--only", "dinov2", "--only", "faiss-kmeans", "--only", "lmdeploy-pytorch", "--work", str(tmp_path)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert lines["dinov2"].split()[1] == "ok" and "64-d features on cpu" in lines["dinov2"]
    assert lines["faiss-kmeans"].split()[1] == "skipped"
    assert lines["lmdeploy-pytorch"].split()[1] == "skipped"


def test_the_judge_model_saved_by_the_check_loads_and_counts_garbage_as_unjudged(tmp_path):
    from progress_core.probe.judges import LLMJudge, TransformersBackend

    path = gpu_check._tiny_llama(tmp_path / "llama")
    judge = LLMJudge(TransformersBackend(str(path), max_new_tokens=4, device="cpu", dtype="float32"), batch_size=2)
    with judge:
        verdicts = judge.judge(["What colour is it?"] * 3, ["red"] * 3, ["blue"] * 3)
    assert len(verdicts) == 3
    assert judge.stats["judged"] + judge.stats["unparseable"] == 3
    assert all(v.verdict in (0, 1, None) and (v.verdict is None) == (v.reason == "unparseable") for v in verdicts)


def test_training_path_partitions_every_parameter_and_ends_each_step_with_text_rows(tmp_path):
    """The check trains as the 7B run does: threshold 0 (every tensor sharded), and at every step the last
    rank's last micro-batch holds only text rows (with several ranks, that rank has no image at all)."""
    import json

    config = json.loads(gpu_check.partitioned_zero3(tmp_path).read_text())
    assert config["zero_optimization"]["stage3_param_persistence_threshold"] == 0
    assert config["zero_optimization"]["stage"] == 3
    images = [{"conversations": "[]", "image": f"{i}.png"} for i in range(40)]
    rows = gpu_check.rank_rows(images, world=4, per_device=2, accum=1, steps=3)
    assert len(rows) == 24
    for step in range(3):
        shares = [rows[step * 8 + 2 * r : step * 8 + 2 * r + 2] for r in range(4)]
        assert all(row["image"] is None for row in shares[3])
        assert all(row["image"] is not None for share in shares[:3] for row in share)
    one = gpu_check.rank_rows(images, world=1, per_device=2, accum=2, steps=1)
    assert [row["image"] is None for row in one] == [False, False, True, True]
    assert sum(gpu_check.CHECKS.values()) <= 470 and "probe-generate-judge" in gpu_check.RUNNERS
