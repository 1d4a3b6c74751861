"""What the process's accelerators hold: cached GPU memory handed back between the stages of one process
(docs/algorithm.md#probe-and-judge)."""

from __future__ import annotations


def release_cuda_memory() -> bool:
    """Collect unreachable tensors and return the caching allocator's free blocks to the GPU; True when a
    CUDA context existed to release from."""
    import gc

    import torch

    gc.collect()
    if not torch.cuda.is_initialized():
        return False
    torch.cuda.empty_cache()
    return True
