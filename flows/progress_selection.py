"""The PROGRESS selection flow (arXiv 2506.01085; DESIGN §1-§3).

features → dual k-means → COINCIDE warm-up pools → train W1 → probe → train W2 → probe →
loop { select → train → probe } until FINAL_STEP, the round budget or an exhausted pool.

The loop is plain Python unrolled at run time, so the UI shows one task run per stage per round
(``select[r=3]``, ``train[r=3]``, ``probe[r=3]``). Every stage is cached by content (``tasks/stage.py``): re-running
or retrying with the same config and run directory re-executes nothing that completed and continues from the
first round without a committed selection; the last selected batch is trained too (SPEC §7.6 fixed).

A round advances ``len(new) // global_batch`` steps (SPEC §3.4), at least one: a selection smaller than one
batch is still trained (one step, its samples cycled) rather than silently dropped. The last round's budget
is cut to what fits before FINAL_STEP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import prefect.runtime as prefect_runtime
from prefect import flow, get_run_logger
from prefect.cache_policies import NO_CACHE

from flows.approval import approve_after_warmup
from flows.feature_shards import run_feature_shards
from progress_core.clustering import PAPER_ANNOTATION_K, PAPER_SELECTION_K, resolve_k
from progress_core.config import RunConfig
from progress_core.features import shard_ranges
from progress_core.report import write_concept_report
from progress_core.rounds import next_step
from progress_core.validation import validate_run
from tasks._tables import cluster_ids
from tasks.artifacts import publish_round, publish_summary, set_progress, start_progress
from tasks.clustering import kmeans_stage
from tasks.data import image_fingerprint, manifest_stage, pool_fingerprint, prepare_pool
from tasks.export import export_stage
from tasks.features import combine_stage, import_fingerprint, import_stage
from tasks.probe import probe_stage
from tasks.selection import commit_warmup_stage, select_stage
from tasks.stage import StageRecord, finish_run, run_stage, skip_counts
from tasks.training import init_model_stage, train_stage
from tasks.warmup import coincide_order_stage, warmup_stage


def round_dir(run: Path, round_index: int) -> Path:
    return run / "rounds" / f"r{round_index:02d}"


@dataclass
class PreparedData:
    """Records of the stages before the rounds (DESIGN §2: manifest → features → clusters → pools)."""

    pool: StageRecord
    manifest: StageRecord
    features: StageRecord
    annotation: StageRecord
    selection_clusters: StageRecord
    pools: StageRecord


def feature_stage(cfg: RunConfig, manifest: StageRecord, shared: Path) -> StageRecord:
    """Features imported from files (``features.import_*``) or extracted shard by shard on the configured
    task runner (``orchestration``), then combined into ``features.npy``."""
    features_cfg = cfg.feature_config()
    out_dir = shared / "features"
    sources = features_cfg.import_sources()
    if sources:
        return run_stage(
            import_stage,
            manifest=manifest,
            sources=sources,
            fingerprint=import_fingerprint(sources, out_dir),
            balanced=features_cfg.balanced,
            out_dir=out_dir,
        )
    ranges = shard_ranges(manifest.rows["manifest"], cfg.shard_size)
    shards = run_feature_shards(manifest, features_cfg, ranges, str(out_dir / "shards"), cfg.orchestration)
    return run_stage(combine_stage, shards=shards, balanced=features_cfg.balanced, out_dir=out_dir)


def prepare_stages(cfg: RunConfig, shared: Path) -> PreparedData:
    """Pool, manifest, features (one task per shard), dual k-means and COINCIDE warm-up pools, under ``shared``."""
    pool = run_stage(prepare_pool, data=cfg.data, fingerprint=pool_fingerprint(cfg.data), out_dir=shared / "data")
    manifest = run_stage(
        manifest_stage,
        pool=pool,
        mode=cfg.data.manifest_mode,
        allow_duplicate_ids=cfg.data.allow_duplicate_ids,
        images=image_fingerprint(pool, cfg.data.hash_images),
        out_dir=shared / "manifest",
    )
    n = manifest.rows["manifest"]
    features = feature_stage(cfg, manifest, shared)

    k_annotation = resolve_k(cfg.clustering.annotation_k, n, PAPER_ANNOTATION_K)
    k_selection = resolve_k(cfg.clustering.selection_k, n, PAPER_SELECTION_K)
    annotation = run_stage(
        kmeans_stage,
        features=features,
        name="annotation",
        k=k_annotation,
        settings=cfg.clustering_config(),
        out_dir=shared / "clusters" / "annotation",
    )
    selection_clusters = run_stage(
        kmeans_stage,
        features=features,
        name="selection",
        k=k_selection,
        settings=cfg.clustering_config(),
        out_dir=shared / "clusters" / "selection",
    )
    pools = run_stage(
        warmup_stage,
        features=features,
        selection_clusters=selection_clusters,
        settings=cfg.warmup,
        out_dir=shared / "warmup",
    )

    return PreparedData(pool, manifest, features, annotation, selection_clusters, pools)


@flow(name="progress-selection", log_prints=True, validate_parameters=True)
def progress_selection(config: RunConfig = RunConfig()) -> dict:
    """Run PROGRESS data selection end to end on ``config`` (resumable; see module docstring)."""
    log = get_run_logger()
    cfg = config
    validate_run(cfg)
    run = Path(cfg.run_dir).resolve()
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(cfg.model_dump_json(indent=2))
    shared = Path(cfg.shared_dir).resolve() if cfg.shared_dir else run
    log.info("run directory: %s", run)

    prepared = prepare_stages(cfg, shared)
    pool, manifest, features = prepared.pool, prepared.manifest, prepared.features
    annotation, selection_clusters, pools = prepared.annotation, prepared.selection_clusters, prepared.pools
    n = manifest.rows["manifest"]
    k_annotation, k_selection = annotation.meta["k"], selection_clusters.meta["k"]

    gb = cfg.training.global_batch_size
    final_step = cfg.final_step(n)
    training = cfg.training_config(final_step)
    probe_cfg = cfg.probe_config()
    coincide_order = None
    if cfg.selection.strategy == "coincide":
        coincide_order = run_stage(
            coincide_order_stage,
            features=features,
            selection_clusters=selection_clusters,
            budget=min(n, final_step * gb),
            settings=cfg.warmup,
            out_dir=shared / "coincide",
        )
    log.info(
        "pool %d samples, %d annotation / %d selection clusters, W1 %d, W2 %d, FINAL_STEP %d at batch %d",
        n,
        k_annotation,
        k_selection,
        pools.rows["w1"],
        pools.rows["w2"],
        final_step,
        gb,
    )

    checkpoint = run_stage(init_model_stage, manifest=manifest, settings=training.model, out_dir=shared / "model_init")
    annotation_ids = cluster_ids(annotation)
    progress_id = start_progress(str(run))
    rows: list[dict] = []
    commits: list[StageRecord] = []
    probes: list[StageRecord] = []
    steps: list[int] = []
    step = 0
    selected = remaining = None
    round_index = 0
    while step < final_step:
        started = time.monotonic()
        rdir = round_dir(run, round_index)
        approve_after_warmup(cfg, run, round_index, rows, step, final_step)
        if round_index < 2:
            commit = run_stage(
                commit_warmup_stage,
                pools=pools,
                pool_name=("w1", "w2")[round_index],
                selected_before=selected,
                remaining_before=remaining,
                n_samples=n,
                round_index=round_index,
                step=step,
                out_dir=rdir / "select",
            )
            spc = None
        else:
            if remaining.rows["remaining_after"] == 0:
                log.info("pool exhausted after round %d; stopping at step %d", round_index - 1, step)
                break
            if cfg.schedule.max_rounds is not None and round_index - 2 >= cfg.schedule.max_rounds:
                log.info("max_rounds=%d reached; stopping at step %d", cfg.schedule.max_rounds, step)
                break
            budget = min(cfg.selection.selection_num, (final_step - step) * gb)
            commit = run_stage(
                select_stage,
                settings=cfg.selection,
                budget=budget,
                seed=cfg.seed,
                annotation=annotation,
                selected_before=selected,
                remaining_before=remaining,
                acc_prev=probes[-2],
                acc_now=probes[-1],
                coincide_order=coincide_order,
                n_samples=n,
                round_index=round_index,
                step=step,
                out_dir=rdir / "select",
            )
            for note in commit.meta.get("notes", []):
                log.info("round %d: %s", round_index, note)
            spc = cfg.probe.samples_per_cluster
        if commit.rows["new"] == 0:
            log.info("round %d selected nothing; stopping at step %d", round_index, step)
            break
        target = min(max(next_step(step, commit.rows["new"], gb), step + 1), final_step)
        checkpoint = run_stage(
            train_stage,
            start=checkpoint,
            samples=commit,
            manifest=manifest,
            target_step=target,
            settings=training,
            round_index=round_index,
            out_dir=rdir / "train",
        )
        probe = run_stage(
            probe_stage,
            checkpoint=checkpoint,
            selected=commit,
            annotation=annotation,
            manifest=manifest,
            samples_per_cluster=spc,
            seed=cfg.seed + round_index,
            settings=probe_cfg,
            round_index=round_index,
            out_dir=rdir / "probe",
        )
        probe.meta["step"] = target
        rows.append(
            publish_round.with_options(cache_policy=NO_CACHE)(
                run_dir=str(run),
                round_index=round_index,
                step=step,
                next_step=target,
                commit=commit,
                probe_after=probe,
                train=checkpoint,
                annotation_ids=annotation_ids,
                manifest=manifest,
                seconds=time.monotonic() - started,
            )
        )
        set_progress(progress_id, target, final_step)
        log.info(
            "round %d done: steps %d→%d, %d new, %d selected so far, probe accuracy %.3f",
            round_index,
            step,
            target,
            commit.rows["new"],
            commit.rows["selected_until"],
            rows[-1]["probe_accuracy"],
        )
        commits.append(commit)
        probes.append(probe)
        steps.append(target)
        selected = remaining = commit
        step = target
        round_index += 1

    export = None
    if cfg.export_original and commits:
        export = run_stage(
            export_stage,
            manifest=manifest,
            annotation=annotation,
            pools=pools,
            rounds=commits,
            probes=probes,
            steps=steps,
            selection_num=cfg.selection.selection_num,
            out_dir=run / "export",
        )
    final_selection = commits[-1].files["selected_until"] if commits else None
    report = None
    if commits and manifest.meta.get("labels"):
        report = write_concept_report(
            manifest.files["manifest"],
            manifest.meta["labels"],
            [
                {"round": i, "to_step": t, "new_path": c.files["new"], "probe_path": p.files["per_sample"]}
                for i, (c, p, t) in enumerate(zip(commits, probes, steps))
            ],
            run,
        )
        log.info("concept report: %s", report["plot"])
    summary = {
        "run_dir": str(run),
        "flow_run_id": str(prefect_runtime.flow_run.id),
        "final_step": final_step,
        "step": step,
        "rounds": rows,
        "final_selection": final_selection,
        "export_dir": export.out_dir if export else None,
        "n_samples": n,
        "final_checkpoint": checkpoint.files.get("checkpoint"),
        "final_checkpoint_key": checkpoint.content_hash,
        "concept_report": str(report["plot"]) if report else None,
        "concept_summary": str(report["summary"]) if report else None,
        "eval_json": pool.files.get("eval_json"),
        "labels": pool.files.get("labels"),
        "image_root": pool.meta.get("image_root"),
    }
    summary["skipped"] = skip_counts(manifest, features)
    records = [*vars(prepared).values(), coincide_order, export, *commits, *probes, shared / "model_init"]
    records += [Path(c.out_dir).parent / "train" for c in commits]
    keep = [run / "config.json", run / "summary.json", *(report.values() if report else ())]
    summary.update(finish_run(run, records, keep))
    if summary["stale_moved"]:
        log.info("moved %d outdated files to %s", summary["stale_moved"], summary["stale_dir"])
    publish_summary(str(run), rows, final_step, summary)
    (run / "summary.json").write_text(_json(summary))
    return summary


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))
