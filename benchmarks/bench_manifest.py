"""Manifest build on a llava_v1_5_mix665k-shaped pool: time and peak RSS vs json.load + pandas.DataFrame.

Issue 7 asks that the manifest handle the real 665K-row (~1 GB) pool with no per-row Python object kept
longer than needed and peak memory well below 3x the JSON's size. This script writes a fake pool shaped
like the real file (ids, image paths under coco/gqa/ocr_vqa/textvqa/vg in the real proportions, ~41K
text-only rows with a ``model`` key, multi-turn conversations, long and short answers), then runs, each in
its own fresh process (peak RSS = that process's ru_maxrss):

  idle      import pandas/pyarrow/progress_core.data.manifest only (the floor of every phase)
  baseline  json.load(pool) + pandas.DataFrame(rows)
  ours      progress_core.data.manifest.build_manifest(pool, manifest.parquet)
  export    progress_core.data.manifest.export_llava(manifest, back.json) (+ equality check when --verify)

Usage: python benchmarks/bench_manifest.py [--rows 665298 | --quick] [--workdir DIR] [--verify]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REAL_ROWS, run_phase, summary, write_fake_pool  # noqa: E402
from _common import peak_rss_mb as _peak_rss_mb  # noqa: E402


def phase_idle(_: str, __: str) -> tuple[float, float, str]:
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    return 0.0, _peak_rss_mb(), ""


def phase_baseline(pool: str, _: str) -> tuple[float, float, str]:
    import pandas as pd

    t0 = time.perf_counter()
    with open(pool, encoding="utf-8") as f:
        rows = json.load(f)
    df = pd.DataFrame(rows)
    seconds = time.perf_counter() - t0
    return seconds, _peak_rss_mb(), f"{len(df)} rows x {df.shape[1]} columns"


def phase_ours(pool: str, workdir: str) -> tuple[float, float, str]:
    from progress_core.data.manifest import build_manifest

    t0 = time.perf_counter()
    report = build_manifest(pool, Path(workdir) / "manifest.parquet")
    seconds = time.perf_counter() - t0
    size = (Path(workdir) / "manifest.parquet").stat().st_size / 1e6
    return seconds, _peak_rss_mb(), f"{report.n_rows} rows, {report.n_text_only} text-only, parquet {size:.0f} MB"


def phase_export(pool: str, workdir: str, verify: bool = False) -> tuple[float, float, str]:
    from progress_core.data.manifest import export_llava, read_manifest

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
        summary("bench_manifest", f"manifest of {n_rows} rows, time", f"{os_:.1f} s vs json.load+DataFrame {bs:.1f} s")
        summary("bench_manifest", "manifest peak RSS", f"{orss:.0f} MB vs {brss:.0f} MB ({orss / brss:.2f}x)")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
