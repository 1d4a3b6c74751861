"""One PROGRESS selection round (docs/algorithm.md#selection): ours vs the original scripts' way, side by side.

Ours: ``selection.select("progress", ...)`` on sample_id arrays + ``rounds.apply_round`` set operations;
"with I/O" adds ``commit_round``'s three Parquet files (new, selected_until, remaining_after).
Original way (acc_sort.py + concat_jsons.py): rows as Python dicts carrying cluster_id/index,
``random.shuffle`` of the pool + per-cluster take of the first n, exploration by ``random.sample`` over a
list comprehension, ``remove_samples`` keyed on ``index`` (the released O(N·M) dict-equality variant is
timed on a subsample and extrapolated, labelled as such), list concatenation, ``json.dump`` of the three
files. JSON loading is left out on both sides (both start from data in memory).

    python benchmarks/bench_selection.py            # 665K samples, 1000 clusters, 7500 picked
    python benchmarks/bench_selection.py --quick    # 66.5K samples, 100 clusters, 750 picked
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from progress_core.selection.context import SelectionHistory, SelectionResult
from progress_core.selection.rounds import apply_round, commit_round
from progress_core.selection.strategies import select

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import peak_rss_mb, summary  # noqa: E402


def make_inputs(n: int, k: int, warm: int, seed: int = 0):
    """Imbalanced clusters (log-normal sizes), a warm-up set, and accuracy tables at two probes of
    at most 100 samples per cluster of the warm-up set, accuracy drifting by a few points per cluster."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 1.0, k)
    cluster_ids = rng.choice(k, size=n, p=weights / weights.sum()).astype(np.int64)
    perm = rng.permutation(n)
    selected = np.sort(perm[:warm])
    remaining = np.sort(perm[warm:])
    probe_n = np.minimum(np.bincount(cluster_ids[selected], minlength=k), 100)
    probed = np.flatnonzero(probe_n > 0)
    base = rng.beta(2, 2, k)
    prev_correct = rng.binomial(probe_n, base)
    now_correct = rng.binomial(probe_n, np.clip(base + rng.normal(0.02, 0.08, k), 0, 1))

    def table(correct):
        nn = probe_n[probed]
        return pd.DataFrame(
            {
                "cluster_id": probed,
                "n": nn,
                "correct": correct[probed],
                "unjudged": np.zeros(probed.size, dtype=np.int64),
                "accuracy": correct[probed] / nn,
            }
        )

    return cluster_ids, selected, remaining, table(prev_correct), table(now_correct)


def original_rows(ids: np.ndarray, cluster_ids: np.ndarray) -> list[dict]:
    return [
        {
            "id": f"{i:012d}",
            "image": f"coco/train2017/{i:012d}.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat is shown?"},
                {"from": "gpt", "value": "A thing."},
            ],
            "cluster_id": int(c),
            "dist_to_cent": 0.5,
            "index": int(i),
        }
        for i, c in zip(ids.tolist(), cluster_ids[ids].tolist())
    ]


def original_select(pool: list[dict], prev: dict, cur: dict, budget: int, temperature: float = 0.5) -> tuple:
    """acc_sort.py's compare + relative-change softmax selection over dict rows (docs/algorithm.md#selection)."""
    rel = {}
    for c, v in cur["cluster_accuracies"].items():
        a_prev = prev["cluster_accuracies"][c]["accuracy"] if c in prev["cluster_accuracies"] else 0
        if a_prev == 0:
            a_prev = 1 / v["total"]
        rel[c] = (v["accuracy"] - a_prev) / a_prev
    avail = defaultdict(int)
    for s in pool:
        avail[str(s["cluster_id"])] += 1
    pos = [c for c in rel if rel[c] > 0 and avail[c] > 0]
    z = [rel[c] / temperature for c in pos]
    m = max(z)
    e = [math.exp(x - m) for x in z]
    total = sum(e)
    probs = {c: x / total for c, x in zip(pos, e)}
    quota = {int(c): min(int(0.9 * budget * probs[c]), avail[c]) for c in pos}
    pool = list(pool)
    random.shuffle(pool)
    taken = defaultdict(int)
    exploit = []
    for s in pool:
        c = s["cluster_id"]
        if c in quota and taken[c] < quota[c]:
            exploit.append(s)
            taken[c] += 1
    pos_set = set(quota)
    others = [s for s in pool if s["cluster_id"] not in pos_set]
    extra = random.sample(others, min(int(0.1 * budget), len(others)))
    return exploit + extra, probs


def original_remove_by_index(pool: list[dict], removed: list[dict]) -> list[dict]:
    gone = {s["index"] for s in removed}
    return [s for s in pool if s["index"] not in gone]


def original_remove_dict_equality(pool: list[dict], removed: list[dict]) -> list[dict]:
    return [s for s in pool if s not in removed]


def to_original_json(table: pd.DataFrame) -> dict:
    return {
        "cluster_accuracies": {
            str(c): {"correct": int(k), "total": int(n), "accuracy": float(a)}
            for c, n, k, a in zip(table["cluster_id"], table["n"], table["correct"], table["accuracy"])
        }
    }


def timed(fn, repeat: int) -> tuple[float, object]:
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10x smaller: 66.5K samples, 100 clusters, 750 picked")
    ap.add_argument("--n", type=int, default=665_000)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--budget", type=int, default=7500)
    ap.add_argument("--warmup", type=int, default=60_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--quadratic-sample",
        type=int,
        default=2000,
        help="pool rows on which the O(N*M) dict-equality remove_samples is timed",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.clusters, args.budget, args.warmup = 66_500, 100, 750, 6_000
    return args


ORIGINAL_RULES = {"redistribute_overflow": False, "fallback_when_no_progress": "original"}
"""The original scripts' quota rules, so our timed round picks what theirs picks (docs/algorithm.md#selection)."""


@dataclass
class OursTimes:
    """Our round's median seconds under the original's rules (compute, with its Parquet writes) and with our
    defaults (overflow redistributed, the whole budget spent)."""

    compute: float
    with_io: float
    full_budget: float
    parquet_mb: float
    result: SelectionResult
    result_full: SelectionResult
    peak_mb: float


@dataclass
class OriginalTimes:
    """The original scripts' way: compute, with ``json.dump`` of its files, and the O(N*M) remove extrapolated."""

    compute: float
    with_io: float
    json_mb: float
    n_selected: int
    quadratic: float
    quadratic_sample: float
    n_pool: int
    peak_mb: float


def _time_ours(args, cluster_ids, selected, remaining, history) -> OursTimes:
    def ours_compute():
        r = select("progress", remaining, cluster_ids, history, args.budget, 0, **ORIGINAL_RULES)
        return r, apply_round(r.sample_ids, selected, remaining)

    ours_compute()
    t_ours, (result, _) = timed(ours_compute, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:

        def ours_io():
            r = select("progress", remaining, cluster_ids, history, args.budget, 0, **ORIGINAL_RULES)
            return commit_round(tmp, 1, 469, r.sample_ids, selected, remaining)

        t_ours_io, _ = timed(ours_io, args.repeat)
        parquet_mb = _dir_mb(tmp)

    def ours_full_budget():
        r = select("progress", remaining, cluster_ids, history, args.budget, 0)
        return r, apply_round(r.sample_ids, selected, remaining)

    t_ours_full, (result_full, _) = timed(ours_full_budget, args.repeat)
    return OursTimes(t_ours, t_ours_io, t_ours_full, parquet_mb, result, result_full, peak_rss_mb())


def _dump_original_files(tmp: str, fastest, remaining_after, selected_until, probs) -> None:
    for name, obj in (
        ("fastest_acc_data.json", fastest),
        ("Remaining_after.json", remaining_after),
        ("Selected_until.json", selected_until),
        ("fastest_selected_cluster_accuracies.json", probs),
    ):
        with open(Path(tmp) / name, "w") as f:
            json.dump(obj, f)


def _time_original(args, cluster_ids, selected, remaining, acc_prev, acc_now) -> OriginalTimes:
    pool_rows = original_rows(remaining, cluster_ids)
    selected_rows = original_rows(selected, cluster_ids)
    prev_json, now_json = to_original_json(acc_prev), to_original_json(acc_now)
    random.seed(42)

    def original_compute():
        fastest, probs = original_select(pool_rows, prev_json, now_json, args.budget)
        remaining_after = original_remove_by_index(pool_rows, fastest)
        selected_until = selected_rows + fastest
        return fastest, probs, remaining_after, selected_until

    orig_repeat = max(1, min(args.repeat, 3))
    t_orig, (fastest, probs, remaining_after, selected_until) = timed(original_compute, orig_repeat)
    with tempfile.TemporaryDirectory() as tmp:
        t_dump, _ = timed(lambda: _dump_original_files(tmp, fastest, remaining_after, selected_until, probs), 1)
        json_mb = _dir_mb(tmp)

    m = args.quadratic_sample
    sub = pool_rows[:m]
    t_quad_sub, _ = timed(lambda: original_remove_dict_equality(sub, fastest), 1)
    t_quad = t_quad_sub * len(pool_rows) / m
    return OriginalTimes(
        t_orig, t_orig + t_dump, json_mb, len(fastest), t_quad, t_quad_sub, len(pool_rows), peak_rss_mb()
    )


def _dir_mb(path: str) -> float:
    return sum(p.stat().st_size for p in Path(path).iterdir()) / 1e6


def _print_table(args, ours: OursTimes, orig: OriginalTimes) -> None:
    m = args.quadratic_sample
    print(f"{'':44s} {'ours':>10s} {'original':>12s} {'ratio':>9s}")
    print(
        f"{'compute (select + set ops)':44s} {ours.compute * 1e3:8.1f}ms {orig.compute * 1e3:10.1f}ms "
        f"{orig.compute / ours.compute:8.1f}x"
    )
    print(
        f"{'with I/O (Parquet vs json.dump of 3 files)':44s} {ours.with_io * 1e3:8.1f}ms {orig.with_io * 1e3:10.1f}ms "
        f"{orig.with_io / ours.with_io:8.1f}x"
    )
    print(f"{'  of which output files':44s} {ours.parquet_mb:8.1f}MB {orig.json_mb:10.1f}MB")
    print(
        f"{'compute, our defaults (whole budget)':44s} {ours.full_budget * 1e3:8.1f}ms {'':12s} "
        f"({ours.result_full.sample_ids.size} picked of {args.budget})"
    )
    print(
        f"{'original remove_samples, O(N*M) dict equality':44s} {'':10s} {orig.quadratic:10.1f}s  "
        f"(extrapolated from {m} of {orig.n_pool} rows: {orig.quadratic_sample:.2f}s)"
    )
    print(
        f"{'compute incl. O(N*M) remove (extrapolated)':44s} {ours.compute * 1e3:8.1f}ms "
        f"{orig.compute + orig.quadratic:10.1f}s  {(orig.compute + orig.quadratic) / ours.compute:8.0f}x"
    )
    print(f"peak RSS: after ours {ours.peak_mb:.0f} MB; after the original way (dict rows) {orig.peak_mb:.0f} MB")


def _print_targets_and_summary(args, ours: OursTimes, orig: OriginalTimes) -> None:
    targets = [
        ("compute <= 50 ms", max(ours.compute, ours.full_budget) <= 0.05),
        ("with I/O <= 1 s", ours.with_io <= 1.0),
        (">= 20x faster than the original (compute)", orig.compute / ours.compute >= 20),
        (">= 20x faster than the original (with I/O)", orig.with_io / ours.with_io >= 20),
    ]
    print("targets: " + "; ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in targets))
    summary(
        "bench_selection",
        f"one round, {args.n} samples, compute",
        f"{ours.compute * 1e3:.0f} ms vs {orig.compute * 1e3:.0f} ms ({orig.compute / ours.compute:.0f}x)",
    )
    summary(
        "bench_selection",
        "one round with I/O",
        f"{ours.with_io * 1e3:.0f} ms vs {orig.with_io * 1e3:.0f} ms ({orig.with_io / ours.with_io:.0f}x)",
    )


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    cluster_ids, selected, remaining, acc_prev, acc_now = make_inputs(args.n, args.clusters, args.warmup)
    history = SelectionHistory(acc_prev, acc_now, selected)
    print(
        f"pool {args.n} samples in {args.clusters} clusters; warm-up {selected.size}, remaining "
        f"{remaining.size}; budget {args.budget}; {len(acc_now)} clusters probed; median of {args.repeat}"
    )
    ours = _time_ours(args, cluster_ids, selected, remaining, history)
    result = ours.result
    print(
        f"ours: selected {result.sample_ids.size} (exploit {result.n_exploit}, explore {result.n_explore}); "
        f"notes: {result.notes}"
    )
    orig = _time_original(args, cluster_ids, selected, remaining, acc_prev, acc_now)
    print(f"original: selected {orig.n_selected}")
    print()
    _print_table(args, ours, orig)
    _print_targets_and_summary(args, ours, orig)


if __name__ == "__main__":
    main()
