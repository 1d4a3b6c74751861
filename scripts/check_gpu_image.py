"""Build-time check of the GPU image: one CUDA, one NCCL, one faiss (see constraints-gpu.txt).

Runs without a GPU (inside ``docker build``): it reads installed distributions and torch's CUDA version
only. Exit status 1 lists every problem.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from pathlib import Path

CONSTRAINTS = Path(__file__).resolve().parent.parent / "constraints-gpu.txt"


def constraints_cuda(text: str) -> str:
    """The ``# cuda: X.Y`` line of constraints-gpu.txt."""
    match = re.search(r"^#\s*cuda:\s*(\d+\.\d+)\s*$", text, re.M)
    if match is None:
        raise ValueError("constraints-gpu.txt has no '# cuda: X.Y' line")
    return match.group(1)


def image_problems(dists: Iterable[tuple[str, str]], torch_cuda: str | None, cuda: str) -> list[str]:
    """What is wrong with an environment of ``(name, version)`` distributions for CUDA ``cuda``."""
    names = {name.lower().replace("_", "-"): version for name, version in dists}
    major = cuda.split(".")[0]
    problems = []
    faiss = sorted(n for n in names if n == "faiss" or n.startswith("faiss-"))
    if len(faiss) != 1:
        problems.append(f"expected exactly one faiss distribution, found {faiss or 'none'}")
    elif not faiss[0].startswith("faiss-gpu"):
        problems.append(f"the GPU image has {faiss[0]}, not a GPU faiss")
    nccl = sorted(n for n in names if n.startswith("nvidia-nccl"))
    if len(nccl) != 1:
        problems.append(f"expected exactly one NCCL distribution, found {nccl or 'none'}")
    other = sorted(n for n in names if re.search(r"-cu(\d+)$", n) and not n.endswith(f"-cu{major}"))
    if other:
        problems.append(f"distributions built for another CUDA major than {major}: {other}")
    if torch_cuda is None:
        problems.append("torch is a CPU build")
    elif ".".join(torch_cuda.split(".")[:2]) != cuda:
        problems.append(f"torch is built for CUDA {torch_cuda}, the image for {cuda}")
    return problems


def main() -> int:
    from importlib.metadata import distributions

    import torch

    cuda = constraints_cuda(CONSTRAINTS.read_text())
    dists = [(d.metadata["Name"], d.version) for d in distributions()]
    problems = image_problems(dists, torch.version.cuda, cuda)
    for line in problems:
        print(f"GPU image: {line}", file=sys.stderr)
    if not problems:
        print(f"GPU image: CUDA {cuda} for torch {torch.__version__}, one faiss, one NCCL")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
