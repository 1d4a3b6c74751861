"""Does selection pay off? Held-out accuracy of progress, random and coincide at equal budgets, over seeds.

    python benchmarks/bench_quality.py                  # the sizes below (~35 min on a busy 2-core machine)
    python benchmarks/bench_quality.py --table-only DIR # recompute the table from a finished comparison
    python benchmarks/bench_quality.py --sweep selection.temperature=1.0,2.0   # also variants of progress

Runs ``progress compare`` (strategies × budgets × seeds, plus the full pool) against its own Prefect server on
the bundled synthetic pool, then prints per budget: mean ± sd of held-out accuracy per strategy, the paired
differences progress − random and progress − coincide (mean ± sd over seeds), the majority-answer baseline
and the smallest budget where progress is within 1 point of the full pool. Re-running continues: finished
runs are reused. The markdown table goes to ``<run-dir>/bench_quality.md``.

``--sweep FIELD=V1,V2`` (repeatable) also runs ``progress`` with each value of one config field in the same
run directory, so the random, coincide and full runs are shared, and adds a variant table: per variant and
budget, its accuracy and the paired differences against random and against progress with the defaults. The
variants' rows are kept in ``<run-dir>/variants.parquet``.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
import pandas as pd  # noqa: E402
from _common import headroom_shares, oracle_cells, paired_interval, summary  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
STRATEGIES = ("oracle", "random", "coincide", "progress")
ORACLES = ("oracle", "oracle_every_round", "oracle_clean")
"""The label-reading strategies, reported first (README "A learner that forgets" for the other two)."""
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


def _paired_diff(table: pd.DataFrame, budget: float, a: str, b: str) -> pd.Series:
    """Accuracy of ``a`` minus ``b`` per seed at ``budget`` (seeds where both ran)."""
    part = table[table["budget"] == budget].pivot_table(index="seed", columns="strategy", values="accuracy")
    if a not in part or b not in part:
        return pd.Series(dtype=float)
    return (part[a] - part[b]).dropna()


def _paired(table: pd.DataFrame, budget: float, a: str, b: str) -> str:
    diff = _paired_diff(table, budget, a, b)
    if diff.empty:
        return "-"
    return f"{diff.mean():+.3f} ± {diff.std():.3f}" if len(diff) > 1 else f"{diff.mean():+.3f}"


def quality_table(table: pd.DataFrame, majority: float | None) -> str:
    """The README table: one row per budget (module docstring)."""
    full = table[table["strategy"] == "full"]["accuracy"]
    budgets = sorted(b for b in table["budget"].unique() if b < 1.0)
    strategies = [s for s in (*ORACLES, *(x for x in STRATEGIES if x not in ORACLES)) if s in set(table["strategy"])]
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


def variant_table(table: pd.DataFrame, variants: pd.DataFrame) -> str:
    """One row per variant of ``progress`` and budget: accuracy, paired differences against random and default."""
    header = ["variant", "budget", "progress[variant]", "variant − random", "variant − progress (default)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    both = pd.concat([table, variants], ignore_index=True)
    for variant in variants["variant"].drop_duplicates():
        name = f"progress[{variant}]"
        for b in sorted(variants.loc[variants["variant"] == variant, "budget"].unique()):
            acc = variants[(variants["variant"] == variant) & (variants["budget"] == b)]["accuracy"]
            cells = [
                variant,
                f"{b:g}",
                _mean_sd(acc),
                _paired(both, b, name, "random"),
                _paired(both, b, name, "progress"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    notes = []
    for variant in variants["variant"].drop_duplicates():
        budgets = sorted(variants.loc[variants["variant"] == variant, "budget"].unique())
        wins = [_paired_diff(both, b, f"progress[{variant}]", "random") for b in budgets]
        beats = all(len(d) > 1 and d.mean() > d.std() for d in wins)
        notes.append(f"{variant} beats random at every budget (paired mean > its sd): {'yes' if beats else 'no'}")
    steps = both[both["budget"] < 1.0].groupby("budget")[["n_selected", "steps"]].nunique()
    notes.append(
        f"selected and trained samples and steps equal to the other strategies': {bool((steps == 1).all().all())}"
    )
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def headroom_table(table: pd.DataFrame, variants: pd.DataFrame | None = None) -> str:
    """Per budget: each oracle's ``− random`` first with its verdict (headroom when above 2 paired standard
    errors), then every other strategy and variant of ``progress`` against ``random`` as a paired 95 %
    t-interval, and the share of the headroom each captures ((method − random) / (oracle − random), against the
    oracle with the most headroom, only where there is headroom); README "Headroom pool and allocation
    variants"."""
    both = table if variants is None else pd.concat([table, variants], ignore_index=True)
    oracles = [s for s in ORACLES if s in set(table["strategy"])]
    others = [s for s in ("coincide", "progress") if s in set(table["strategy"])]
    if variants is not None:
        others += [f"progress[{v}]" for v in variants["variant"].drop_duplicates()]
    header = ["budget", *(f"{o} − random (headroom?)" for o in oracles), *(f"{s} − random" for s in others)]
    lines = ["| " + " | ".join([*header, "share of headroom"]) + " |", "|" + "---|" * (len(header) + 1)]
    for b in sorted(x for x in table["budget"].unique() if x < 1.0):
        heads, best = oracle_cells({o: _paired_diff(both, b, o, "random") for o in oracles})
        diffs = {s: _paired_diff(both, b, s, "random") for s in others}
        cells = [f"{b:g}", *heads, *(paired_interval(d) for d in diffs.values())]
        cells.append(headroom_shares(diffs, best, len(oracles)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def concept_table(concepts: pd.DataFrame) -> str:
    """Per concept: held-out accuracy at the largest budget per strategy and on the full pool (mean over seeds)."""
    largest = max(b for b in concepts["budget"].unique() if b < 1.0)
    part = concepts[(concepts["budget"] == largest) | (concepts["strategy"] == "full")]
    wide = part.pivot_table(index="concept", columns="strategy", values="accuracy", aggfunc="mean")
    cols = [c for c in dict.fromkeys((*STRATEGIES, *ORACLES, "full")) if c in wide.columns]
    lines = [f"| concept | {' | '.join(f'{c} @ {largest:g}' if c != 'full' else 'full' for c in cols)} |"]
    lines.append("|" + "---|" * (len(cols) + 1))
    lines += [f"| {c} | " + " | ".join(f"{r[k]:.2f}" for k in cols) + " |" for c, r in wide.iterrows()]
    return "\n".join(lines)


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _store_variants(run_dir: Path, variants: pd.DataFrame) -> None:
    """Add a sweep's rows to ``variants.parquet``, replacing earlier rows of the same variant."""
    path = run_dir / "variants.parquet"
    if path.is_file():
        kept = pd.read_parquet(path)
        variants = pd.concat([kept[~kept["variant"].isin(variants["variant"])], variants], ignore_index=True)
    variants.to_parquet(path)


def run_comparisons(run_dir: Path, args: argparse.Namespace) -> None:
    """The strategies' comparison, then one ``progress``-only comparison per ``--sweep`` in the same run
    directory; the plain comparison runs again last (all reused) so ``comparison.parquet`` is its table."""
    from deployments.setup import prefect_env, prefect_server

    home = run_dir / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    sets = [f"data.synthetic_n={args.n}", f"data.synthetic_n_eval={args.n_eval}", *BENCH_SETTINGS, *args.sets]
    common = [sys.executable, "-m", "progress_cli", "compare", "--run-dir", str(run_dir), "--budgets", args.budgets]
    common += ["--seeds", str(args.seeds)] + [x for s in sets for x in ("--set", s)]
    strategies = [x for s in args.strategies.split(",") for x in ("-s", s)]
    with prefect_server(home, log=home / "server.log") as api_url:
        env = prefect_env(api_url, home)
        env.update({"PYTHONPATH": str(REPO), "PREFECT_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false"})
        subprocess.run(common + strategies, cwd=REPO, env=env, check=True)
        for sweep in args.sweeps:
            subprocess.run(common + ["-s", "progress", "--no-full", "--sweep", sweep], cwd=REPO, env=env, check=True)
            _store_variants(run_dir, pd.read_parquet(run_dir / "comparison.parquet"))
        if args.sweeps:
            subprocess.run(common + strategies, cwd=REPO, env=env, check=True)


def report(run_dir: Path) -> str:
    """The markdown of a finished comparison: budgets, per concept, variants."""
    import json

    table = pd.read_parquet(run_dir / "comparison.parquet")
    majority = json.loads((run_dir / "comparison.json").read_text()).get("majority_baseline")
    text = quality_table(table, majority)
    concepts_path = run_dir / "comparison_concepts.parquet"
    if concepts_path.is_file():
        text += "\n\nPer concept (held-out accuracy, mean over seeds):\n\n" + concept_table(
            pd.read_parquet(concepts_path)
        )
    variants_path = run_dir / "variants.parquet"
    variants = pd.read_parquet(variants_path) if variants_path.is_file() else None
    if set(ORACLES) & set(table["strategy"]):
        text += "\n\nAgainst random, paired by seed (95 % t-intervals), oracle first:\n\n" + headroom_table(
            table, variants
        )
    if variants is not None:
        text += "\n\nVariants of progress (same random runs; differences paired by seed):\n\n" + variant_table(
            table, variants
        )
    header = f"Measured {date.today().isoformat()} on {_machine()}; {table['seed'].nunique()} seeds.\n\n"
    return header + text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/bench/quality"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budgets", default="0.1,0.2,0.3")
    parser.add_argument("--n", type=int, default=2000, help="pool size")
    parser.add_argument("--n-eval", type=int, default=400, help="held-out split size")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra config override")
    parser.add_argument(
        "--sweep", dest="sweeps", action="append", default=[], help="FIELD=V1,V2: variants of progress (repeatable)"
    )
    parser.add_argument(
        "--strategies", default=",".join(STRATEGIES), help="comma-separated; oracle needs a bundled pool"
    )
    parser.add_argument("--table-only", action="store_true", help="only print the table of --run-dir")
    args = parser.parse_args()
    run_dir = args.run_dir.resolve()
    if not args.table_only:
        started = time.monotonic()
        run_comparisons(run_dir, args)
        print(f"\ncomparison took {time.monotonic() - started:.0f} s")
    text = report(run_dir)
    (run_dir / "bench_quality.md").write_text(text + "\n")
    print("\n" + text)
    table = pd.read_parquet(run_dir / "comparison.parquet")
    largest = max(b for b in table["budget"].unique() if b < 1.0)
    summary("bench_quality", f"progress − random at {largest:g}", _paired(table, largest, "progress", "random"))


if __name__ == "__main__":
    main()
