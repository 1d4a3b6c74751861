"""Run every benchmark (``make bench``) and print one summary table of their ``SUMMARY:`` lines at the end.

python benchmarks/run_all.py            # each benchmark at its default (full) size
python benchmarks/run_all.py --quick    # each benchmark's --quick size
python benchmarks/run_all.py -k pipeline -k kmeans   # only those whose name contains a -k word
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK_ARGS = {
    "bench_pipeline.py": ["--rows", "20000"],
    "bench_quality.py": ["--n", "600", "--n-eval", "200", "--seeds", "1", "--budgets", "0.3"]
    + ["--run-dir", "runs/bench/quality-quick"],
    "bench_faults.py": [],
    "bench_signals.py": [],
}
"""Benchmarks whose quick size is not spelt ``--quick``."""


def collect(output: str) -> list[tuple[str, str, str]]:
    """``(name, metric, value)`` of every ``SUMMARY: name | metric | value`` line."""
    rows = []
    for line in output.splitlines():
        if line.startswith("SUMMARY:"):
            parts = [p.strip() for p in line[len("SUMMARY:") :].split("|", 2)]
            if len(parts) == 3:
                rows.append((parts[0], parts[1], parts[2]))
    return rows


def table(rows: list[tuple[str, str, str]]) -> str:
    head = ("benchmark", "metric", "value")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    line = lambda r: " | ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(head), "-+-".join("-" * w for w in widths), *map(line, rows)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="run each benchmark at its quick size")
    ap.add_argument("-k", action="append", default=[], help="only benchmarks whose file name contains this")
    args = ap.parse_args(argv)
    scripts = sorted(p for p in HERE.glob("bench_*.py") if not args.k or any(k in p.name for k in args.k))
    rows: list[tuple[str, str, str]] = []
    failed = []
    for script in scripts:
        extra = QUICK_ARGS.get(script.name, ["--quick"]) if args.quick else []
        print(f"== {script.name} {' '.join(extra)}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(script), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        out = []
        for line in proc.stdout:
            print(line, end="", flush=True)
            out.append(line)
        if proc.wait() != 0:
            failed.append(script.name)
            rows.append((script.stem, "FAILED", f"exit status {proc.returncode}"))
            continue
        found = collect("".join(out))
        rows.extend(found or [(script.stem, "wall time", f"{time.perf_counter() - t0:.0f} s")])
    print("\n" + table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
