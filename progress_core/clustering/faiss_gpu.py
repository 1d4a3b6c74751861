"""Which GPUs faiss k-means may use, and the CPU fallback when they fail (docs/algorithm.md#concept-clustering).

The ``faiss-gpu-cu12`` wheels (1.14) carry kernels for compute capability 7.0 and 8.0 only, without PTX, so
on an H100 (9.0) the first kernel launch fails. ``clustering.use_gpu: auto`` therefore keeps k-means on the
CPU when a visible GPU lies outside :data:`FAISS_GPU_CAPABILITIES` (``true`` forces the GPU, for a faiss
build that has the kernels), and any CUDA error on the GPU path reruns the clustering on the CPU; both
say why in the log.
"""

from __future__ import annotations

FAISS_GPU_CAPABILITIES = ((7, 0), (9, 0))
"""Compute capabilities ``[low, high)`` the ``faiss-gpu-cu12`` wheels have kernels for (sm_70, sm_80)."""


def device_capabilities(n_gpus: int) -> list[tuple[int, int]] | None:
    """``(major, minor)`` of the first ``n_gpus`` CUDA devices, or None when torch cannot tell."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return [tuple(torch.cuda.get_device_capability(i)) for i in range(n_gpus)]
    except Exception:  # noqa: BLE001  (a broken CUDA set-up is the faiss GPU path's own error to report)
        return None


def unsupported_gpu_reason(capabilities: list[tuple[int, int]] | None) -> str | None:
    """Why faiss cannot run on these GPUs (the first one outside the wheels' kernels), or None."""
    low, high = FAISS_GPU_CAPABILITIES
    for i, capability in enumerate(capabilities or []):
        if not low <= tuple(capability) < high:
            return (
                f"GPU {i} has compute capability {capability[0]}.{capability[1]}, the faiss GPU build has kernels "
                f"for {low[0]}.{low[1]} to {high[0] - 1}.9 only; set clustering.use_gpu=true for a build with them"
            )
    return None


def first_line(exc: BaseException) -> str:
    """The error's first line, for a one-line log of why the GPU path was left."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
