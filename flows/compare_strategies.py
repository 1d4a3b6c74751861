"""Compare selection strategies at equal budgets (DESIGN §5).

Each strategy runs the full ``progress_selection`` flow as a subflow in its own run directory; the stages
before the rounds (pool, features, clusters, warm-up pools, initial model) live in one shared directory, so
they are computed once. Same seed, same FINAL_STEP, same warm-up: only the per-round choice differs. When
the pool has a labelled evaluation split (the bundled pool does), each final checkpoint answers it and the
flow reports accuracy per concept and strategy.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.progress_selection import progress_selection, run_stage
from progress_core.config import RunConfig
from progress_core.io import write_parquet
from progress_core.selection import available_strategies
from tasks.artifacts import artifact_key
from tasks.evaluation import evaluate_stage

DEFAULT_STRATEGIES = ["progress", "random", "tfs", "coincide"]


@flow(name="compare-strategies", log_prints=True, validate_parameters=True)
def compare_strategies(config: RunConfig = RunConfig(), strategies: list[str] = DEFAULT_STRATEGIES) -> dict:
    """Run every strategy in ``strategies`` on ``config`` at the same budget and compare them."""
    log = get_run_logger()
    unknown = sorted(set(strategies) - set(available_strategies()))
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; available: {available_strategies()}")
    base = Path(config.run_dir).resolve()
    shared = Path(config.shared_dir).resolve() if config.shared_dir else base / "shared"
    summaries, evaluations = {}, []
    for name in strategies:
        cfg = config.model_copy(
            update={
                "run_dir": str(base / name),
                "shared_dir": str(shared),
                "selection": config.selection.model_copy(update={"strategy": name}),
            }
        )
        summary = progress_selection.with_options(flow_run_name=f"{base.name}-{name}")(config=cfg)
        summaries[name] = summary
        if summary.get("eval_json") and summary.get("labels") and summary.get("final_checkpoint"):
            record = run_stage(
                evaluate_stage,
                checkpoint=summary["final_checkpoint"],
                checkpoint_key=summary["final_checkpoint_key"],
                eval_json=summary["eval_json"],
                image_root=summary["image_root"],
                labels=summary["labels"],
                settings=cfg.probe_config(),
                label=name,
                out_dir=base / name / "evaluation",
            )
            table = pd.read_parquet(record.files["concepts"])
            table.insert(0, "strategy", name)
            evaluations.append(table)
            log.info("%s: held-out accuracy %.3f", name, record.meta["accuracy"])
    rows = [
        {
            "strategy": n,
            "rounds": len(s["rounds"]),
            "final_step": s["step"],
            "selected": s["rounds"][-1]["selected"] if s["rounds"] else 0,
            "run_dir": s["run_dir"],
        }
        for n, s in summaries.items()
    ]
    result: dict = {"run_dir": str(base), "strategies": rows}
    if evaluations:
        long = pd.concat(evaluations, ignore_index=True)
        write_parquet(long, base / "comparison.parquet")
        wide = long.pivot_table(index="concept", columns="strategy", values="accuracy").reindex(columns=strategies)
        overall = long.groupby("strategy")[["correct", "n"]].sum()
        for row in rows:
            row["eval_accuracy"] = round(
                float(overall.loc[row["strategy"], "correct"] / max(overall.loc[row["strategy"], "n"], 1)), 4
            )
        result["per_concept"] = {
            c: {s: (None if pd.isna(v) else round(float(v), 4)) for s, v in r.items()} for c, r in wide.iterrows()
        }
        result["comparison"] = str(base / "comparison.parquet")
        lines = ["| concept | " + " | ".join(strategies) + " |", "|---" * (len(strategies) + 1) + "|"]
        lines += [
            f"| {c} | " + " | ".join("-" if pd.isna(r[s]) else f"{r[s]:.2f}" for s in strategies) + " |"
            for c, r in wide.iterrows()
        ]
        create_markdown_artifact(
            key=artifact_key(base, "comparison"),
            markdown="\n".join(["# Held-out accuracy per concept at equal budget", ""] + lines),
            description="Strategy comparison on the evaluation split",
        )
    create_table_artifact(key=artifact_key(base, "strategies"), table=rows, description="Strategies compared")
    return result
