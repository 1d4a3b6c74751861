"""The PROGRESS selection flow (arXiv 2506.01085 §3; ``docs/architecture.md#orchestration``).

prepare (pool → manifest → features → dual k-means → COINCIDE warm-up pools) → warm-up (train W1, probe;
train W2, probe) → for each planned round: select, train, probe → export → report.

The rounds follow the pure schedule of :mod:`progress_core.selection.schedule` (``docs/algorithm.md#round-schedule``):
every selected sample is trained, selection budgets are whole global batches, no tiny tail rounds. The loop
is plain Python unrolled at run time, so the UI shows one task run per stage per round (``select[r=3]``,
``train[r=3]``, ``probe[r=3]``). Every stage is cached by content (``tasks/stage.py``): re-running with the same
config and run directory re-executes nothing that completed and continues from the first round without a
committed selection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import prefect.runtime as prefect_runtime
from prefect import flow, get_run_logger
from prefect.cache_policies import NO_CACHE

from flows.approval import approve_after_warmup
from flows.feature_shards import run_feature_shards
from flows.runners import InterruptibleThreadPoolTaskRunner
from flows.stage_inputs import kmeans_k, probe_inputs, select_inputs
from progress_core.features.extract import shard_ranges
from progress_core.id_sets import read_ids, write_ids
from progress_core.reporting.report import write_concept_report
from progress_core.reporting.summary import RoundSummary, RunSummary, format_accuracy, total_seconds
from progress_core.run.config import RunConfig
from progress_core.run.lock import hold_run_dir
from progress_core.run.validation import validate_run
from progress_core.selection.config import LABEL_STRATEGIES
from progress_core.selection.schedule import (
    RoundPlan,
    ScheduleState,
    advance,
    coincide_budget,
    horizon,
    initial_state,
    next_round,
    plan_from,
    steps_for_new,
)
from progress_core.training.config import TrainingConfig
from tasks._tables import cluster_ids
from tasks.artifacts import publish_round, publish_summary, set_progress, start_progress
from tasks.clustering import kmeans_stage
from tasks.export import export_stage
from tasks.feature_combine import combine_stage
from tasks.feature_import import import_fingerprint, import_stage
from tasks.manifest import image_fingerprint, manifest_stage
from tasks.model_init import init_model_stage
from tasks.pool import pool_fingerprint, prepare_pool
from tasks.probe import probe_stage
from tasks.report import publish_run_report
from tasks.selection import commit_warmup_stage, select_stage
from tasks.stage import StageRecord, run_stage, skip_counts
from tasks.stage import finish_run as write_run_manifest
from tasks.training import train_stage
from tasks.warmup import coincide_order_stage, warmup_stage


def round_dir(run: Path, round_index: int) -> Path:
    return run / "rounds" / f"r{round_index:02d}"


@dataclass
class PreparedData:
    """Records of the stages before the rounds: manifest → features → clusters → warm-up pools
    (``docs/architecture.md#a-round-through-the-files``)."""

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
    shards = run_feature_shards(
        manifest, features_cfg.extraction_settings(), ranges, str(out_dir / "shards"), cfg.orchestration
    )
    return run_stage(combine_stage, shards=shards, balanced=features_cfg.balanced, out_dir=out_dir)


def prepare_stages(cfg: RunConfig, shared: Path) -> PreparedData:
    """Pool, manifest, features (one task per shard), dual k-means and COINCIDE warm-up pools, under ``shared``."""
    pool = run_stage(
        prepare_pool, data=cfg.data.pool_settings(), fingerprint=pool_fingerprint(cfg.data), out_dir=shared / "data"
    )
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

    annotation = run_stage(
        kmeans_stage,
        features=features,
        name="annotation",
        k=kmeans_k(cfg, "annotation", n),
        settings=cfg.clustering_config().kmeans_settings(),
        out_dir=shared / "clusters" / "annotation",
    )
    selection_clusters = run_stage(
        kmeans_stage,
        features=features,
        name="selection",
        k=kmeans_k(cfg, "selection", n),
        settings=cfg.clustering_config().kmeans_settings(),
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


def init_model_dir(shared: Path, init_seed: int) -> Path:
    """Initial model of the run's seed (seed 0 keeps the plain name, so existing runs stay valid)."""
    return shared / ("model_init" if init_seed == 0 else f"model_init_seed{init_seed}")


@dataclass(frozen=True)
class RoundOutcome:
    """What one round produced: the committed selection, the trained checkpoint, the probe after it."""

    commit: StageRecord
    checkpoint: StageRecord
    probe: StageRecord
    to_step: int
    stage_seconds: dict[str, float]


def _timed(fn, *args, **kwargs) -> tuple[Any, float]:
    started = time.monotonic()
    out = fn(*args, **kwargs)
    return out, round(time.monotonic() - started, 3)


def _select(
    plan: RoundPlan, cfg: RunConfig, rdir: Path, prepared: PreparedData, setup: RunSetup, rounds: RoundsSoFar
) -> tuple[StageRecord, float]:
    """Commit the warm-up pool of a warm-up round, or select the round's budget (PROGRESS §3.3); timed."""
    last, probes = rounds.last, rounds.probes
    common = dict(
        selected_before=last,
        remaining_before=last,
        n_samples=setup.n,
        round_index=plan.index,
        step=plan.from_step,
        out_dir=rdir / "select",
    )
    if plan.kind == "warmup":
        return _timed(run_stage, commit_warmup_stage, pools=prepared.pools, pool_name=plan.pool, **common)
    return _timed(
        run_stage,
        select_stage,
        **select_inputs(plan, cfg),
        annotation=prepared.annotation,
        acc_prev=probes[-2],
        acc_now=probes[-1],
        coincide_order=setup.coincide_order,
        **({"manifest": prepared.manifest} if cfg.selection.strategy in LABEL_STRATEGIES else {}),
        **common,
    )


def _train_and_probe(
    plan: RoundPlan,
    cfg: RunConfig,
    rdir: Path,
    prepared: PreparedData,
    setup: RunSetup,
    start: StageRecord,
    commit: StageRecord,
    to_step: int,
) -> tuple[StageRecord, StageRecord, dict[str, float]]:
    """Train from ``start`` on the committed samples to ``to_step``, then probe the checkpoint (PROGRESS §3.2)."""
    trained, t_train = _timed(
        run_stage,
        train_stage,
        start=start,
        samples=commit,
        manifest=prepared.manifest,
        target_step=to_step,
        settings=setup.training,
        round_index=plan.index,
        out_dir=rdir / "train",
    )
    probe, t_probe = _timed(
        run_stage,
        probe_stage,
        checkpoint=trained,
        selected=commit,
        annotation=prepared.annotation,
        manifest=prepared.manifest,
        **probe_inputs(plan, cfg),
        round_index=plan.index,
        to_step=to_step,
        out_dir=rdir / "probe",
    )
    return trained, probe, {"train": t_train, "probe": t_probe}


def run_round(
    plan: RoundPlan,
    cfg: RunConfig,
    run: Path,
    prepared: PreparedData,
    setup: RunSetup,
    rounds: RoundsSoFar,
) -> RoundOutcome:
    """Select (or commit a warm-up pool), train to the round's step, probe: one round of PROGRESS §3.4."""
    rdir = round_dir(run, plan.index)
    commit, t_select = _select(plan, cfg, rdir, prepared, setup, rounds)
    to_step = plan.from_step + steps_for_new(commit.rows["new"], cfg.training.global_batch_size)
    if commit.rows["new"] == 0:
        probe_before = rounds.probes[-1] if rounds.probes else None
        return RoundOutcome(commit, rounds.checkpoint, probe_before, plan.from_step, {"select": t_select})
    trained, probe, seconds = _train_and_probe(plan, cfg, rdir, prepared, setup, rounds.checkpoint, commit, to_step)
    return RoundOutcome(commit, trained, probe, to_step, {"select": t_select, **seconds})


def _round_summary(row: dict, plan: RoundPlan, outcome: RoundOutcome, cfg: RunConfig) -> RoundSummary:
    original = not cfg.selection.redistribute_overflow or cfg.selection.fallback_when_no_progress == "original"
    return RoundSummary(
        **{k: row[k] for k in RoundSummary.model_fields if k in row},
        budget=plan.budget,
        stage_seconds=outcome.stage_seconds,
        quota_mode="-"
        if plan.kind == "warmup" or cfg.selection.strategy != "progress"
        else ("original" if original else "redistribute"),
        notes=list(outcome.commit.meta.get("notes", [])),
    )


@dataclass
class RunSetup:
    """What every round needs beyond the prepared data: the schedule, the trainer's settings, the COINCIDE
    order (strategy ``coincide`` only)."""

    n: int
    final_step: int
    training: TrainingConfig
    coincide_order: StageRecord | None
    initial_model: StageRecord
    init_seconds: float


@dataclass
class RoundsSoFar:
    """The flow's own record of the rounds it ran (stage outputs are never modified)."""

    state: ScheduleState
    checkpoint: StageRecord
    summaries: list[RoundSummary] = field(default_factory=list)
    commits: list[StageRecord] = field(default_factory=list)
    probes: list[StageRecord] = field(default_factory=list)

    @property
    def last(self) -> StageRecord | None:
        return self.commits[-1] if self.commits else None

    def add(self, outcome: RoundOutcome, summary: RoundSummary) -> None:
        self.summaries.append(summary)
        self.commits.append(outcome.commit)
        self.probes.append(outcome.probe)
        self.checkpoint = outcome.checkpoint
        self.state = advance(self.state, outcome.commit.rows["new"])


def set_up_rounds(cfg: RunConfig, shared: Path, prepared: PreparedData) -> tuple[RunSetup, ScheduleState]:
    """Plan the schedule (its last step is the trainer's horizon), build the initial model of the seed."""
    n = prepared.manifest.rows["manifest"]
    pools = prepared.pools
    state = initial_state(cfg, n, (pools.rows["w1"], pools.rows["w2"]))
    final_step = horizon(plan_from(state), cfg.final_step(n))
    training = cfg.training_config(final_step)
    coincide_order = None
    if cfg.selection.strategy == "coincide":
        coincide_order = run_stage(
            coincide_order_stage,
            features=prepared.features,
            selection_clusters=prepared.selection_clusters,
            budget=coincide_budget(final_step, cfg.training.global_batch_size, n, (pools.rows["w1"], pools.rows["w2"])),
            settings=cfg.warmup.pruning_settings(),
            out_dir=shared / "coincide",
        )
    model, seconds = _timed(
        run_stage,
        init_model_stage,
        manifest=prepared.manifest,
        settings=training.model,
        out_dir=init_model_dir(shared, training.model.init_seed),
    )
    setup = RunSetup(n, final_step, training, coincide_order, model, seconds)
    return setup, state


def record_round(
    run: Path, plan: RoundPlan, outcome: RoundOutcome, cfg: RunConfig, prepared: PreparedData, seconds: float
) -> RoundSummary:
    """Publish the round's artifacts and return its typed summary."""
    row = publish_round.with_options(cache_policy=NO_CACHE)(
        run_dir=str(run),
        round_index=plan.index,
        step=plan.from_step,
        next_step=outcome.to_step,
        commit=outcome.commit,
        probe_after=outcome.probe,
        train=outcome.checkpoint,
        annotation_ids=cluster_ids(prepared.annotation),
        manifest=prepared.manifest,
        seconds=seconds,
    )
    return _round_summary(row, plan, outcome, cfg)


def final_selection_file(run: Path, commit: StageRecord, step: int) -> str:
    """The final set named by the step it was trained to, ``final/selected_until_<step>.parquet`` (a round's own
    ``selected_until_<step>`` is named by the step its selection was made at, before training)."""
    return str(write_ids(read_ids(commit.files["selected_until"]), run / "final" / f"selected_until_{step}.parquet"))


def finish_rounds(
    cfg: RunConfig, run: Path, prepared: PreparedData, setup: RunSetup, rounds: RoundsSoFar, prepare_seconds: float
) -> RunSummary:
    """Export to the original file names, write the concept report and the typed run summary."""
    manifest, commits, probes = prepared.manifest, rounds.commits, rounds.probes
    steps = [p.meta["step"] for p in probes]
    export = None
    if cfg.export_original and commits:
        export = run_stage(
            export_stage,
            manifest=manifest,
            annotation=prepared.annotation,
            pools=prepared.pools,
            rounds=commits,
            probes=probes,
            steps=steps,
            selection_num=cfg.selection.selection_num,
            remaining=cfg.export_remaining,
            out_dir=run / "export",
        )
    concept = None
    if commits and manifest.meta.get("labels"):
        concept = write_concept_report(
            manifest.files["manifest"],
            manifest.meta["labels"],
            [
                {"round": i, "to_step": t, "new_path": c.files["new"], "probe_path": p.files["per_sample"]}
                for i, (c, p, t) in enumerate(zip(commits, probes, steps))
            ],
            run,
        )
    return RunSummary(
        run_dir=str(run),
        flow_run_id=str(prefect_runtime.flow_run.id),
        strategy=cfg.selection.strategy,
        seed=cfg.seed,
        final_step=setup.final_step,
        step=rounds.state.step,
        n_samples=setup.n,
        n_selected=commits[-1].rows["selected_until"] if commits else 0,
        rounds=rounds.summaries,
        stage_seconds=total_seconds(rounds.summaries, {"prepare": prepare_seconds, "init_model": setup.init_seconds}),
        final_selection=final_selection_file(run, commits[-1], rounds.state.step) if commits else None,
        export_dir=export.out_dir if export else None,
        final_checkpoint=rounds.checkpoint.files.get("checkpoint"),
        final_checkpoint_key=rounds.checkpoint.content_hash,
        concept_report=str(concept["plot"]) if concept else None,
        concept_summary=str(concept["summary"]) if concept else None,
        eval_json=prepared.pool.files.get("eval_json"),
        labels=prepared.pool.files.get("labels"),
        image_root=prepared.pool.meta.get("image_root"),
    )


def record_run_outputs(
    run: Path, prepared: PreparedData, setup: RunSetup, rounds: RoundsSoFar, summary: RunSummary
) -> RunSummary:
    """``run_manifest.json`` of every current output; round and export files of an older schedule moved to
    ``stale/``; rows left out by reason (docs/architecture.md#stage-contract)."""
    records = [*vars(prepared).values(), setup.coincide_order, setup.initial_model, summary.export_dir]
    records += [*rounds.commits, *rounds.probes, *(Path(c.out_dir).parent / "train" for c in rounds.commits)]
    keep = [run / "config.json", run / "summary.json", *([summary.final_selection] if summary.final_selection else [])]
    outputs = write_run_manifest(run, records, keep=keep, sweep=SWEPT)
    return summary.model_copy(
        update={
            "skipped": skip_counts(prepared.manifest, prepared.features),
            "run_manifest": outputs["manifest"],
            "stale_moved": outputs["stale_moved"],
            "stale_dir": outputs["stale_dir"],
        }
    )


SWEPT = ("rounds", "export", "final")
"""Run subfolders whose files an older config can leave behind; reports and evaluations beside them stay."""


def _selection_run_name() -> str:
    """The run's name in the UI's run list, as the deployments name theirs (``flows/entry.py``): strategy,
    run directory, budget, seed and start time, for runs started by ``progress run`` and ``progress demo``."""
    from datetime import datetime

    from flows.run_names import flow_run_name

    given = prefect_runtime.flow_run.parameters.get("config")
    try:
        cfg = given if isinstance(given, RunConfig) else RunConfig.model_validate(given or {})
    except (ValueError, TypeError):
        return f"progress-selection · {datetime.now():%m-%d %H:%M:%S}"
    short = {
        "strategy": cfg.selection.strategy,
        "run_dir": cfg.run_dir,
        "budget": cfg.selection.selection_num or "auto",
    }
    return flow_run_name({**short, "seed": cfg.seed}, datetime.now())


@flow(
    name="progress-selection",
    log_prints=True,
    validate_parameters=True,
    task_runner=InterruptibleThreadPoolTaskRunner(),
    flow_run_name=_selection_run_name,
)
def progress_selection(config: RunConfig = RunConfig()) -> dict:
    """Run PROGRESS data selection end to end on ``config`` (resumable; see module docstring)."""
    log = get_run_logger()
    cfg = config
    validate_run(cfg)
    run = Path(cfg.run_dir).resolve()
    with hold_run_dir(run, log.warning):
        return select_in_run_dir(cfg, run)


def select_in_run_dir(cfg: RunConfig, run: Path) -> dict:
    """The flow's work while it holds the run directory (``progress_core/run/lock.py``: one run per directory)."""
    log = get_run_logger()
    (run / "config.json").write_text(cfg.model_dump_json(indent=2))
    shared = Path(cfg.shared_dir).resolve() if cfg.shared_dir else run

    prepared, prepare_seconds = _timed(prepare_stages, cfg, shared)
    cfg, notes = cfg.sized_to_pool(prepared.manifest.rows["manifest"])
    scaled = [note for note in notes if not note.startswith("probe.")]
    if scaled and prepared.manifest.rows["manifest"] != cfg.pool_scale.rows:
        log.info("scaled to the pool (set these fields to override): %s", "; ".join(scaled))
    for note in notes[len(scaled) :]:
        log.info("%s", note)
    setup, state = set_up_rounds(cfg, shared, prepared)
    log.info(
        "%s: pool %d, W1 %d, W2 %d, %d annotation clusters; %d steps planned at batch %d",
        run,
        setup.n,
        prepared.pools.rows["w1"],
        prepared.pools.rows["w2"],
        prepared.annotation.meta["k"],
        setup.final_step,
        cfg.training.global_batch_size,
    )
    rounds = RoundsSoFar(state, setup.initial_model)
    progress_id = start_progress(str(run))
    while (plan := next_round(rounds.state)) is not None:
        approve_after_warmup(cfg, run, rounds.state, [s.model_dump() for s in rounds.summaries])
        started = time.monotonic()
        outcome = run_round(plan, cfg, run, prepared, setup, rounds)
        for note in outcome.commit.meta.get("notes", []):
            log.info("round %d: %s", plan.index, note)
        if outcome.commit.rows["new"] == 0:
            log.info("round %d selected nothing; stopping at step %d", plan.index, plan.from_step)
            break
        rounds.add(outcome, record_round(run, plan, outcome, cfg, prepared, time.monotonic() - started))
        set_progress(progress_id, outcome.to_step, setup.final_step)
        log.info(
            "round %d: steps %d→%d, %d new of budget %d, probe accuracy %s",
            plan.index,
            plan.from_step,
            outcome.to_step,
            outcome.commit.rows["new"],
            plan.budget,
            format_accuracy(rounds.summaries[-1].probe_accuracy),
        )

    summary = finish_rounds(cfg, run, prepared, setup, rounds, prepare_seconds)
    rows = [r.model_dump() for r in summary.rounds]
    summary = publish_run_report(summary, prepared.manifest, rows)
    summary = record_run_outputs(run, prepared, setup, rounds, summary)
    if summary.stale_moved:
        log.info("moved %d outdated files to %s", summary.stale_moved, summary.stale_dir)
    publish_summary(str(run), rows, setup.final_step, summary.model_dump())
    summary.write(run / "summary.json")
    return summary.model_dump(mode="json")
