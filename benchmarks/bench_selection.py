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
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from progress_core.rounds import apply_round, commit_round  # noqa: E402
from progress_core.selection import SelectionHistory, select  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summary  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def main(argv: list[str] | None = None) -> None:
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

    cluster_ids, selected, remaining, acc_prev, acc_now = make_inputs(args.n, args.clusters, args.warmup)
    history = SelectionHistory(acc_prev, acc_now, selected)
    print(
        f"pool {args.n} samples in {args.clusters} clusters; warm-up {selected.size}, remaining "
        f"{remaining.size}; budget {args.budget}; {len(acc_now)} clusters probed; median of {args.repeat}"
    )

    def ours_compute():
        r = select("progress", remaining, cluster_ids, history, args.budget, 0)
        return r, apply_round(r.sample_ids, selected, remaining)

    ours_compute()
    t_ours, (result, _) = timed(ours_compute, args.repeat)
    with tempfile.TemporaryDirectory() as tmp:

        def ours_io():
            r = select("progress", remaining, cluster_ids, history, args.budget, 0)
            return commit_round(tmp, 1, 469, r.sample_ids, selected, remaining)

        t_ours_io, _ = timed(ours_io, args.repeat)
        parquet_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6

    def ours_full_budget():
        r = select("progress", remaining, cluster_ids, history, args.budget, 0, redistribute_overflow=True)
        return r, apply_round(r.sample_ids, selected, remaining)

    t_ours_full, (result_full, _) = timed(ours_full_budget, args.repeat)
    rss_ours = peak_rss_mb()
    print(
        f"ours: selected {result.sample_ids.size} (exploit {result.n_exploit}, explore {result.n_explore}); "
        f"notes: {result.notes}"
    )

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

        def original_dump():
            for name, obj in (
                ("fastest_acc_data.json", fastest),
                ("Remaining_after.json", remaining_after),
                ("Selected_until.json", selected_until),
                ("fastest_selected_cluster_accuracies.json", probs),
            ):
                with open(Path(tmp) / name, "w") as f:
                    json.dump(obj, f)

        t_dump, _ = timed(original_dump, 1)
        json_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6
    t_orig_io = t_orig + t_dump

    m = args.quadratic_sample
    sub = pool_rows[:m]
    t_quad_sub, _ = timed(lambda: original_remove_dict_equality(sub, fastest), 1)
    t_quad = t_quad_sub * len(pool_rows) / m
    rss_all = peak_rss_mb()

    print(f"original: selected {len(fastest)}")
    print()
    print(f"{'':44s} {'ours':>10s} {'original':>12s} {'ratio':>9s}")
    print(f"{'compute (select + set ops)':44s} {t_ours * 1e3:8.1f}ms {t_orig * 1e3:10.1f}ms {t_orig / t_ours:8.1f}x")
    print(
        f"{'with I/O (Parquet vs json.dump of 3 files)':44s} {t_ours_io * 1e3:8.1f}ms {t_orig_io * 1e3:10.1f}ms "
        f"{t_orig_io / t_ours_io:8.1f}x"
    )
    print(f"{'  of which output files':44s} {parquet_mb:8.1f}MB {json_mb:10.1f}MB")
    print(
        f"{'compute, --redistribute-overflow':44s} {t_ours_full * 1e3:8.1f}ms {'':12s} "
        f"({result_full.sample_ids.size} picked of {args.budget})"
    )
    print(
        f"{'original remove_samples, O(N*M) dict equality':44s} {'':10s} {t_quad:10.1f}s  "
        f"(extrapolated from {m} of {len(pool_rows)} rows: {t_quad_sub:.2f}s)"
    )
    print(
        f"{'compute incl. O(N*M) remove (extrapolated)':44s} {t_ours * 1e3:8.1f}ms {t_orig + t_quad:10.1f}s  "
        f"{(t_orig + t_quad) / t_ours:8.0f}x"
    )
    print(f"peak RSS: after ours {rss_ours:.0f} MB; after the original way (dict rows) {rss_all:.0f} MB")
    targets = [
        ("compute <= 50 ms", max(t_ours, t_ours_full) <= 0.05),
        ("with I/O <= 1 s", t_ours_io <= 1.0),
        (">= 20x faster than the original (compute)", t_orig / t_ours >= 20),
        (">= 20x faster than the original (with I/O)", t_orig_io / t_ours_io >= 20),
    ]
    print("targets: " + "; ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in targets))
    summary(
        "bench_selection",
        f"one round, {args.n} samples, compute",
        f"{t_ours * 1e3:.0f} ms vs {t_orig * 1e3:.0f} ms ({t_orig / t_ours:.0f}x)",
    )
    summary(
        "bench_selection",
        "one round with I/O",
        f"{t_ours_io * 1e3:.0f} ms vs {t_orig_io * 1e3:.0f} ms ({t_orig_io / t_ours_io:.0f}x)",
    )


if __name__ == "__main__":
    main()
