"""The GPU image's pins agree with each other: one CUDA, one NCCL, one faiss (no docker needed)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from check_gpu_image import constraints_cuda, image_problems  # noqa: E402

DOCKERFILE = (ROOT / "deployments" / "Dockerfile").read_text()
CONSTRAINTS = (ROOT / "constraints-gpu.txt").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# lmdeploy 0.18.0's own requirements on torch and the CUDA libraries (its wheel metadata).
LMDEPLOY_TORCH = SpecifierSet("<=2.12.1,>=2.0.0")
LMDEPLOY_CUDA_LIBS = ["nvidia-nccl-cu12", "nvidia-cuda-runtime-cu12", "nvidia-cublas-cu12", "nvidia-curand-cu12"]


def pins() -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in CONSTRAINTS.splitlines()]
    return {Requirement(line).name: Requirement(line) for line in lines if line}


def pinned_version(name: str) -> Version:
    (spec,) = pins()[name].specifier
    assert spec.operator == "==", f"{name} is not pinned exactly"
    return Version(spec.version)


def test_one_cuda_version_across_base_image_torch_faiss_and_lmdeploy():
    cuda = constraints_cuda(CONSTRAINTS)
    major, tag = cuda.split(".")[0], "cu" + cuda.replace(".", "")
    base = re.search(r"^FROM nvidia/cuda:(\d+\.\d+)\.\d+-\S+", DOCKERFILE, re.M)
    assert base is not None and base.group(1) == cuda
    assert pinned_version("torch").local == tag and pinned_version("torchvision").local == tag
    assert re.search(rf"TORCH_INDEX_URL=\S+/{tag}\s*$", DOCKERFILE, re.M)
    assert f"torch=={pinned_version('torch')}" in DOCKERFILE
    assert pinned_version("torch") in LMDEPLOY_TORCH and "lmdeploy" in pins()
    assert all(lib.endswith(f"-cu{major}") for lib in LMDEPLOY_CUDA_LIBS)
    faiss = [name for name in pins() if name.startswith("faiss")]
    assert faiss == [f"faiss-gpu-cu{major}"]
    assert not [name for name in pins() if re.search(r"-cu(\d+)$", name) and not name.endswith(f"-cu{major}")]


def test_exactly_one_faiss_per_install_set():
    def faiss_of(requirements):
        return [Requirement(r).name for r in requirements if Requirement(r).name.startswith("faiss")]

    extras = PYPROJECT["project"]["optional-dependencies"]
    assert faiss_of(PYPROJECT["project"]["dependencies"]) == []
    assert faiss_of(extras["cpu"]) == ["faiss-cpu"] and len(faiss_of(extras["gpu"])) == 1
    assert "progress-flows[cpu]" in extras["dev"] and faiss_of(extras["dev"]) == []
    installs = re.findall(r"pip install [^\n]*", DOCKERFILE)
    assert any("'.[gpu]'" in line for line in installs)
    assert not any(re.search(r"\[(cpu|dev)|faiss-cpu", line) for line in installs)


def test_image_installs_what_its_command_and_deepspeed_need():
    extras = PYPROJECT["project"]["optional-dependencies"]["gpu"]
    if '--type", "kubernetes' in DOCKERFILE:
        assert "prefect-kubernetes" in [Requirement(r).name for r in extras] and "prefect-kubernetes" in pins()
    assert re.search(r"--no-build-isolation -c constraints-gpu.txt deepspeed", DOCKERFILE)
    for folder in ("progress_core", "tasks", "flows", "progress_cli", "deployments", "scripts"):
        assert f"COPY {folder} ./{folder}" in DOCKERFILE
    assert "python scripts/check_gpu_image.py" in DOCKERFILE


def test_config_paths_are_relative_to_the_run_or_package(tmp_path, monkeypatch):
    from progress_core.run.config import load_config
    from progress_core.training.config import TrainingConfig
    from progress_core.training.loop import resolve_config_path

    dumped = json.dumps(load_config(overrides={"preset": "paper"}).model_dump(mode="json"))
    assert str(ROOT) not in dumped
    default = TrainingConfig().deepspeed_config
    assert not Path(default).is_absolute()
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path(default) == ROOT / "deployments" / "zero3.json"
    (tmp_path / "zero3.json").write_text("{}")
    assert resolve_config_path(default) == Path("zero3.json")
    zero3 = json.loads((ROOT / "deployments" / "zero3.json").read_text())
    assert zero3["zero_optimization"]["stage"] == 3
    assert zero3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is False


@pytest.mark.parametrize(
    "dists, torch_cuda, problem",
    [
        ([("faiss-gpu-cu12", "1"), ("nvidia-nccl-cu12", "2")], "12.8", None),
        ([("faiss-cpu", "1"), ("faiss-gpu-cu12", "1"), ("nvidia-nccl-cu12", "2")], "12.8", "one faiss"),
        ([("faiss-cpu", "1"), ("nvidia-nccl-cu12", "2")], "12.8", "not a GPU faiss"),
        ([("faiss-gpu-cu12", "1"), ("nvidia-nccl-cu12", "2"), ("nvidia-nccl-cu13", "2")], "12.8", "one NCCL"),
        ([("faiss-gpu-cu12", "1"), ("nvidia-nccl-cu12", "2")], "13.0", "built for CUDA 13.0"),
        ([("faiss-gpu-cu12", "1"), ("nvidia-nccl-cu12", "2")], None, "CPU build"),
    ],
)
def test_image_check_names_each_problem(dists, torch_cuda, problem):
    found = image_problems(dists, torch_cuda, "12.8")
    assert (found == []) if problem is None else any(problem in p for p in found), found


def test_gpu_set_pins_the_model_stack_the_cpu_tests_run():
    """transformers and accelerate float in neither set; peft differs (lmdeploy's pin) and is what
    `make test-gpu-pins` puts under the LoRA / ZeRO-3 tests."""
    cpu = {
        Requirement(line).name: Requirement(line)
        for line in (line.split("#")[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines())
        if line
    }
    for name in ("transformers", "accelerate"):
        assert pinned_version(name) == Version(next(iter(cpu[name].specifier)).version), name
    assert pinned_version("peft") == Version("0.14.0")
    makefile = (ROOT / "Makefile").read_text()
    target = makefile.split("test-gpu-pins: $(STAMP)")[1].split("\n\n")[0]
    assert "constraints-gpu.txt" in target and "(peft|transformers)" in target and "zero3 or text_only" in target
