"""Helpers shared by the benchmarks: LLaVA-shaped data, per-process peak memory, isolated phases, summaries.

Every benchmark runs what it measures in a fresh spawned process when it reports memory (a process's
``VmHWM`` is its own peak only if nothing else ran in it), and ends with ``SUMMARY: name | metric | value``
lines that ``benchmarks/run_all.py`` (``make bench``) collects into one table.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REAL_ROWS = 665_298
REAL_SHARES = {"coco": 364_100, "vg": 86_417, "gqa": 72_140, "ocr_vqa": 80_000, "textvqa": 21_953, "text": 40_688}
"""Rows per source in llava_v1_5_mix665k.json (haotian-liu/LLaVA issue #657)."""

IMAGE_DIRS = {
    "coco": "coco/train2017/{:012d}.jpg",
    "vg": "vg/VG_100K/{}.jpg",
    "gqa": "gqa/images/{}.jpg",
    "ocr_vqa": "ocr_vqa/images/{}.jpg",
    "textvqa": "textvqa/train_images/{:016x}.jpg",
}

WORDS = (
    "the a man woman dog cat street table red blue green white black small large left right "
    "standing sitting holding wearing picture image shows there is are two three several near "
    "behind front building sky tree car bus train people playing with on in of and"
).split()

DINOV2_LARGE_DIM = 1024
MINILM_DIM = 384


def _text_block(rng: np.random.Generator, n_chars: int) -> str:
    words = rng.choice(WORDS, size=n_chars // 4)
    return " ".join(words.tolist())[:n_chars]


def write_fake_pool(path: Path, n_rows: int, seed: int = 0, repeat_fraction: float = 0.0) -> np.ndarray:
    """Write a LLaVA-665K-shaped JSON list of ``n_rows`` rows (about 1.5 KB per row on average).

    Image paths under coco/gqa/ocr_vqa/textvqa/vg in the real proportions, ~6% text-only rows with a
    ``model`` key, multi-turn conversations (ocr_vqa 4-6 turns, coco alternating short VQA and long
    descriptions). ``repeat_fraction`` of the image rows reuse the id and image of an earlier row of the
    same source with another conversation, as the real file repeats ids (no image file is written).
    Returns the mask of the text-only rows.
    """
    rng = np.random.default_rng(seed)
    names = list(REAL_SHARES)
    probs = np.array([REAL_SHARES[k] for k in names], dtype=float)
    sources = rng.choice(len(names), size=n_rows, p=probs / probs.sum())
    text = _text_block(rng, 200_000)
    offsets = rng.integers(0, len(text) - 2_000, size=(n_rows, 40))
    repeats = np.random.default_rng([seed, 1]).random(n_rows) < repeat_fraction
    last_of_source: dict[str, int] = {}
    with open(path, "w", encoding="utf-8") as f:
        f.write("[")
        for i in range(n_rows):
            source = names[sources[i]]
            o = offsets[i]
            if source == "coco":
                n_pairs = 1 + int(rng.geometric(0.3)) if i % 2 else 1 + int(rng.geometric(0.6))
                long_answers = i % 2 == 0
            elif source == "ocr_vqa":
                n_pairs = 4 + int(rng.integers(0, 3))
                long_answers = False
            elif source == "text":
                n_pairs = 1 + int(rng.geometric(0.5))
                long_answers = True
            else:
                n_pairs = 1 + int(rng.geometric(0.25))
                long_answers = False
            n_pairs = min(n_pairs, 19)
            conversations = []
            for t in range(n_pairs):
                q = text[o[2 * t] : o[2 * t] + 40 + int(o[2 * t]) % 120] + "?"
                if t == 0 and source != "text":
                    q = "<image>\n" + q if i % 2 else q + "\n<image>"
                a_len = 300 + int(o[2 * t + 1]) % 900 if long_answers else 1 + int(o[2 * t + 1]) % 12
                a = text[o[2 * t + 1] : o[2 * t + 1] + a_len]
                conversations.append({"from": "human", "value": q})
                conversations.append({"from": "gpt", "value": a})
            if source == "text":
                row = {"id": f"{i:x}_{t}", "model": "", "conversations": conversations}
            else:
                key = last_of_source[source] if repeats[i] and source in last_of_source else i
                last_of_source[source] = key
                row = {"id": f"{key:012d}", "image": IMAGE_DIRS[source].format(key), "conversations": conversations}
            if i:
                f.write(", ")
            f.write(json.dumps(row))
        f.write("]")
    return sources == names.index("text")


def write_clustered_features(
    path: Path,
    n_rows: int,
    dim: int,
    n_centres: int,
    dtype: str,
    seed: int,
    norm: float = 1.0,
    zero_rows: np.ndarray | None = None,
    chunk: int = 65536,
) -> None:
    """A ``(n_rows, dim)`` ``.npy`` of vectors around ``n_centres`` random centres (noise 0.35 of the
    centre's norm), scaled to about ``norm``; ``zero_rows`` (a mask) are all-zero, as text-only rows' image part."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_centres, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=(n_rows, dim))
    for s in range(0, n_rows, chunk):
        e = min(s + chunk, n_rows)
        labels = rng.integers(0, n_centres, e - s)
        x = centres[labels] + rng.standard_normal((e - s, dim), dtype=np.float32) * (0.35 / np.sqrt(dim))
        x *= norm / np.linalg.norm(x, axis=1, keepdims=True)
        if zero_rows is not None:
            x[zero_rows[s:e]] = 0
        out[s:e] = x
    out.flush()
    del out


def peak_rss_mb() -> float:
    """This process image's peak RSS: VmHWM (ru_maxrss would include the parent's RSS at fork)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measured(fn: Callable[..., Any], args: tuple, preload: tuple[str, ...] = ()) -> dict[str, Any]:
    import importlib

    for module in preload:
        importlib.import_module(module)
    t0 = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_mb": peak_rss_mb(), "out": out}


def run_isolated(fn: Callable[..., Any], *args: Any, preload: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``fn(*args)`` in a fresh spawned process: ``{"seconds", "peak_mb", "out"}``.

    ``seconds`` is the call alone (the ``preload`` modules are imported before the clock starts),
    ``peak_mb`` the process's VmHWM, which includes the interpreter and import floor.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(_measured, fn, args, tuple(preload)).result()


def run_phase(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` in a fresh spawned process and return its result (it measures itself)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


def summary(name: str, metric: str, value: str) -> None:
    """One ``SUMMARY:`` line for ``make bench``'s closing table."""
    print(f"SUMMARY: {name} | {metric} | {value}", flush=True)


T95 = {
    n: v
    for n, v in zip(
        range(2, 31),
        (
            12.71,
            4.30,
            3.18,
            2.78,
            2.57,
            2.45,
            2.36,
            2.31,
            2.26,
            2.23,
            2.20,
            2.18,
            2.16,
            2.14,
            2.13,
            2.12,
            2.11,
            2.10,
            2.09,
            2.09,
            2.08,
            2.07,
            2.07,
            2.06,
            2.06,
            2.06,
            2.05,
            2.05,
            2.05,
        ),
    )
}
"""Two-sided 95 % Student t quantiles by sample size (df = n - 1)."""


def paired_interval(diff) -> str:
    """``mean [low, high]`` of paired per-seed differences: the 95 % t-interval of their mean."""
    import numpy as np

    if len(diff) < 2:
        return f"{diff.mean():+.3f}" if len(diff) else "-"
    half = T95.get(len(diff), 1.96) * diff.std() / np.sqrt(len(diff))
    return f"{diff.mean():+.3f} [{diff.mean() - half:+.3f}, {diff.mean() + half:+.3f}]"


def oracle_headroom(oracle_minus_random) -> tuple[bool, float]:
    """(is there headroom, paired standard error) of the per-seed ``oracle − random`` differences: headroom when
    their mean is above 2 paired standard errors (README "Headroom pool and allocation variants")."""
    import numpy as np

    if len(oracle_minus_random) < 2:
        return False, float("nan")
    se = oracle_minus_random.std() / np.sqrt(len(oracle_minus_random))
    return bool(oracle_minus_random.mean() > 2 * se), float(se)


def oracle_cells(heads: dict) -> tuple[list[str], tuple | None]:
    """Per oracle, its paired ``− random`` interval with the headroom verdict; and ``(name, differences)`` of the
    oracle with the most headroom, None when no oracle has any (README "A learner that forgets")."""
    cells, best = [], None
    for name, head in heads.items():
        room, se = oracle_headroom(head)
        verdict = f"{'yes' if room else 'no'}, SE {se:.3f}" if len(head) > 1 else "not run"
        cells.append(f"{paired_interval(head)} ({verdict})")
        if room and (best is None or head.mean() > best[1].mean()):
            best = (name, head)
    return cells, best


def headroom_shares(diffs: dict, best: tuple | None, n_oracles: int) -> str:
    """Each method's ``(method − random) / (oracle − random)`` against the oracle with the most headroom, named
    when there are several oracles; "no headroom" when none has any."""
    if best is None:
        return "no headroom"
    shares = ", ".join(f"{name} {d.mean() / best[1].mean():+.2f}" for name, d in diffs.items() if len(d))
    return f"of {best[0]}: {shares}" if n_oracles > 1 else shares
