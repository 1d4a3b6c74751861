"""What resuming costs: a full selection run vs the same run again (every stage cached), side by side.

Prints the first run's wall time, the cached re-run's wall time and their ratio (target <= 10%), and
Prefect's per-task overhead on this machine (a trivial task called N times in a flow vs the plain function).
Both runs talk to one local ``prefect server`` started here, so server start-up is not part of either figure.

    python benchmarks/bench_resume.py            # the demo run (bundled pool, 5000 samples)
    python benchmarks/bench_resume.py --quick    # a 1500-sample run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summary  # noqa: E402

QUICK_OVERRIDES = {
    "data": {"synthetic_n": 1500, "synthetic_n_eval": 0},
    "clustering": {"annotation_k": 20, "selection_k": 60},
    "selection": {"selection_num": 160},
    "schedule": {"final_step": 120},
    "probe": {"samples_per_cluster": 20},
}
"""The ``--quick`` run: 1500 samples, scaled-down clusters, budget and schedule."""


def _trivial(x: int) -> int:
    return x + 1


def _overhead_flow():
    """A flow calling a trivial task ``n`` times; returns the seconds the calls took inside the flow."""
    from prefect import flow, task

    trivial_task = task(_trivial, name="trivial", persist_result=False)

    @flow(name="bench-overhead")
    def overhead_flow(n: int) -> float:
        start = time.perf_counter()
        for i in range(n):
            trivial_task(i)
        return time.perf_counter() - start

    return overhead_flow


def _runs_on_one_server(cfg, work: Path, n_tasks: int) -> tuple[dict, float, dict, float, float]:
    """The selection run twice (first, then every stage cached) and the overhead flow, on one local server."""
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from deployments.setup import prefect_server
    from flows.progress_selection import progress_selection

    overhead_flow = _overhead_flow()
    with prefect_server(work / "home") as api_url:
        with temporary_settings(updates={PREFECT_API_URL: api_url, PREFECT_HOME: str(work / "home")}):
            t0 = time.perf_counter()
            first = progress_selection(config=cfg)
            t_first = time.perf_counter() - t0
            t0 = time.perf_counter()
            second = progress_selection(config=cfg)
            t_second = time.perf_counter() - t0
            in_flow = overhead_flow(n_tasks)
            APILogHandler().flush()
    return first, t_first, second, t_second, in_flow


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 1500-sample run instead of the demo run")
    parser.add_argument("--tasks", type=int, default=100, help="trivial task calls for the overhead figure")
    args = parser.parse_args()

    from progress_core.run.config import load_config

    work = Path(tempfile.mkdtemp(prefix="bench-resume-"))
    overrides = {"preset": "demo", "run_dir": str(work / "run")}
    if args.quick:
        overrides.update(QUICK_OVERRIDES)
    cfg = load_config(overrides=overrides)
    first, t_first, second, t_second, in_flow = _runs_on_one_server(cfg, work, args.tasks)
    t0 = time.perf_counter()
    for i in range(args.tasks):
        _trivial(i)
    plain = time.perf_counter() - t0

    assert [r["new"] for r in first["rounds"]] == [r["new"] for r in second["rounds"]]
    print(f"pool {first['n_samples']} samples, FINAL_STEP {first['final_step']}, {len(first['rounds'])} rounds")
    print(f"first run (everything computed)  : {t_first:8.1f} s")
    print(f"second run (every stage cached)  : {t_second:8.1f} s")
    print(f"ratio cached / first             : {t_second / t_first:8.1%}   (target <= 10%)")
    print(
        f"prefect task overhead            : {1000 * (in_flow - plain) / args.tasks:8.1f} ms per task "
        f"({args.tasks} trivial tasks: {in_flow:.2f} s in a flow vs {plain * 1e3:.3f} ms plain)"
    )
    print(f"run directory                    : {work / 'run'}")
    summary(
        "bench_resume", "cached re-run / first run", f"{t_second:.1f} s / {t_first:.1f} s ({t_second / t_first:.1%})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
