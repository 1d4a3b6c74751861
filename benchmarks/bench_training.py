"""Tiny-default training and probing speed, and the bundled pool's per-concept learning curve.

    python benchmarks/bench_training.py            # 3000-sample pool, 600 steps, probe every 50
    python benchmarks/bench_training.py --quick    # 900-sample pool, 200 steps

Speed, baseline vs ours in the same process:
- training: a bare forward/backward/AdamW loop on pre-collated tensors (no data loading, no state) vs
  ``train_to_step`` (load, tokenising, image loading, collation, schedule, clipping, checkpoint), with the data
  prepared in the training process and in a DataLoader worker, and with one compute thread and a worker (a core
  left for data, as on a GPU node); ours' piece is split into load, data wait, steps and checkpoint seconds;
- probing: greedy generation one sample at a time vs ``generate_answers`` (left-padded batches).

Curve: train one continuous run on the synthetic pool, probe the eval split every K steps with the exact
judge and print per-concept accuracy (what selection will see, docs/architecture.md#the-bundled-demo); a PNG when matplotlib exists.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summary  # noqa: E402


def _load_split(pool, json_path: Path, split: str) -> pd.DataFrame:
    rows = json.loads(Path(json_path).read_text())
    labels = pd.read_parquet(pool.labels_path)
    labels = labels[labels.split == split].set_index("id")
    df = pd.DataFrame(
        {
            "id": [r["id"] for r in rows],
            "image": [r.get("image") for r in rows],
            "conversations": [json.dumps(r["conversations"]) for r in rows],
        }
    )
    df["concept"] = labels.loc[df["id"], "concept"].to_numpy()
    df["sample_id"] = np.arange(len(df))
    return df


SPEED_STEPS = 40
"""Training steps timed in the speed comparison (fewer when the run or the pool is shorter)."""


def _bare_torch_steps_per_s(init: Path, train_df: pd.DataFrame, image_root: Path, cfg, steps: int) -> float:
    """The baseline: forward/backward/AdamW on batches collated before the clock starts (3 warm-up steps)."""
    import torch

    from progress_core.model.loading import load_model
    from progress_core.training.samples import Encoder, samples_rows

    batch = cfg.global_batch_size
    model, processor = load_model(init, cfg.model)
    encoder = Encoder(processor, model.config.image_token_index, image_root, 512)
    rows = samples_rows(train_df.iloc[: steps * batch])
    enc = [encoder.encode(c, im, i) for i, (c, im) in enumerate(rows)]
    batches = [
        encoder.collate(enc[k * batch : (k + 1) * batch], list(range(k * batch, (k + 1) * batch))) for k in range(steps)
    ]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for b in batches[:3]:
        model(**b).loss.backward()
    opt.zero_grad()
    t = time.perf_counter()
    for b in batches:
        model(**b).loss.backward()
        opt.step()
        opt.zero_grad()
    return steps / (time.perf_counter() - t)


def _probe_samples_per_s(init: Path, probe_rows: pd.DataFrame, image_root: Path, pcfg) -> tuple[float, object]:
    """Samples per second of ``generate_answers`` under ``pcfg``, and the answers."""
    from progress_core.probe.accuracy import generate_answers

    t = time.perf_counter()
    answers = generate_answers(init, probe_rows, image_root, pcfg, progress=False)
    return len(probe_rows) / (time.perf_counter() - t), answers


def _ours_train(init: Path, train_df: pd.DataFrame, image_root: Path, cfg, steps: int, work: Path, repeats: int = 3):
    """``train_to_step`` over ``steps`` steps, best of ``repeats``: (steps/s of the whole piece, its seconds by part)."""
    from progress_core.training.loop import train_to_step

    best = None
    for k in range(repeats):
        t = time.perf_counter()
        result = train_to_step(init, train_df, image_root, steps, cfg, work / f"speed-{k}", progress=False)
        total = time.perf_counter() - t
        if best is None or total < best[0]:
            best = (total, result.seconds)
    return steps / best[0], best[1]


def _speed_rows(init: Path, train_df: pd.DataFrame, image_root: Path, cfg, steps: int, work: Path) -> list[tuple]:
    """(label, compute threads, data workers, bare steps/s, ours steps/s, ours' seconds by part) per setting: the
    bench's threads with data prepared in the training process and in one worker, then one compute thread with
    one worker, a core left free for data preparation as the CPU of a GPU node is (best of 3 each)."""
    import torch

    threads = cfg.num_threads or torch.get_num_threads()
    settings = [("in process", threads, 0), ("1 worker", threads, 1)]
    if threads > 1:
        settings.append(("1 thread + 1 worker", 1, 1))
    rows = []
    for label, n_threads, workers in settings:
        run_cfg = cfg.model_copy(update={"num_threads": n_threads, "data_workers": workers})
        torch.set_num_threads(n_threads)
        base = max(_bare_torch_steps_per_s(init, train_df, image_root, run_cfg, steps) for _ in range(3))
        ours, parts = _ours_train(init, train_df, image_root, run_cfg, steps, work / label.replace(" ", "-"))
        rows.append((label, n_threads, workers, base, ours, parts))
    torch.set_num_threads(threads)
    return rows


def _print_speed(rows: list[tuple], batch: int, steps: int) -> None:
    print(f"\ntrain speed, tiny default, batch {batch}, {steps} steps per piece (best of 3; ratio = ours / bare loop)")
    print(f"{'setting':<24}{'threads':>8}{'bare':>8}{'ours':>8}{'ratio':>7}   where ours' piece went (s)")
    for label, threads, _, base, ours, parts in rows:
        where = ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
        print(f"{label:<24}{threads:>8}{base:>8.1f}{ours:>8.1f}{ours / base:>7.2f}   {where}")
    _, _, _, base, ours, parts = rows[0]
    total = sum(parts.values())
    share = {k: v / total for k, v in parts.items()}
    print(
        f"in process, share of the piece: steps {share['steps']:.0%}, data preparation {share['data']:.0%}, "
        f"load {share['setup']:.0%}, checkpoint {share['save']:.0%}"
    )


def bench_speed(init: Path, train_df: pd.DataFrame, eval_df: pd.DataFrame, image_root: Path, cfg, pcfg, work: Path):
    """Train steps/s against a bare torch loop with data in the training process and in a DataLoader worker, and
    probe samples/s batched against one at a time, side by side (docs/algorithm.md#training,
    docs/algorithm.md#probe-and-judge)."""
    import torch

    steps = min(SPEED_STEPS, cfg.final_step, len(train_df) // cfg.global_batch_size)
    if steps < 4:
        print(f"\nspeed comparison skipped: the pool holds only {steps} batches (needs 4; use a larger --n)")
        return {}
    rows = _speed_rows(init, train_df, image_root, cfg, steps, work)
    _print_speed(rows, cfg.global_batch_size, steps)

    probe_rows = eval_df.iloc[:64]
    base_probe, a1 = _probe_samples_per_s(init, probe_rows, image_root, pcfg.model_copy(update={"batch_size": 1}))
    ours_probe, a2 = _probe_samples_per_s(init, probe_rows, image_root, pcfg)
    print(
        f"\nprobe samples/s, {torch.get_num_threads()} threads: one at a time {base_probe:.1f}, batched "
        f"({pcfg.batch_size}) {ours_probe:.1f}, ratio {ours_probe / base_probe:.2f}; batched answers equal "
        f"one-at-a-time answers: {a1 == a2}"
    )
    for label, _, _, base, ours, _ in rows:
        summary("bench_training", f"train steps/s, ours vs bare torch ({label})", f"{ours:.1f} vs {base:.1f}")
    summary("bench_training", "probe samples/s, batched vs one at a time", f"{ours_probe:.1f} vs {base_probe:.1f}")
    _, _, _, base, ours, _ = rows[0]
    return {"train_base": base, "train": ours, "probe_base": base_probe, "probe": ours_probe, "rows": rows}


def bench_curve(init: Path, train_df, eval_df, image_root: Path, cfg, pcfg, steps: int, every: int, work: Path):
    from progress_core.probe.accuracy import probe
    from progress_core.probe.judges import ExactMatchJudge
    from progress_core.training.loop import train_to_step

    concepts = sorted(eval_df["concept"].unique())
    eval_df = eval_df.assign(cluster_id=eval_df["concept"].map({c: i for i, c in enumerate(concepts)}))
    judge = ExactMatchJudge()
    curve = {}
    ckpt = init
    t_train = t_probe = 0.0
    for target in range(0, steps + 1, every):
        if target:
            t = time.perf_counter()
            ckpt = train_to_step(
                ckpt, train_df, image_root, target, cfg, work / f"step{target}", progress=False
            ).checkpoint
            t_train += time.perf_counter() - t
        t = time.perf_counter()
        table = probe(ckpt, eval_df, image_root, judge, pcfg, progress=False).per_cluster
        t_probe += time.perf_counter() - t
        curve[target] = {concepts[c]: a for c, a in zip(table.cluster_id, table.accuracy)}
        print(f"  step {target:>4}: " + " ".join(f"{k}={v:.2f}" for k, v in curve[target].items()), flush=True)
    frame = pd.DataFrame(curve).T
    frame.index.name = "step"
    print(f"\nper-concept accuracy on the eval split ({len(eval_df)} samples), exact judge:")
    print(frame.round(2).T.to_string())
    print(
        f"curve: {steps} steps in {t_train:.1f}s ({steps / max(t_train, 1e-9):.1f} steps/s incl. checkpoints), "
        f"{len(curve)} probes in {t_probe:.1f}s"
    )
    return frame


def plot(frame: pd.DataFrame, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(9, 5))
    colours = plt.cm.tab20.colors
    for i, concept in enumerate(frame.columns):
        ax.plot(
            frame.index,
            frame[concept],
            marker="o",
            ms=3,
            label=concept,
            color=colours[i % len(colours)],
            linestyle="-" if i < 20 else "--",
        )
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy (exact match, eval split)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small pool and 200 steps")
    parser.add_argument("--n", type=int, default=None, help="pool size (default 3000, quick 900)")
    parser.add_argument("--n-eval", type=int, default=None, help="eval split size (default 600, quick 300)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 600, quick 200)")
    parser.add_argument("--every", type=int, default=None, help="probe every K steps (default 50, quick 50)")
    parser.add_argument("--patch-size", type=int, default=None, help="override the tiny default patch size")
    parser.add_argument("--lr", type=float, default=None, help="override the tiny default learning rate")
    parser.add_argument("--batch", type=int, default=None, help="override the global batch size")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed comparison")
    parser.add_argument("--plot", type=Path, default=Path("runs/bench/bench_training_curve.png"), help="PNG path")
    parser.add_argument("--seed", type=int, default=0, help="pool seed")
    args = parser.parse_args()
    n = args.n or (900 if args.quick else 3000)
    n_eval = args.n_eval or (300 if args.quick else 600)
    steps = args.steps or (200 if args.quick else 600)
    every = args.every or 50

    import torch

    from progress_core.data.synthetic import generate_pool
    from progress_core.model.config import ModelConfig
    from progress_core.model.tiny import build_tiny_model
    from progress_core.probe.config import ProbeConfig
    from progress_core.training.config import TrainingConfig

    torch.set_num_threads(args.threads)
    model_cfg = ModelConfig(**({"patch_size": args.patch_size} if args.patch_size else {}))
    extra = {}
    if args.lr:
        extra["learning_rate"] = args.lr
    if args.batch:
        extra["global_batch_size"] = args.batch
    cfg = TrainingConfig(model=model_cfg, final_step=steps, num_threads=args.threads, **extra)
    pcfg = ProbeConfig(model=model_cfg, samples_per_cluster=None)
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        pool = generate_pool(work / "pool", n=n, n_eval=n_eval, seed=args.seed)
        train_df = _load_split(pool, pool.pool_json, "pool")
        eval_df = _load_split(pool, pool.eval_json, "eval")
        texts = [t["value"] for c in train_df.conversations for t in json.loads(c)]
        init = build_tiny_model(texts, model_cfg, work / "init")
        print(
            f"pool {n} + eval {n_eval} samples generated and tiny model built in {time.perf_counter() - t:.1f}s; "
            f"patch {model_cfg.patch_size}, batch {cfg.global_batch_size}, lr {cfg.lr()}, "
            f"{sum(p.numel() for p in __import__('transformers').LlavaForConditionalGeneration.from_pretrained(init).parameters()) / 1e6:.2f}M params"
        )
        if not args.no_speed:
            bench_speed(init, train_df, eval_df, pool.image_root, cfg, pcfg, work)
        print(f"\nlearning curve: {steps} steps, probe every {every}")
        frame = bench_curve(init, train_df, eval_df, pool.image_root, cfg, pcfg, steps, every, work)
    plot(frame, args.plot)


if __name__ == "__main__":
    main()
