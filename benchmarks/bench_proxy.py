"""Proxy screen of the allocation rules: strategies × budgets × seeds on the null and the headroom pool.

    python benchmarks/bench_proxy.py                        # 50K pools, 20 seeds, 10/20/30 % (README timing)
    python benchmarks/bench_proxy.py --n 3000 --seeds 3     # a quick look
    python benchmarks/bench_proxy.py --table-only           # the tables of a finished run directory

Generates each pool once (``progress_core.data.headroom``, ``headroom: none`` and ``default``), encodes its selection
features once, then runs ``progress_core.selection.proxy.run_proxy`` for the registered strategies (README "Does
selection pay off?" and "A learner that forgets": random, the three label oracles, the paper's rule, damped,
its two registered variants and balanced; ``--variants`` picks some) on 2 processes. Reports first the learning curve of ``random`` and ``full``, then ``oracle − random`` (headroom:
> 2 paired SE), then per budget mean ± sd and paired differences against ``random`` with 95 % t-intervals
and the share of the oracle's headroom each method captures. Rows go to ``<run-dir>/proxy.parquet``;
finished (pool, strategy, budget, seed) rows are reused.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import pandas as pd  # noqa: E402
from _common import headroom_shares, oracle_cells, paired_interval, summary  # noqa: E402

VARIANTS = {
    "random": ("random", {}),
    "oracle": ("oracle", {}),
    "paper": ("progress", {"allocation": "paper"}),
    "damped": ("progress", {"allocation": "damped"}),
    "damped[gain]": ("progress", {"allocation": "damped", "progress_signal": "gain"}),
    "damped[uniform 0.2]": ("progress", {"allocation": "damped", "uniform_share": 0.2}),
    "oracle[every round]": ("oracle_every_round", {}),
    "balanced": ("progress", {"allocation": "balanced"}),
    "oracle[clean]": ("oracle_clean", {}),
    "damped[2 SE]": ("progress", {"allocation": "damped", "progress_signal": "abs_change_2se"}),
}
"""The registered strategies and variants (README "Headroom pool and allocation variants", "A learner that
forgets")."""
ORACLES = ("oracle", "oracle[every round]", "oracle[clean]")

_DATA = {}


def _worker_init(pool_dirs: dict, settings_json: str) -> None:
    """Spawned, not forked: a forked child of a process that ran faiss spins forever in OpenMP's sched_yield."""
    import faiss
    import torch

    from progress_core.selection.proxy import ProxySettings, load_proxy_data

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    settings = ProxySettings.model_validate_json(settings_json)
    for name, path in pool_dirs.items():
        _DATA[name] = (load_proxy_data(path, settings), settings)


def _run(job: tuple) -> dict:
    from progress_core.selection.proxy import run_proxy

    pool, variant, budget, seed = job
    data, settings = _DATA[pool]
    strategy, options = VARIANTS.get(variant, ("full", {}))
    row = run_proxy(data, strategy, budget, seed, settings, options)
    row.update(pool=pool, variant=variant)
    return row


def prepare_pools(run_dir: Path, n: int, n_eval: int, pools: list[str]) -> dict:
    """Generate each pool and its feature caches once (reused when present)."""
    from progress_core.data.headroom import generate_headroom_pool
    from progress_core.selection.proxy import ProxySettings, load_proxy_data

    dirs = {}
    for name in pools:
        out = run_dir / f"pool-{name}-{n}"
        if not (out / "labels.parquet").is_file():
            generate_headroom_pool(out, n=n, n_eval=n_eval, seed=0, headroom=name)
        load_proxy_data(out, ProxySettings())
        dirs[name] = str(out)
    return dirs


def _paired(part: pd.DataFrame, a: str, b: str) -> pd.Series:
    wide = part.pivot_table(index="seed", columns="variant", values="accuracy")
    return (wide[a] - wide[b]).dropna() if a in wide and b in wide else pd.Series(dtype=float)


def pool_table(rows: pd.DataFrame, pool: str) -> str:
    """Markdown for one pool: learning curve, headroom, then every variant against random."""
    part = rows[rows["pool"] == pool]
    full = part[part["variant"] == "full"]["accuracy"]
    lines = [f"**Pool `{pool}`** — learning curve of the proxy student (random at each budget, full pool once):", ""]
    curve = part[part["variant"] == "random"].groupby("budget")["accuracy"].agg(["mean", "std"])
    lines.append(
        ", ".join(f"random @ {b:g}: {r['mean']:.3f} ± {r['std']:.3f}" for b, r in curve.iterrows())
        + (f"; full: {full.mean():.3f} ± {full.std():.3f}" if len(full) else "")
    )
    shown = [v for v in VARIANTS if v in set(part["variant"])]
    lines += ["", "| budget | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
    budgets = sorted(b for b in part["budget"].unique() if b < 1.0)
    for b in budgets:
        cell = part[part["budget"] == b]
        stats = cell.groupby("variant")["accuracy"].agg(["mean", "std"])
        lines.append(
            f"| {b:g} | "
            + " | ".join(
                f"{stats.loc[v, 'mean']:.3f} ± {stats.loc[v, 'std']:.3f}" if v in stats.index else "-" for v in shown
            )
            + " |"
        )
    oracles = [v for v in ORACLES if v in set(part["variant"])]
    others = [v for v in shown if v not in ("random", *ORACLES)]
    header = [*(f"{o} − random (headroom?)" for o in oracles), *(f"{v} − random" for v in others)]
    lines += ["", "| budget | " + " | ".join(header) + " | share of headroom captured |"]
    lines.append("|---|" + "---|" * (len(header) + 1))
    for b in budgets:
        cell = part[part["budget"] == b]
        cells, best = oracle_cells({o: _paired(cell, o, "random") for o in oracles})
        diffs = {v: _paired(cell, v, "random") for v in others}
        cells += [paired_interval(d) for d in diffs.values()]
        shares = headroom_shares(diffs, best, len(oracles))
        lines.append(f"| {b:g} | " + " | ".join(cells) + f" | {shares} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/bench/proxy"))
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--n-eval", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budgets", default="0.1,0.2,0.3")
    parser.add_argument("--pools", default="none,default")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    run_dir = args.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "proxy.parquet"
    rows = pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=["pool", "variant", "budget", "seed"])
    pools = args.pools.split(",")
    if not args.table_only:
        rows = _run_grid(run_dir, args, pools, rows, path)
    rows = rows[rows["pool"].isin(pools)]
    header = (
        f"Measured {date.today().isoformat()} on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; pool {args.n}, {rows['seed'].nunique()} seeds; paired 95 % t-intervals."
    )
    text = header + "\n\n" + "\n\n".join(pool_table(rows, p) for p in pools)
    (run_dir / "bench_proxy.md").write_text(text + "\n")
    print("\n" + text)
    last = max(float(b) for b in args.budgets.split(","))
    part = rows[(rows["pool"] == pools[-1]) & (rows["budget"] == last)]
    summary(
        "bench_proxy", f"damped − random at {last:g} ({pools[-1]})", paired_interval(_paired(part, "damped", "random"))
    )


def _run_grid(run_dir: Path, args, pools: list[str], rows: pd.DataFrame, path: Path) -> pd.DataFrame:
    from multiprocessing import get_context

    from progress_core.selection.proxy import ProxySettings

    started = time.monotonic()
    dirs = prepare_pools(run_dir, args.n, args.n_eval, pools)
    print(f"pools ready in {time.monotonic() - started:.0f} s", flush=True)
    done = set(zip(rows["pool"], rows["variant"], rows["budget"].astype(float), rows["seed"].astype(int)))
    budgets = [float(b) for b in args.budgets.split(",")]
    variants = args.variants.split(",")
    jobs = [(p, v, b, s) for s in range(args.seeds) for p in pools for v in [*variants, "full"] for b in budgets]
    jobs = list(dict.fromkeys((p, v, 1.0, s) if v == "full" else (p, v, b, s) for p, v, b, s in jobs))
    jobs = [j for j in jobs if j not in done]
    started = time.monotonic()
    new: list[dict] = []
    spawn = get_context("spawn")
    with spawn.Pool(args.workers, _worker_init, (dirs, ProxySettings().model_dump_json())) as workers:
        for row in workers.imap_unordered(_run, jobs, chunksize=4):
            new.append(row)
            if len(new) % 50 == 0 or len(new) == len(jobs):
                rows = _store(run_dir, path, rows, new[-50:] if len(new) % 50 == 0 else new[-(len(new) % 50) :])
                print(f"{len(new)} / {len(jobs)} proxy runs, {time.monotonic() - started:.0f} s", flush=True)
    return rows


def _store(run_dir: Path, path: Path, rows: pd.DataFrame, new: list[dict]) -> pd.DataFrame:
    """Append finished runs to ``proxy.parquet`` (and their per-concept accuracies), so a stopped screen keeps them."""
    fresh = pd.DataFrame(new).drop(columns=["concepts"])
    rows = pd.concat([rows, fresh], ignore_index=True) if len(rows) else fresh
    rows.to_parquet(path)
    concepts = pd.DataFrame(
        [{**{k: r[k] for k in ("pool", "variant", "budget", "seed")}, **r["concepts"]} for r in new]
    )
    concepts_path = run_dir / "proxy_concepts.parquet"
    if concepts_path.is_file():
        concepts = pd.concat([pd.read_parquet(concepts_path), concepts], ignore_index=True)
    concepts.to_parquet(concepts_path)
    return rows


if __name__ == "__main__":
    main()
