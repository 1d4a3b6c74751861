"""Probe generation batches bounded by tokens, and the GPU memory handed back before the judge (docs/algorithm.md#probe-and-judge).

Answers are generated for prompts sorted by length; LLaVA-665K prompts reach ~4000 tokens, and a fixed
number of them per ``generate`` call sizes the KV cache by the longest (64 x 2000 tokens of a 7B model's
cache alone exceed 80 GB). :func:`token_budget_batches` caps each call at ``batch_tokens`` padded tokens
(rows x (longest prompt + new tokens)) as well as ``batch_size`` rows. The judge's engine (lmdeploy) sizes
its own cache from the memory it finds free, so :func:`release_cuda_memory` returns the probe model's cached
blocks to the device first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def token_budget_batches(
    lengths: Sequence[int], max_new_tokens: int, batch_size: int, batch_tokens: int | None
) -> list[np.ndarray]:
    """Row indices of each generate call: rows in (stable) length order, cut where one more row would make
    ``rows x (longest prompt + max_new_tokens)`` exceed ``batch_tokens`` or rows exceed ``batch_size``.

    A single prompt longer than the budget gets a call of its own.
    """
    sizes = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(sizes, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < order.size:
        stop = start + 1
        while stop < order.size and stop - start < batch_size:
            padded = (stop + 1 - start) * (int(sizes[order[stop]]) + max_new_tokens)
            if batch_tokens is not None and padded > batch_tokens:
                break
            stop += 1
        batches.append(order[start:stop])
        start = stop
    return batches
