"""Compare selection strategies at equal budgets over seeds (``docs/algorithm.md#selection``; PROGRESS §4).

For every budget × strategy × seed (× sweep value) one ``progress_selection`` run trains from the same
warm-up and is evaluated on the held-out split. At one budget every strategy follows the same round
schedule, so each ends with the same samples selected *and trained* and the same steps; ``full`` trains the
whole pool once (the same steps per sample) as the ceiling. A seed sets the model initialisation, the
training order, the selection draw and the probe sample (``seed``, ``training.seed``,
``training.model.init_seed``). The stages before the rounds (pool, features, clusters, warm-up pools, one
initial model per seed) live in one shared directory and are computed once.

Each finished run leaves ``result.json`` (its config digest, accuracy and seconds per stage); a run whose
digest matches is reused without starting it, so adding a seed, a budget or a strategy computes only the new
runs. Results: ``comparison.parquet`` (one row per strategy, budget, seed: n_selected, steps, accuracy,
seconds per stage), ``comparison_concepts.parquet`` (per concept) and ``report.html``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger

from flows.progress_selection import progress_selection, run_stage
from progress_core.base import unkeyed_at_defaults
from progress_core.data.statistics import majority_baseline
from progress_core.errors import ConfigError
from progress_core.io import write_json, write_parquet
from progress_core.run.config import RunConfig, _merge
from progress_core.run.lock import hold_run_dir
from progress_core.run.validation import concept_source_problems, label_refusal
from progress_core.selection.config import LABEL_STRATEGIES
from progress_core.selection.strategies import available_strategies
from tasks.evaluation import evaluate_stage
from tasks.holdout import file_stamp, holdout_stage
from tasks.report import publish_comparison_report

DEFAULT_STRATEGIES = ["progress", "random", "tfs", "coincide"]
RESULT_FILE = "result.json"


def _budget_label(budget: float) -> str:
    return f"b{budget:g}"


def _variant_label(field: str | None, value: Any) -> str:
    """``temperature=0.25``; a mapping of several fields is ``allocation=damped,progress_signal=gain``."""
    if field is None:
        return ""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return f"{field.split('.')[-1]}={value}"


def run_config(
    config: RunConfig,
    base: Path,
    shared: Path,
    strategy: str,
    budget: float,
    seed: int,
    sweep: tuple[str, Any] | None = None,
) -> RunConfig:
    """The config of one run of the comparison (module docstring: what a seed sets)."""
    variant = _variant_label(*(sweep or (None, None)))
    name = strategy + (f"[{variant}]" if variant else "")
    data = config.model_dump()
    overrides: dict[str, Any] = {
        "run_dir": str(base / _budget_label(budget) / name / f"seed{seed}"),
        "shared_dir": str(shared),
        "seed": seed,
        "export_original": False,
        "selection": {"strategy": strategy},
        "schedule": {"budget_fraction": budget, "final_step": None},
        "training": {"seed": seed, "model": {"init_seed": seed}},
    }
    if sweep is not None:
        node: dict[str, Any] = {}
        top = node
        parts = sweep[0].split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = sweep[1]
        overrides = _merge(overrides, top)
    return RunConfig.model_validate(_merge(data, overrides))


def config_digest(cfg: RunConfig) -> str:
    """What decides whether a finished run is reused: the whole configuration, its UNKEYED settings (how a run
    goes, not what it writes, e.g. ``training.data_workers``) taken at their defaults."""
    return hashlib.sha256(unkeyed_at_defaults(cfg).model_dump_json().encode()).hexdigest()[:16]


def _reusable(run_dir: Path, digest: str) -> dict | None:
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if result.get("digest") == digest and Path(result.get("concepts", "")).is_file() else None


def _evaluate(cfg: RunConfig, summary: dict, eval_split: dict, label: str) -> tuple[dict, float]:
    import time

    started = time.monotonic()
    record = run_stage(
        evaluate_stage,
        checkpoint=summary["final_checkpoint"],
        checkpoint_key=summary["final_checkpoint_key"],
        eval_json=eval_split["eval_json"],
        image_root=eval_split["image_root"],
        labels=eval_split["labels"],
        settings=cfg.probe_config(),
        label=label,
        out_dir=Path(cfg.run_dir) / "evaluation",
    )
    return {"accuracy": record.meta["accuracy"], "concepts": record.files["concepts"]}, time.monotonic() - started


def _one_run(cfg: RunConfig, label: str, eval_split: dict | None, log) -> dict:
    run_dir = Path(cfg.run_dir)
    digest = config_digest(cfg)
    reused = _reusable(run_dir, digest)
    if reused is not None:
        log.info("%s: reused (%s)", label, run_dir)
        return reused
    summary = progress_selection.with_options(flow_run_name=label.replace(" ", "-"))(config=cfg)
    split = eval_split or {
        "eval_json": summary.get("eval_json"),
        "image_root": summary.get("image_root"),
        "labels": summary.get("labels"),
    }
    if not (split["eval_json"] and split["labels"]):
        raise ConfigError("the comparison needs a held-out split: set data.holdout_fraction > 0 for a pool without one")
    evaluation, seconds = _evaluate(cfg, summary, split, label)
    result = {
        "digest": digest,
        "run_dir": str(run_dir),
        "n_selected": summary["n_selected"],
        "steps": summary["step"],
        "final_step": summary["final_step"],
        "rounds": len(summary["rounds"]),
        "accuracy": evaluation["accuracy"],
        "concepts": evaluation["concepts"],
        "seconds": {**summary["stage_seconds"], "evaluate": round(seconds, 3)},
        "report_html": summary.get("report_html"),
    }
    write_json(result, run_dir / RESULT_FILE, indent=2)
    log.info(
        "%s: held-out accuracy %.3f (%d selected, %d steps)",
        label,
        result["accuracy"],
        result["n_selected"],
        result["steps"],
    )
    return result


def held_out_split(config: RunConfig, shared: Path, log) -> tuple[RunConfig, dict | None]:
    """The evaluation split: the bundled pool's own (None here), a user's ``data.eval_json``, or
    ``data.holdout_fraction`` of a user's pool held out (the runs then select from the rest)."""
    if not config.data.pool_json:
        if config.data.synthetic_n_eval == 0:
            raise ConfigError("the comparison needs a held-out split: set data.synthetic_n_eval > 0")
        return config, None
    data = config.data
    split = run_stage(
        holdout_stage,
        pool_json=data.pool_json,
        eval_json=data.eval_json,
        image_root=data.image_root,
        fraction=data.holdout_fraction,
        seed=data.synthetic_seed,
        out_dir=shared / "holdout",
        concept_labels=data.concept_labels,
        concept_field=data.concept_field,
        concepts_stamp=file_stamp(data.concept_labels),
    )
    files = {
        "eval_json": split.files["eval_json"],
        "image_root": split.meta["image_root"],
        "labels": split.files["labels"],
    }
    if not config.data.eval_json:
        config = config.model_copy(
            update={"data": config.data.model_copy(update={"pool_json": split.files["pool_json"]})}
        )
        log.info(
            "held out %d rows for evaluation (data.holdout_fraction=%s)",
            split.rows["eval"],
            config.data.holdout_fraction,
        )
    return config, files


def _row(strategy: str, variant: str, budget: float, seed: int, result: dict) -> dict:
    row = {
        "strategy": strategy,
        "variant": variant,
        "budget": float(budget),
        "seed": int(seed),
        "n_selected": int(result["n_selected"]),
        "steps": int(result["steps"]),
        "rounds": int(result["rounds"]),
        "accuracy": float(result["accuracy"]),
        "run_dir": result["run_dir"],
    }
    row.update({f"seconds_{k}": float(v) for k, v in result["seconds"].items()})
    return row


def _named(frame: pd.DataFrame) -> pd.DataFrame:
    """Strategy names carry the sweep value (``progress[temperature=0.25]``)."""
    frame["strategy"] = [s + (f"[{v}]" if v else "") for s, v in zip(frame["strategy"], frame["variant"])]
    return frame


def check_strategies(strategies: list[str], config: RunConfig) -> None:
    """Unknown names, a label-reading ``oracle`` on a pool without labels and a bad concept source (a labels
    file that is not there, two sources at once) refused before any stage."""
    known = available_strategies() + sorted(LABEL_STRATEGIES)
    unknown = sorted(set(strategies) - set(known))
    if unknown:
        raise ConfigError(f"unknown strategies {unknown}; available: {known}")
    labelled = sorted(set(strategies) & LABEL_STRATEGIES)
    if labelled and config.data.pool_json:
        raise ConfigError(label_refusal(labelled[0]))
    problems = concept_source_problems(config.data)
    if problems:
        raise ConfigError(problems[0])


@flow(name="compare-strategies", log_prints=True, validate_parameters=True)
def compare_strategies(
    config: RunConfig = RunConfig(),
    strategies: list[str] = DEFAULT_STRATEGIES,
    budgets: list[float] | None = None,
    seeds: list[int] | None = None,
    sweep_field: str | None = None,
    sweep_values: list[Any] | None = None,
    include_full: bool = False,
) -> dict:
    """Run ``strategies`` × ``budgets`` × ``seeds`` (× sweep values) at equal budgets; evaluate each run."""
    check_strategies(strategies, config)
    log = get_run_logger()
    budgets = budgets or [config.schedule.budget_fraction]
    seeds = seeds if seeds is not None else [config.seed]
    if min(budgets) <= config.warmup.fractions[1]:
        raise ConfigError(
            f"every budget must exceed the warm-up (warmup.fractions[1] = {config.warmup.fractions[1]}); "
            f"got budgets {budgets}"
        )
    sweeps: list[tuple[str, Any] | None] = [(sweep_field, v) for v in sweep_values or []] if sweep_field else [None]
    base = Path(config.run_dir).resolve()
    with hold_run_dir(base, log.warning):
        return _compare_in(base, config, strategies, budgets, seeds, sweeps, include_full, log)


def _compare_in(
    base: Path,
    config: RunConfig,
    strategies: list[str],
    budgets: list[float],
    seeds: list[int],
    sweeps: list[tuple[str, Any] | None],
    include_full: bool,
    log,
) -> dict:
    """The comparison's runs, evaluations and tables, while ``base`` is held (one comparison per directory;
    every sub-run holds its own directory as well)."""
    shared = Path(config.shared_dir).resolve() if config.shared_dir else base / "shared"
    config, eval_split = held_out_split(config, shared, log)
    jobs = [(s, b, seed, sw) for b in budgets for sw in sweeps for s in strategies for seed in seeds]
    jobs += [("full", 1.0, seed, None) for seed in seeds] if include_full else []
    rows, concept_parts = [], []
    for strategy, budget, seed, sw in jobs:
        variant = _variant_label(*(sw or (None, None)))
        label = f"{base.name} {strategy}{'[' + variant + ']' if variant else ''} b={budget:g} seed={seed}"
        result = _one_run(run_config(config, base, shared, strategy, budget, seed, sw), label, eval_split, log)
        rows.append(_row(strategy, variant, budget, seed, result))
        concepts = pd.read_parquet(result["concepts"])
        for key in ("seed", "budget", "variant", "strategy"):
            concepts.insert(0, key, rows[-1][key])
        concept_parts.append(concepts)
    table = pd.DataFrame(rows)
    table = _named(table.fillna({c: 0.0 for c in table.columns if c.startswith("seconds_")}))
    table_path = write_parquet(table, base / "comparison.parquet")
    concepts_path = write_parquet(
        _named(pd.concat(concept_parts, ignore_index=True)), base / "comparison_concepts.parquet"
    )
    split = eval_split or {
        "labels": str(shared / "data" / "labels.parquet"),
        "eval_json": str(shared / "data" / "eval.json"),
    }
    majority = majority_baseline(split["eval_json"], split["labels"])
    summary = {
        "run_dir": str(base),
        "comparison": str(table_path),
        "comparison_concepts": str(concepts_path),
        "report_html": publish_comparison_report(str(base), str(table_path), str(concepts_path), majority),
        "majority_baseline": majority,
        "rows": rows,
    }
    write_json(summary, base / "comparison.json", indent=2)
    return summary
