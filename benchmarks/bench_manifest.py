"""Manifest build on a llava_v1_5_mix665k-shaped pool: time and peak RSS vs json.load + pandas.DataFrame.

Issue 7 asks that the manifest handle the real 665K-row (~1 GB) pool with no per-row Python object kept
longer than needed and peak memory well below 3x the JSON's size. This script writes a fake pool shaped
like the real file (ids, image paths under coco/gqa/ocr_vqa/textvqa/vg in the real proportions, ~41K
text-only rows with a ``model`` key, multi-turn conversations, long and short answers), then runs, each in
its own fresh process (peak RSS = that process's ru_maxrss):

  idle      import pandas/pyarrow/progress_core.manifest only (the floor of every phase)
  baseline  json.load(pool) + pandas.DataFrame(rows)
  ours      progress_core.manifest.build_manifest(pool, manifest.parquet)
  export    progress_core.manifest.export_llava(manifest, back.json) (+ equality check when --verify)

Usage: python benchmarks/bench_manifest.py [--rows 665298 | --quick] [--workdir DIR] [--verify]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

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


def _text_block(rng: np.random.Generator, n_chars: int) -> str:
    words = rng.choice(WORDS, size=n_chars // 4)
    return " ".join(words.tolist())[:n_chars]


def write_fake_pool(path: Path, n_rows: int, seed: int = 0) -> None:
    """Write a LLaVA-665K-shaped JSON list of ``n_rows`` rows (about 1.5 KB per row on average)."""
    rng = np.random.default_rng(seed)
    names = list(REAL_SHARES)
    probs = np.array([REAL_SHARES[k] for k in names], dtype=float)
    sources = rng.choice(len(names), size=n_rows, p=probs / probs.sum())
    text = _text_block(rng, 200_000)
    offsets = rng.integers(0, len(text) - 2_000, size=(n_rows, 40))
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
                row = {"id": f"{i:012d}", "image": IMAGE_DIRS[source].format(i), "conversations": conversations}
            if i:
                f.write(", ")
            f.write(json.dumps(row))
        f.write("]")


def _peak_rss_mb() -> float:
    """This process image's peak RSS: VmHWM (ru_maxrss would include the parent's RSS at fork)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_idle(_: str, __: str) -> tuple[float, float, str]:
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    import progress_core.manifest  # noqa: F401

    return 0.0, _peak_rss_mb(), ""


def phase_baseline(pool: str, _: str) -> tuple[float, float, str]:
    import pandas as pd

    import progress_core.manifest  # noqa: F401  (same imports as ours)

    t0 = time.perf_counter()
    with open(pool, encoding="utf-8") as f:
        rows = json.load(f)
    df = pd.DataFrame(rows)
    seconds = time.perf_counter() - t0
    return seconds, _peak_rss_mb(), f"{len(df)} rows x {df.shape[1]} columns"


def phase_ours(pool: str, workdir: str) -> tuple[float, float, str]:
    from progress_core.manifest import build_manifest

    t0 = time.perf_counter()
    report = build_manifest(pool, Path(workdir) / "manifest.parquet")
    seconds = time.perf_counter() - t0
    size = (Path(workdir) / "manifest.parquet").stat().st_size / 1e6
    return seconds, _peak_rss_mb(), f"{report.n_rows} rows, {report.n_text_only} text-only, parquet {size:.0f} MB"


def phase_export(pool: str, workdir: str, verify: bool = False) -> tuple[float, float, str]:
    from progress_core.manifest import export_llava, read_manifest

    t0 = time.perf_counter()
    n_rows = read_manifest(Path(workdir) / "manifest.parquet", columns=["sample_id"]).num_rows
    export_llava(Path(workdir) / "manifest.parquet", Path(workdir) / "back.json")
    seconds = time.perf_counter() - t0
    peak = _peak_rss_mb()
    note = f"{n_rows} rows streamed from Parquet"
    if verify:
        with open(pool, encoding="utf-8") as f:
            original = json.load(f)
        with open(Path(workdir) / "back.json", encoding="utf-8") as f:
            back = json.load(f)
        note += f"; round trip equal: {original == back}"
    return seconds, peak, note


def run_phase(fn, *args) -> tuple[float, float, str]:
    """Run ``fn`` in a fresh spawned process so its ru_maxrss is its own peak."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=REAL_ROWS, help="rows of the fake pool (default: real 665K)")
    parser.add_argument("--quick", action="store_true", help="20K rows")
    parser.add_argument("--workdir", type=Path, default=None, help="reuse/keep files here (default: temp dir)")
    parser.add_argument("--verify", action="store_true", help="also check export == input (loads both)")
    args = parser.parse_args(argv)
    n_rows = 20_000 if args.quick else args.rows

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_manifest_")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    pool = workdir / f"fake_llava_{n_rows}.json"
    try:
        if not pool.exists():
            t0 = time.perf_counter()
            run_phase(write_fake_pool, pool, n_rows)
            print(f"wrote {pool} ({n_rows} rows) in {time.perf_counter() - t0:.1f} s", flush=True)
        json_mb = pool.stat().st_size / 1e6
        print(f"pool JSON: {json_mb:.0f} MB, {n_rows} rows; cpu count {os.cpu_count()}", flush=True)

        results = {}
        for name, fn, extra in (
            ("idle", phase_idle, ()),
            ("baseline", phase_baseline, ()),
            ("ours", phase_ours, ()),
            ("export", phase_export, (args.verify,)),
        ):
            results[name] = run_phase(fn, str(pool), str(workdir), *extra)
            s, rss, note = results[name]
            print(f"  {name:<9} {s:8.1f} s   peak RSS {rss:8.0f} MB   {note}", flush=True)

        idle = results["idle"][1]
        (bs, brss, _), (os_, orss, _) = results["baseline"], results["ours"]
        print(f"\nsummary (peak RSS includes the idle import floor of {idle:.0f} MB):")
        print(f"  json.load + DataFrame : {bs:7.1f} s  {brss:7.0f} MB  ({brss / json_mb:.2f} x JSON size)")
        print(f"  build_manifest        : {os_:7.1f} s  {orss:7.0f} MB  ({orss / json_mb:.2f} x JSON size)")
        print(
            f"  ratio ours/baseline   : time {os_ / bs:.2f}x, peak RSS {orss / brss:.2f}x, "
            f"RSS above idle {(orss - idle) / max(brss - idle, 1e-9):.2f}x"
        )
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
