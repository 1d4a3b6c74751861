"""Reliability matrix of the stage contract: every fault × stage → recovered / failed loudly / silently wrong.

Runs a tiny run of the flow's stages once, then for each stage kills it half-way (after its outputs, before
its marker), truncates or flips a byte of its first output, or removes its marker, and re-runs; then changes
a pool image and a config field. Prints the matrix and the count per outcome (docs/architecture.md#stage-contract).

    python benchmarks/bench_faults.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from faultkit import DAMAGES, STAGES, change_config, change_image, inject, run_chain, tiny_config  # noqa: E402

from progress_core.environment import apply_defaults  # noqa: E402

SHORT = {"recovered": "recovered", "failed loudly": "loud", "silently wrong": "WRONG"}


def main() -> int:
    apply_defaults()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = tiny_config(Path(tmp) / "run")
        baseline = run_chain(cfg)
        results = [inject(cfg, baseline, stage, how) for stage in STAGES for how in DAMAGES]
        results += [change_image(cfg, baseline), change_config(cfg, baseline)]
    cells = {(r["stage"], r["fault"]): r for r in results}
    print(f"{'stage':<14}" + "".join(f"{d:>14}" for d in DAMAGES))
    for stage in STAGES:
        row = ""
        for how in DAMAGES:
            r = cells[(stage, how)]
            label = SHORT[r["outcome"]] + (f" ({r['recomputed']})" if "recomputed" in r else "")
            row += f"{label:>14}"
        print(f"{stage:<14}{row}")
    for r in results[-2:]:
        print(f"{r['fault'] + ' change':<14}{SHORT[r['outcome']]:>14}  (stage {r['stage']})")
    counts = Counter(r["outcome"] for r in results)
    print(
        f"\n{len(results)} faults: {counts['recovered']} recovered, {counts['failed loudly']} failed loudly, "
        f"{counts['silently wrong']} silently wrong  ({time.monotonic() - started:.0f} s; "
        "(n) = stages recomputed by the re-run)"
    )
    print(f"SUMMARY: bench_faults | faults recovered | {counts['recovered']} of {len(results)}")
    print(f"SUMMARY: bench_faults | silently wrong | {counts['silently wrong']}")
    for r in results:
        if r["outcome"] != "recovered":
            print(f"  {r['stage']} {r['fault']}: {r['outcome']} {r['detail']}")
    return 1 if counts["silently wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
