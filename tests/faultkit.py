"""Fault injection over a tiny run of the flow's stages (the reliability matrix of tests/test_faults.py and
benchmarks/bench_faults.py).

The run calls the stage functions the flow's tasks wrap, in the flow's order (pool, manifest, features,
both clusterings, warm-up pools, init model, two warm-up rounds and one selection round of train and probe),
without the Prefect engine, so each fault and re-run costs seconds. A fault is injected, the run is
repeated without it, and the outcome is classified:

* ``recovered``: final selection equal to the uninterrupted run's, the damaged stage recomputed, and no
  stage recomputed whose outputs were intact,
* ``failed loudly``: the re-run stopped with a named error (then the run is repaired by a clean re-run),
* ``silently wrong``: anything else (a different selection, damaged outputs reused, needless recomputes).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from progress_core.errors import ProgressError
from progress_core.id_sets import read_ids
from progress_core.run.config import RunConfig
from progress_core.selection.schedule import steps_for_new
from tasks import stage as stage_mod
from tasks.stage import MARKER, InjectedFault, StageRecord, read_marker_file, verify_marker

STAGES = ("manifest", "features", "kmeans", "warmup_pools", "commit_warmup", "train", "probe", "select")
DAMAGES = ("kill", "truncate", "flip", "marker")


def tiny_config(run_dir: Path, **overrides) -> RunConfig:
    data = {
        "run_dir": str(run_dir),
        "data": {"synthetic_n": 96, "synthetic_n_eval": 0},
        "clustering": {"annotation_k": 4, "selection_k": 8},
        "warmup": {"fractions": [0.2, 0.3]},
        "selection": {"selection_num": 16, "fallback_when_no_progress": "explore"},
        "schedule": {"final_step": 6},
        "training": {"global_batch_size": 8, "num_threads": 1},
        "probe": {"samples_per_cluster": 4},
    }
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return RunConfig.model_validate(data)


def data_stages(cfg: RunConfig, run: Path) -> dict[str, StageRecord]:
    """Pool, manifest, features, both clusterings and the warm-up pools, as the flow runs them before round 0
    (keys ``pool``, ``manifest``, ``features``, ``annotation``, ``selection``, ``warmup_pools``)."""
    from tasks.clustering import kmeans_stage
    from tasks.feature_combine import combine_stage
    from tasks.feature_shard import feature_shard
    from tasks.manifest import image_fingerprint, manifest_stage
    from tasks.pool import pool_fingerprint, prepare_pool
    from tasks.warmup import warmup_stage

    pool = prepare_pool.fn(data=cfg.data, fingerprint=pool_fingerprint(cfg.data), out_dir=str(run / "data"))
    manifest = manifest_stage.fn(
        pool=pool,
        mode="skip",
        allow_duplicate_ids=False,
        images=image_fingerprint(pool, cfg.data.hash_images),
        out_dir=str(run / "manifest"),
    )
    shard = feature_shard.fn(
        manifest=manifest,
        start=0,
        stop=manifest.rows["manifest"],
        settings=cfg.feature_config(),
        out_dir=str(run / "features" / "shards" / "0000000000"),
    )
    features = combine_stage.fn(shards=[shard], balanced=False, out_dir=str(run / "features"))
    clusters = {
        name: kmeans_stage.fn(
            features=features,
            name=name,
            k=k,
            settings=cfg.clustering_config(),
            out_dir=str(run / "clusters" / name),
        )
        for name, k in (("annotation", cfg.clustering.annotation_k), ("selection", cfg.clustering.selection_k))
    }
    pools = warmup_stage.fn(
        features=features, selection_clusters=clusters["selection"], settings=cfg.warmup, out_dir=str(run / "warmup")
    )
    return {"pool": pool, "manifest": manifest, "features": features, **clusters, "warmup_pools": pools}


def _commit_round(
    cfg: RunConfig,
    data: dict[str, StageRecord],
    r: int,
    step: int,
    final_step: int,
    selected: StageRecord | None,
    probes: list[StageRecord],
    out_dir: Path,
) -> StageRecord:
    """Round ``r``'s new samples: warm-up pool W1 or W2 in rounds 0 and 1, then a PROGRESS selection."""
    from tasks.selection import commit_warmup_stage, select_stage

    n = data["manifest"].rows["manifest"]
    if r < 2:
        return commit_warmup_stage.fn(
            pools=data["warmup_pools"],
            pool_name=("w1", "w2")[r],
            selected_before=selected,
            remaining_before=selected,
            n_samples=n,
            round_index=r,
            step=step,
            out_dir=str(out_dir),
        )
    return select_stage.fn(
        settings=cfg.selection,
        budget=min(cfg.selection.selection_num, (final_step - step) * cfg.training.global_batch_size),
        seed=cfg.seed,
        annotation=data["annotation"],
        selected_before=selected,
        remaining_before=selected,
        acc_prev=probes[-2],
        acc_now=probes[-1],
        coincide_order=None,
        n_samples=n,
        round_index=r,
        step=step,
        out_dir=str(out_dir),
    )


def _probe_round(
    cfg: RunConfig, data: dict[str, StageRecord], r: int, checkpoint: StageRecord, commit: StageRecord, target: int
) -> StageRecord:
    """Round ``r``'s probe (docs/algorithm.md#probe-and-judge): all selected samples in a warm-up round of a
    probe on the selected samples, else ``samples_per_cluster`` per cluster."""
    from tasks.probe import probe_stage

    held_out = cfg.probe.source == "held_out"
    return probe_stage.fn(
        checkpoint=checkpoint,
        selected=commit,
        annotation=data["annotation"],
        manifest=data["manifest"],
        samples_per_cluster=cfg.probe.samples_per_cluster if r >= 2 or held_out else None,
        seed=cfg.seed if held_out else cfg.seed + r,
        settings=cfg.probe_config(),
        round_index=r,
        to_step=target,
        out_dir=str(Path(cfg.run_dir) / "rounds" / f"r{r:02d}" / "probe"),
    )


def run_chain(cfg: RunConfig) -> dict[str, StageRecord]:
    """The flow's stages for the tiny config; returns the last record of each stage and the final selection."""
    from tasks._tables import cluster_ids  # noqa: F401  (the flow's readers, imported as the flow does)
    from tasks.model_init import init_model_stage
    from tasks.training import train_stage

    run = Path(cfg.run_dir)
    data = data_stages(cfg, run)
    manifest = data["manifest"]
    gb = cfg.training.global_batch_size
    final_step = cfg.final_step(manifest.rows["manifest"])
    training = cfg.training_config(final_step)
    checkpoint = init_model_stage.fn(manifest=manifest, settings=training.model, out_dir=str(run / "model_init"))
    out: dict[str, StageRecord] = {
        "manifest": manifest,
        "features": data["features"],
        "kmeans": data["annotation"],
        "warmup_pools": data["warmup_pools"],
    }
    step, selected, probes = 0, None, []
    for r in range(3):
        rdir = run / "rounds" / f"r{r:02d}"
        commit = _commit_round(cfg, data, r, step, final_step, selected, probes, rdir / "select")
        out["commit_warmup" if r < 2 else "select"] = commit
        target = step + steps_for_new(commit.rows["new"], gb)
        checkpoint = train_stage.fn(
            start=checkpoint,
            samples=commit,
            manifest=manifest,
            target_step=target,
            settings=training,
            round_index=r,
            out_dir=str(rdir / "train"),
        )
        probe = _probe_round(cfg, data, r, checkpoint, commit, target)
        out["train"], out["probe"] = checkpoint, probe
        probes.append(probe)
        selected, step = commit, target
    out["final"] = selected
    return out


def _damage(record: StageRecord, how: str) -> None:
    marker = read_marker_file(record.out_dir)
    target = Path(sorted(marker.outputs)[0])
    data = target.read_bytes()
    if how == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        i = len(data) // 2
        target.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    elif how == "marker":
        (Path(record.out_dir) / MARKER).unlink()


def _intact(records: dict[str, StageRecord], run: Path) -> set[str]:
    dirs = {str(p.parent) for p in run.rglob(MARKER)}
    good = set()
    for d in dirs:
        marker = read_marker_file(d)
        if marker is not None and verify_marker(d, marker.record.key)[0] is not None:
            good.add(d)
    return good


def inject(cfg: RunConfig, baseline: dict[str, StageRecord], stage: str, how: str) -> dict:
    """One fault at ``stage`` (``how`` in :data:`DAMAGES`), then a clean re-run; returns the classification."""
    run = Path(cfg.run_dir)
    expected = read_ids(baseline["final"].files["selected_until"])
    before = _intact(baseline, run)
    if how == "kill":
        before_kill = _intact(baseline, run)
        os.environ[stage_mod.FAULT_ENV] = f"{stage}:after_outputs"
        target_dir = baseline[stage].out_dir
        (Path(target_dir) / MARKER).unlink()
        try:
            run_chain(cfg)
        except InjectedFault:
            pass
        finally:
            os.environ.pop(stage_mod.FAULT_ENV, None)
        before = _intact(baseline, run)
        assert before <= before_kill
    else:
        _damage(baseline[stage], how)
        before = _intact(baseline, run)
    damaged = {baseline[stage].out_dir}
    start = len(stage_mod.EVENTS)
    try:
        again = run_chain(cfg)
    except ProgressError as exc:
        run_chain(cfg)
        return {"stage": stage, "fault": how, "outcome": "failed loudly", "detail": str(exc).splitlines()[0]}
    events = stage_mod.EVENTS[start:]
    computed = {e.out_dir for e in events if e.action == "computed"}
    reused_damaged = any(e.out_dir in damaged and e.action == "reused" for e in events)
    must = {e.out_dir for e in events} - before
    same = np.array_equal(read_ids(again["final"].files["selected_until"]), expected)
    ok = same and not reused_damaged and computed == must and damaged <= computed
    return {
        "stage": stage,
        "fault": how,
        "outcome": "recovered" if ok else "silently wrong",
        "recomputed": len(computed),
        "detail": "" if ok else f"same={same} reused_damaged={reused_damaged} extra={sorted(computed - must)}",
    }


def change_image(cfg: RunConfig, baseline: dict[str, StageRecord]) -> dict:
    """Replace one pool image: features must be recomputed (and the run completes)."""
    from PIL import Image

    root = Path(baseline["manifest"].meta["image_root"])
    image = sorted(root.rglob("*.png"))[0]
    original = image.read_bytes()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(image)
    start = len(stage_mod.EVENTS)
    try:
        run_chain(cfg)
        computed = {e.stage for e in stage_mod.EVENTS[start:] if e.action == "computed"}
    finally:
        image.write_bytes(original)
        run_chain(cfg)
    ok = {"manifest", "features_shard", "features"} <= computed
    return {"stage": "pool", "fault": "image", "outcome": "recovered" if ok else "silently wrong", "detail": ""}


def change_config(cfg: RunConfig, baseline: dict[str, StageRecord]) -> dict:
    """Change selection.temperature: only the selection round and what follows it are recomputed."""
    changed = cfg.model_copy(update={"selection": cfg.selection.model_copy(update={"temperature": 0.7})})
    start = len(stage_mod.EVENTS)
    run_chain(changed)
    computed = {e.stage for e in stage_mod.EVENTS[start:] if e.action == "computed"}
    run_chain(cfg)
    ok = computed <= {"select", "train", "probe"} and "select" in computed
    return {"stage": "select", "fault": "config", "outcome": "recovered" if ok else "silently wrong", "detail": ""}
