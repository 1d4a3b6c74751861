"""The whole CPU path of a PROGRESS run at LLaVA-665K size, stage by stage, beside the original scripts' way.

Generates (not timed) a LLaVA-shaped pool JSON (coco/gqa/ocr_vqa/textvqa/vg paths in the real proportions,
~6% text-only rows, multi-turn conversations, ~1% repeated ids; no image files) and stored features of the
real width (DINOv2-L image part 1024-d float16, MiniLM text part 384-d float32, in pool order, clustered
random vectors; text-only rows have a zero image part), then runs each stage in its own fresh process
(seconds = the stage call; peak RSS = that process's VmHWM, import floor included):

  manifest        LLaVA JSON -> Parquet manifest           | original way: json.load + pandas.DataFrame
  features-import image.npy + text.npy -> features.npy     | original way: np.load both, concatenate, normalise
  kmeans[annot.]  faiss spherical k-means, paper k=1000    | (raw faiss: see bench_kmeans.py)
  kmeans[select.] faiss spherical k-means, paper k=5000    |
  warmup-pools    COINCIDE W1/W2 on the selection clusters | (original greedy: see bench_coincide.py)
  probe-tables    commit W1, W2 + two synthetic probe tables (per-cluster accuracies)
  rounds          5 PROGRESS selection rounds (+ a synthetic probe after each) | original way: dict rows,
                  shuffle + per-cluster take, remove by index, json.dump of new/selected/remaining
  export          the original's file names (Top_50K.json, Selected_until_<step>.json, ...) | original
                  way: json.load of the pool + json.dump of the same row sets
  cached re-run   every stage again in one process: all outputs are found by their cache keys

k-means trains on a sample, as faiss does: ``max_points_per_centroid`` x k rows (faiss default 256, paper
setting; here 20 by default so k=5000 trains on 100K rows in minutes on 2 cores) for ``--kmeans-niter``
iterations (paper 50; here 10), then assigns every row. Pass ``--kmeans-points-per-centroid 256
--kmeans-niter 50`` for the paper's setting.

    python benchmarks/bench_pipeline.py --rows 665298 --workdir runs/bench_pipeline   # full size
    python benchmarks/bench_pipeline.py --rows 20000                                   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    DINOV2_LARGE_DIM,
    MINILM_DIM,
    REAL_ROWS,
    run_isolated,
    run_phase,
    summary,
    write_clustered_features,
    write_fake_pool,
)

GLOBAL_BATCH = 128
PAPER_SELECTION_NUM = 7500
PROBE_CAP = 100
MEMORY_GOAL_MB = 4096
END_TO_END_GOAL_S = 15 * 60
CACHED_GOAL = 0.02


# ---------------------------------------------------------------- data (not timed as a stage)


def generate(work: str, rows: int, seed: int) -> dict[str, Any]:
    """Pool JSON + image/text feature files in pool order, written once per work directory."""
    w = Path(work)
    w.mkdir(parents=True, exist_ok=True)
    pool, image, text = w / "pool.json", w / "image_features.npy", w / "text_features.npy"
    t0 = time.perf_counter()
    if not (pool.exists() and image.exists() and text.exists()):
        text_only = write_fake_pool(pool, rows, seed=seed, repeat_fraction=0.01)
        n_concepts = max(8, min(3000, rows // 200))
        write_clustered_features(image, rows, DINOV2_LARGE_DIM, n_concepts, "float16", seed + 1, 40.0, text_only)
        write_clustered_features(text, rows, MINILM_DIM, n_concepts, "float32", seed + 2, 1.0)
    return {"seconds": time.perf_counter() - t0, "pool_mb": pool.stat().st_size / 1e6}


# ---------------------------------------------------------------- stages (ours)


def _dir(ctx: dict, *parts: str) -> str:
    return str(Path(ctx["run"], *parts))


def stage_idle(ctx: dict) -> tuple[dict, str]:
    import tasks.clustering  # noqa: F401
    import tasks.export  # noqa: F401
    import tasks.feature_shard
    import tasks.manifest
    import tasks.selection  # noqa: F401
    import tasks.warmup  # noqa: F401

    return {}, "imports only (the floor of every stage's peak)"


def stage_manifest(ctx: dict) -> tuple[dict, str]:
    from tasks.manifest import manifest_stage
    from tasks.stage import StageRecord

    pool_json = Path(ctx["work"]) / "pool.json"
    st = pool_json.stat()
    pool = StageRecord(
        stage="pool",
        out_dir=str(pool_json.parent),
        files={"pool_json": str(pool_json)},
        content_hash=f"{st.st_size}-{st.st_mtime_ns}",
    )
    rec = manifest_stage.fn(pool=pool, mode="skip", allow_duplicate_ids=True, out_dir=_dir(ctx, "manifest"))
    report = rec.meta["report"]
    note = f"{rec.rows['manifest']} rows, {report.get('n_text_only')} text-only"
    return {"manifest": rec}, note


def stage_import(ctx: dict) -> tuple[dict, str]:
    from tasks.feature_import import import_fingerprint, import_stage

    out_dir = _dir(ctx, "features")
    sources = {
        "image": str(Path(ctx["work"]) / "image_features.npy"),
        "text": str(Path(ctx["work"]) / "text_features.npy"),
    }
    fingerprint = import_fingerprint(sources, out_dir)
    rec = import_stage.fn(
        manifest=ctx["manifest"], sources=sources, fingerprint=fingerprint, balanced=False, out_dir=out_dir
    )
    mb = Path(rec.files["features"]).stat().st_size / 1e6
    note = f"{rec.rows['features']} x {rec.meta['image_dim'] + rec.meta['text_dim']} fp16 ({mb:.0f} MB), content-keyed"
    return {"features": rec}, note


def _kmeans(ctx: dict, name: str) -> tuple[dict, str]:
    from progress_core.clustering.config import ClusteringConfig
    from tasks.clustering import kmeans_stage

    k = ctx["k"][name]
    settings = ClusteringConfig(niter=ctx["niter"], max_points_per_centroid=ctx["ppc"], seed=1234, use_gpu=False)
    rec = kmeans_stage.fn(
        features=ctx["features"], name=name, k=k, settings=settings, out_dir=_dir(ctx, "clusters", name)
    )
    n = rec.rows["assignment"]
    train = min(n, k * ctx["ppc"])
    note = f"k={k}, trained on {train} rows x {ctx['niter']} iterations, {rec.meta['used']} clusters used"
    return {name: rec}, note


def stage_kmeans_annotation(ctx: dict) -> tuple[dict, str]:
    return _kmeans(ctx, "annotation")


def stage_kmeans_selection(ctx: dict) -> tuple[dict, str]:
    return _kmeans(ctx, "selection")


def stage_warmup(ctx: dict) -> tuple[dict, str]:
    from progress_core.clustering.config import WarmupConfig
    from tasks.warmup import warmup_stage

    rec = warmup_stage.fn(
        features=ctx["features"],
        selection_clusters=ctx["selection"],
        settings=WarmupConfig(),
        out_dir=_dir(ctx, "warmup"),
    )
    return {"pools": rec}, f"W1 {rec.rows['w1']}, W2 {rec.rows['w2']}, remaining {rec.rows['remaining']}"


def _synthetic_probe_stage():
    """A probe stage with synthetic accuracies: per annotation cluster a base accuracy and a learning speed,
    ``min(count, 100)`` samples probed, ``correct ~ Binomial`` (seeded by round). Keyed and cached like
    every stage (docs/architecture.md#stage-contract)."""
    from progress_core.probe.accuracy_table import write_accuracy_table
    from tasks._tables import cluster_ids, ids_of
    from tasks.stage import StageRecord, stage

    @stage("synthetic_probe", modules=[])
    def synthetic_probe(
        selected: StageRecord, annotation: StageRecord, round_index: int, step: int, seed: int, out_dir: str
    ) -> StageRecord:
        import pandas as pd

        clusters = cluster_ids(annotation)
        k = int(clusters.max()) + 1
        n = np.minimum(np.bincount(clusters[ids_of(selected, "selected_until")], minlength=k), PROBE_CAP)
        probed = np.flatnonzero(n > 0)
        rng = np.random.default_rng([seed, 0])
        base, speed = rng.beta(2, 2, k), rng.normal(0.02, 0.03, k)
        acc = np.clip(base + speed * round_index, 0.0, 1.0)
        correct = np.random.default_rng([seed, round_index + 1]).binomial(n[probed], acc[probed])
        table = pd.DataFrame(
            {
                "cluster_id": probed.astype(np.int64),
                "n": n[probed].astype(np.int64),
                "correct": correct.astype(np.int64),
                "unjudged": np.zeros(probed.size, np.int64),
                "accuracy": correct / n[probed],
            }
        )
        path = write_accuracy_table(table, Path(out_dir) / "per_cluster.parquet")
        return StageRecord(
            stage="probe",
            out_dir=out_dir,
            files={"per_cluster": str(path)},
            rows={"per_cluster": int(probed.size)},
            meta={"step": step, "round": round_index},
        )

    return synthetic_probe


def _round_dir(ctx: dict, r: int, part: str) -> str:
    return _dir(ctx, "rounds", f"r{r:02d}", part)


def stage_probe_tables(ctx: dict) -> tuple[dict, str]:
    from progress_core.selection.rounds import next_step
    from tasks.selection import commit_warmup_stage

    probe = _synthetic_probe_stage()
    n = ctx["manifest"].rows["manifest"]
    commits, probes, steps = [], [], []
    step, prev = 0, None
    for r, name in enumerate(("w1", "w2")):
        commit = commit_warmup_stage.fn(
            pools=ctx["pools"],
            pool_name=name,
            selected_before=prev,
            remaining_before=prev,
            n_samples=n,
            round_index=r,
            step=step,
            out_dir=_round_dir(ctx, r, "select"),
        )
        target = max(next_step(step, commit.rows["new"], GLOBAL_BATCH), step + 1)
        p = probe(commit, ctx["annotation"], r, target, ctx["seed"], _round_dir(ctx, r, "probe"))
        commits.append(commit)
        probes.append(p)
        steps.append(target)
        step, prev = target, commit
    note = f"W1, W2 committed; probe tables of {probes[0].rows['per_cluster']} and {probes[1].rows['per_cluster']} clusters"
    return {"commits": commits, "probes": probes, "steps": steps}, note


def stage_rounds(ctx: dict) -> tuple[dict, str]:
    from progress_core.selection.config import SelectionConfig
    from progress_core.selection.rounds import next_step
    from tasks.selection import select_stage

    probe = _synthetic_probe_stage()
    n = ctx["manifest"].rows["manifest"]
    commits, probes, steps = list(ctx["commits"]), list(ctx["probes"]), list(ctx["steps"])
    settings = SelectionConfig(selection_num=ctx["selection_num"])
    step = steps[-1]
    for r in range(2, 2 + ctx["rounds"]):
        commit = select_stage.fn(
            settings=settings,
            budget=ctx["selection_num"],
            seed=ctx["seed"],
            annotation=ctx["annotation"],
            selected_before=commits[-1],
            remaining_before=commits[-1],
            acc_prev=probes[-2],
            acc_now=probes[-1],
            coincide_order=None,
            n_samples=n,
            round_index=r,
            step=step,
            out_dir=_round_dir(ctx, r, "select"),
        )
        target = max(next_step(step, commit.rows["new"], GLOBAL_BATCH), step + 1)
        probes.append(probe(commit, ctx["annotation"], r, target, ctx["seed"], _round_dir(ctx, r, "probe")))
        commits.append(commit)
        steps.append(target)
        step = target
    last = commits[-1]
    note = (
        f"{ctx['rounds']} rounds x {ctx['selection_num']}: selected {last.rows['selected_until']}, "
        f"remaining {last.rows['remaining_after']}"
    )
    return {"commits": commits, "probes": probes, "steps": steps}, note


def stage_export(ctx: dict) -> tuple[dict, str]:
    from tasks.export import export_stage

    rec = export_stage.fn(
        manifest=ctx["manifest"],
        annotation=ctx["annotation"],
        pools=ctx["pools"],
        rounds=ctx["commits"],
        probes=ctx["probes"],
        steps=ctx["steps"],
        selection_num=ctx["selection_num"],
        out_dir=_dir(ctx, "export"),
        remaining=ctx["export_remaining"],
    )
    files = [f for f in rec.rows if f.endswith(".json")]
    rows = sum(rec.rows[f] for f in files)
    mb = sum(p.stat().st_size for p in Path(rec.out_dir).rglob("*.json")) / 1e6
    return {"export": rec}, f"{len(files)} files, {rows} rows, {mb:.0f} MB of JSON"


STAGES = [
    ("manifest", stage_manifest),
    ("features-import", stage_import),
    ("kmeans[annotation]", stage_kmeans_annotation),
    ("kmeans[selection]", stage_kmeans_selection),
    ("warmup-pools", stage_warmup),
    ("probe-tables", stage_probe_tables),
    ("rounds", stage_rounds),
    ("export", stage_export),
]
KMEANS_STAGES = {"kmeans[annotation]", "kmeans[selection]"}
PRELOAD = (
    "pandas",
    "faiss",
    "progress_core.features.importing",
    "progress_core.probe.accuracy_table",
    "tasks._tables",
    "tasks.clustering",
    "tasks.manifest",
    "tasks.export",
    "tasks.feature_shard",
    "tasks.selection",
    "tasks.warmup",
)
"""Imported before a stage's clock starts: a stage's seconds are its work, not Python's imports."""


# ---------------------------------------------------------------- the original scripts' way


def original_manifest(ctx: dict) -> str:
    import pandas as pd

    with open(Path(ctx["work"]) / "pool.json", encoding="utf-8") as f:
        rows = json.load(f)
    df = pd.DataFrame(rows)
    return f"{len(df)} rows x {df.shape[1]} columns held as Python objects"


def original_import(ctx: dict) -> str:
    image = np.load(Path(ctx["work"]) / "image_features.npy")
    text = np.load(Path(ctx["work"]) / "text_features.npy")
    both = np.concatenate([image, text], axis=1, dtype=np.float32)
    del image, text
    both /= np.maximum(np.linalg.norm(both, axis=1, keepdims=True), 1e-12)
    out = Path(ctx["run"]) / "baseline" / "features.npy"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, both.astype(np.float16))
    out.unlink()
    return f"both files loaded whole, {both.shape[0]} x {both.shape[1]} float32 in memory"


def original_rounds(ctx: dict) -> str:
    import bench_selection as bs

    from progress_core.id_sets import read_ids
    from progress_core.probe.accuracy_table import read_accuracy_table
    from tasks._tables import cluster_ids

    clusters = cluster_ids(ctx["annotation"])
    warm = ctx["commits"][1]
    pool = bs.original_rows(read_ids(warm.files["remaining_after"]), clusters)
    selected = bs.original_rows(read_ids(warm.files["selected_until"]), clusters)
    tables = [bs.to_original_json(read_accuracy_table(p.files["per_cluster"])) for p in ctx["probes"]]
    out = Path(ctx["run"]) / "baseline" / "rounds"
    out.mkdir(parents=True, exist_ok=True)
    random.seed(ctx["seed"])
    for i in range(ctx["rounds"]):
        new, _ = bs.original_select(pool, tables[i], tables[i + 1], ctx["selection_num"])
        pool = bs.original_remove_by_index(pool, new)
        selected = selected + new
        for name, rows in (("new", new), ("selected_until", selected), ("remaining_after", pool)):
            with open(out / f"{name}_{i}.json", "w", encoding="utf-8") as f:
                json.dump(rows, f)
    return f"{ctx['rounds']} rounds on dict rows (short conversations), 3 JSON files each"


def original_export(ctx: dict) -> str:
    from progress_core.id_sets import read_ids
    from tasks._tables import cluster_ids

    with open(Path(ctx["work"]) / "pool.json", encoding="utf-8") as f:
        rows = json.load(f)
    clusters = cluster_ids(ctx["annotation"]).tolist()
    for i, row in enumerate(rows):
        row.update(cluster_id=clusters[i], dist_to_cent=0.5, index=i)
    pools = ctx["pools"]
    w1, w2 = read_ids(pools.files["w1"]), read_ids(pools.files["w2"])
    sets = {
        "all": np.arange(len(rows)),
        "w1": w1,
        "w2": w2,
        "warm": np.union1d(w1, w2),
        "pool": read_ids(pools.files["remaining"]),
    }
    for c in ctx["commits"][2:]:
        for name in ("new", "selected_until", "remaining_after"):
            sets[f"{name}_{c.meta['round']}"] = read_ids(c.files[name])
    out = Path(ctx["run"]) / "baseline" / "export"
    out.mkdir(parents=True, exist_ok=True)
    for name, ids in sets.items():
        with open(out / f"{name}.json", "w", encoding="utf-8") as f:
            json.dump([rows[i] for i in ids.tolist()], f)
    shutil.rmtree(out)
    return f"json.load of the pool + json.dump of {len(sets)} row sets"


BASELINES = {
    "manifest": original_manifest,
    "features-import": original_import,
    "rounds": original_rounds,
    "export": original_export,
}


# ---------------------------------------------------------------- drivers


def run_stage(name: str, ctx: dict) -> tuple[dict, str]:
    return dict(STAGES)[name](ctx)


def run_all(ctx: dict) -> dict[str, float]:
    """Every stage in this process (the cached re-run): seconds per stage."""
    times = {}
    for name, fn in STAGES:
        t0 = time.perf_counter()
        out, _ = fn(ctx)
        ctx.update(out)
        times[name] = time.perf_counter() - t0
    return times


def markers(run: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in run.rglob(".stage.json")}


def _fmt_mb(mb: float | None) -> str:
    return "" if mb is None else f"{mb:,.0f}"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=REAL_ROWS, help="pool size (default: LLaVA-665K's 665,298)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep data and outputs here (data is reused)")
    ap.add_argument("--annotation-k", type=int, default=None, help="default: 1000 scaled to --rows")
    ap.add_argument("--selection-k", type=int, default=None, help="default: 5000 scaled to --rows")
    ap.add_argument("--kmeans-niter", type=int, default=10, help="k-means iterations (paper 50)")
    ap.add_argument("--kmeans-points-per-centroid", type=int, default=20, help="training sample per centre (faiss 256)")
    ap.add_argument("--rounds", type=int, default=5, help="selection rounds after the two warm-up rounds")
    ap.add_argument("--selection-num", type=int, default=None, help="default: 7500 scaled to --rows")
    ap.add_argument("--no-baselines", action="store_true", help="skip the original scripts' way")
    ap.add_argument(
        "--export-remaining",
        choices=("every_round", "last"),
        default="every_round",
        help="export_remaining of the run config: every round's remaining-pool file or only the last (3M rows)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def _context(args: argparse.Namespace, work: Path, run: Path) -> dict[str, Any]:
    """What every stage reads: paths, seed, k-means settings and the sizes scaled to ``--rows``."""
    from progress_core.clustering.kmeans import PAPER_ANNOTATION_K, PAPER_SELECTION_K, resolve_k

    n = args.rows
    return {
        "work": str(work),
        "run": str(run),
        "seed": args.seed,
        "niter": args.kmeans_niter,
        "ppc": args.kmeans_points_per_centroid,
        "rounds": args.rounds,
        "k": {
            "annotation": resolve_k(args.annotation_k, n, PAPER_ANNOTATION_K),
            "selection": resolve_k(args.selection_k, n, PAPER_SELECTION_K),
        },
        "selection_num": args.selection_num or max(1, round(PAPER_SELECTION_NUM * n / REAL_ROWS)),
        "export_remaining": args.export_remaining,
    }


def _run_stages(ctx: dict[str, Any], with_baselines: bool) -> dict[str, dict]:
    """Each stage in its own process (and its original way beside it), one printed row per stage."""
    stages: dict[str, dict] = {}
    print(f"{'stage':<20} {'ours s':>8} {'peak MB':>8} | {'orig. s':>8} {'peak MB':>8} | note", flush=True)
    for name, _ in STAGES:
        ours = run_isolated(run_stage, name, ctx, preload=PRELOAD)
        out, note = ours["out"]
        ctx.update(out)
        row = {"seconds": ours["seconds"], "peak_mb": ours["peak_mb"], "note": note}
        if name in BASELINES and with_baselines:
            base = run_isolated(BASELINES[name], ctx, preload=PRELOAD)
            row.update(original_seconds=base["seconds"], original_peak_mb=base["peak_mb"], original_note=base["out"])
        stages[name] = row
        print(
            f"{name:<20} {row['seconds']:8.1f} {_fmt_mb(row['peak_mb']):>8} | "
            f"{row.get('original_seconds', float('nan')):8.1f} {_fmt_mb(row.get('original_peak_mb')):>8} | {note}",
            flush=True,
        )
    return stages


def _cached_rerun(ctx: dict[str, Any], run: Path) -> dict[str, Any]:
    """Every stage again in one process; counts the stage outputs whose marker changed (recomputed)."""
    before = markers(run)
    t0 = time.perf_counter()
    cached = run_isolated(run_all, ctx, preload=PRELOAD)
    cached_wall = time.perf_counter() - t0
    after = markers(run)
    recomputed = sum(1 for p, m in after.items() if before.get(p) != m)
    cached_s = sum(cached["out"].values())
    print(
        f"{'cached re-run':<20} {cached_s:8.1f} {_fmt_mb(cached['peak_mb']):>8} | "
        f"{'':>8} {'':>8} | {recomputed} of {len(after)} stage outputs recomputed; "
        f"{cached_wall:.1f} s with process start and imports",
        flush=True,
    )
    return {
        "cached_seconds": cached_s,
        "cached_wall_seconds": cached_wall,
        "cached_peak_mb": cached["peak_mb"],
        "cached_recomputed": recomputed,
        "stage_markers": len(after),
    }


def _largest_peak_outside_kmeans(results: dict[str, Any]) -> tuple[float, str]:
    return max((r["peak_mb"], name) for name, r in results["stages"].items() if name not in KMEANS_STAGES)


def _report_goals(results: dict[str, Any]) -> None:
    """Prints whether each goal (end to end, memory outside k-means, cached share) is met; adds the figures."""
    total, cached_wall = results["end_to_end_seconds"], results["cached_wall_seconds"]
    worst = _largest_peak_outside_kmeans(results)
    kmeans_peak = max(results["stages"][s]["peak_mb"] for s in KMEANS_STAGES)
    print(
        f"\nend to end {total:.0f} s (goal < {END_TO_END_GOAL_S} s): {'met' if total < END_TO_END_GOAL_S else 'NOT met'}"
    )
    print(
        f"largest peak outside k-means {worst[0]:,.0f} MB ({worst[1]}; goal < {MEMORY_GOAL_MB} MB): "
        f"{'met' if worst[0] < MEMORY_GOAL_MB else 'NOT met'}; k-means peak {kmeans_peak:,.0f} MB"
    )
    share = cached_wall / total if total else float("nan")
    print(
        f"cached re-run {cached_wall:.1f} s = {100 * share:.1f}% of the first run (goal < 2%): {'met' if share < CACHED_GOAL else 'NOT met'}"
    )
    results.update(max_peak_mb_outside_kmeans=worst[0], kmeans_peak_mb=kmeans_peak, cached_share=share)


def _summary_lines(results: dict[str, Any]) -> None:
    worst = _largest_peak_outside_kmeans(results)
    share = results["cached_share"]
    summary("bench_pipeline", f"end to end, {results['rows']} rows", f"{results['end_to_end_seconds']:.0f} s")
    summary("bench_pipeline", "peak RSS outside k-means", f"{worst[0]:,.0f} MB ({worst[1]})")
    summary("bench_pipeline", "cached re-run", f"{results['cached_wall_seconds']:.1f} s ({100 * share:.1f}%)")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    n = args.rows
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_pipeline_")
        work = Path(tmp.name)
    else:
        work = args.workdir.resolve()
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    ctx = _context(args, work, run)
    results: dict[str, Any] = {"rows": n, "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "stages": {}}
    try:
        gen = run_phase(generate, str(work), n, args.seed)
        print(
            f"data: {n} rows, pool JSON {gen['pool_mb']:.0f} MB, features {DINOV2_LARGE_DIM}+{MINILM_DIM}-d "
            f"(generated in {gen['seconds']:.0f} s, not counted); {os.cpu_count()} CPUs",
            flush=True,
        )
        idle = run_isolated(stage_idle, ctx, preload=PRELOAD)
        results["idle_mb"] = idle["peak_mb"]
        print(f"import floor of every stage process: {idle['peak_mb']:,.0f} MB peak RSS", flush=True)
        results["stages"] = _run_stages(ctx, with_baselines=not args.no_baselines)
        results["end_to_end_seconds"] = sum(r["seconds"] for r in results["stages"].values())
        results.update(_cached_rerun(ctx, run))
        _report_goals(results)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2))
        _summary_lines(results)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
