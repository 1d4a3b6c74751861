"""Does selection pay off? Held-out accuracy of progress, random and coincide at equal budgets, over seeds.

    python benchmarks/bench_quality.py                  # the sizes below (~35 min on a busy 2-core machine)
    python benchmarks/bench_quality.py --table-only DIR # recompute the table from a finished comparison

Runs ``progress compare`` (strategies × budgets × seeds, plus the full pool) against its own Prefect server on
the bundled synthetic pool, then prints per budget: mean ± sd of held-out accuracy per strategy, the paired
differences progress − random and progress − coincide (mean ± sd over seeds), the majority-answer baseline
and the smallest budget where progress is within 1 point of the full pool. Re-running continues: finished
runs are reused. The markdown table goes to ``<run-dir>/bench_quality.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
STRATEGIES = ("progress", "random", "coincide")
BENCH_SETTINGS = (
    "clustering.annotation_k=16",
    "clustering.selection_k=60",
    "warmup.fractions=[0.03,0.05]",
    "selection.selection_num=128",
    "training.global_batch_size=8",
    "training.num_threads=1",
    "training.model.align_steps=300",
    "probe.samples_per_cluster=12",
    "probe.max_new_tokens=8",
)
"""Sizes that finish in about 35 minutes on a busy 2-core machine: 16 annotation clusters (about one per
concept) probed on 12 held-out samples each, warm-up 3 % + 2 % of the pool, rounds of 128 samples; every
strategy of a seed starts from the same tiny LLaVA after 300 steps of stage-1 caption alignment."""


def _mean_sd(values: pd.Series) -> str:
    sd = values.std() if len(values) > 1 else float("nan")
    return f"{values.mean():.3f} ± {sd:.3f}" if sd == sd else f"{values.mean():.3f}"


def _paired(table: pd.DataFrame, budget: float, a: str, b: str) -> str:
    part = table[table["budget"] == budget].pivot_table(index="seed", columns="strategy", values="accuracy")
    if a not in part or b not in part:
        return "-"
    diff = (part[a] - part[b]).dropna()
    return f"{diff.mean():+.3f} ± {diff.std():.3f}" if len(diff) > 1 else f"{diff.mean():+.3f}"


def quality_table(table: pd.DataFrame, majority: float | None) -> str:
    """The README table: one row per budget (module docstring)."""
    full = table[table["strategy"] == "full"]["accuracy"]
    budgets = sorted(b for b in table["budget"].unique() if b < 1.0)
    strategies = [s for s in STRATEGIES if s in set(table["strategy"])]
    header = ["budget"] + strategies + ["progress − random", "progress − coincide"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    within = None
    for b in budgets:
        part = table[table["budget"] == b]
        cells = [f"{b:g}"]
        cells += [_mean_sd(part[part["strategy"] == s]["accuracy"]) for s in strategies]
        cells += [_paired(table, b, "progress", "random"), _paired(table, b, "progress", "coincide")]
        lines.append("| " + " | ".join(cells) + " |")
        prog = part[part["strategy"] == "progress"]["accuracy"]
        if within is None and len(full) and len(prog) and prog.mean() >= full.mean() - 0.01:
            within = b
    notes = []
    if len(full):
        notes.append(f"full pool (1 epoch, {len(full)} seeds): {_mean_sd(full)}")
    if majority is not None:
        notes.append(f"majority-answer baseline: {majority:.3f}")
    notes.append(
        "smallest budget where progress is within 1 point of full: " + (f"{within:g}" if within else "none measured")
    )
    steps = table.groupby(["budget", "strategy"])[["n_selected", "steps"]].agg(["min", "max"])
    equal = all(steps[(c, "min")].groupby(level=0).nunique().eq(1).all() for c in ("n_selected", "steps"))
    equal = equal and all(steps[(c, "min")].equals(steps[(c, "max")]) for c in ("n_selected", "steps"))
    notes.append("selected and trained samples and steps equal across strategies at every budget: " + str(equal))
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def concept_table(concepts: pd.DataFrame) -> str:
    """Per concept: held-out accuracy at the largest budget per strategy and on the full pool (mean over seeds)."""
    largest = max(b for b in concepts["budget"].unique() if b < 1.0)
    part = concepts[(concepts["budget"] == largest) | (concepts["strategy"] == "full")]
    wide = part.pivot_table(index="concept", columns="strategy", values="accuracy", aggfunc="mean")
    cols = [c for c in (*STRATEGIES, "full") if c in wide.columns]
    lines = [f"| concept | {' | '.join(f'{c} @ {largest:g}' if c != 'full' else 'full' for c in cols)} |"]
    lines.append("|" + "---|" * (len(cols) + 1))
    lines += [f"| {c} | " + " | ".join(f"{r[k]:.2f}" for k in cols) + " |" for c, r in wide.iterrows()]
    return "\n".join(lines)


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/bench/quality"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budgets", default="0.1,0.2,0.3")
    parser.add_argument("--n", type=int, default=2000, help="pool size")
    parser.add_argument("--n-eval", type=int, default=400, help="held-out split size")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra config override")
    parser.add_argument("--table-only", action="store_true", help="only print the table of --run-dir")
    args = parser.parse_args()
    run_dir = args.run_dir.resolve()
    if not args.table_only:
        from deployments.setup import prefect_env, prefect_server

        home = run_dir / "prefect-home"
        home.mkdir(parents=True, exist_ok=True)
        sets = [f"data.synthetic_n={args.n}", f"data.synthetic_n_eval={args.n_eval}", *BENCH_SETTINGS, *args.sets]
        command = [sys.executable, "-m", "cli", "compare", "--run-dir", str(run_dir), "--budgets", args.budgets]
        command += ["--seeds", str(args.seeds)] + [x for s in STRATEGIES for x in ("-s", s)]
        command += [x for s in sets for x in ("--set", s)]
        started = time.monotonic()
        with prefect_server(home, log=home / "server.log") as api_url:
            env = prefect_env(api_url, home)
            env.update({"PYTHONPATH": str(REPO), "PREFECT_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false"})
            subprocess.run(command, cwd=REPO, env=env, check=True)
        print(f"\ncomparison took {time.monotonic() - started:.0f} s")
    import json

    table = pd.read_parquet(run_dir / "comparison.parquet")
    majority = json.loads((run_dir / "comparison.json").read_text()).get("majority_baseline")
    text = quality_table(table, majority)
    concepts_path = run_dir / "comparison_concepts.parquet"
    if concepts_path.is_file():
        text += "\n\nPer concept (held-out accuracy, mean over seeds):\n\n" + concept_table(
            pd.read_parquet(concepts_path)
        )
    header = f"Measured {date.today().isoformat()} on {_machine()}; {table['seed'].nunique()} seeds.\n\n"
    (run_dir / "bench_quality.md").write_text(header + text + "\n")
    print("\n" + header + text)


if __name__ == "__main__":
    main()
