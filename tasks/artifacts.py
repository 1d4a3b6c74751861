"""Per-round and per-run Prefect artifacts (DESIGN §3): what every round selected and why.

Keys come from the run directory's name and the round, lowercase with dashes, so every (re-)run of the same
run directory adds a new version of the same artifacts and the UI shows their history.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from progress_core.accuracy_table import read_accuracy_table
from progress_core.rounds import read_ids
from tasks._tables import manifest_rows
from tasks.stage import StageRecord


def artifact_key(run_dir: str | Path, *parts: object) -> str:
    """``<run name>-<parts>`` lowercased, every other character run replaced by one dash."""
    raw = "-".join([Path(run_dir).resolve().name, *map(str, parts)]).lower()
    return re.sub(r"[^a-z0-9]+", "-", raw).strip("-")


def _records(df: pd.DataFrame) -> list[dict]:
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in df.to_dict(orient="records")
    ]


def round_cluster_table(commit: StageRecord, probe_after: StageRecord, annotation_ids: np.ndarray) -> pd.DataFrame:
    """Clusters of one round: accuracy before/after, relative change, probability and selected count."""
    after = read_accuracy_table(probe_after.files["per_cluster"])[["cluster_id", "accuracy"]]
    after = after.rename(columns={"accuracy": "acc_after"})
    new_ids = read_ids(commit.files["new"])
    counts = (
        pd.Series(annotation_ids[new_ids]).value_counts().rename("selected").rename_axis("cluster_id").reset_index()
    )
    if "clusters" in commit.files:
        table = pd.read_parquet(commit.files["clusters"])
        table = table.rename(columns={"acc_now": "acc_before"}).drop(columns=["selected"], errors="ignore")
        keep = [
            c
            for c in ("cluster_id", "acc_prev", "acc_before", "rel", "probability", "available", "quota")
            if c in table.columns
        ]
        table = table[keep]
    else:
        table = pd.DataFrame({"cluster_id": pd.Series(dtype="int64")})
    out = table.merge(counts, on="cluster_id", how="outer").merge(after, on="cluster_id", how="outer")
    out["selected"] = out["selected"].fillna(0).astype(int)
    return out.sort_values(["selected", "cluster_id"], ascending=[False, True]).reset_index(drop=True)


def concept_shares(manifest: StageRecord, new_ids: np.ndarray) -> pd.DataFrame | None:
    """Share of a round's new samples per concept family, from the evaluation labels when the pool has them."""
    labels_path = manifest.meta.get("labels")
    if not labels_path or not Path(labels_path).exists() or len(new_ids) == 0:
        return None
    labels = pd.read_parquet(labels_path, columns=["id", "family"])
    ids = manifest_rows(manifest, new_ids, columns=("id",)).column("id").to_pandas()
    fam = (
        pd.DataFrame({"id": ids})
        .merge(labels.drop_duplicates("id"), on="id", how="left")["family"]
        .fillna("unlabelled")
    )
    share = fam.value_counts(normalize=True).rename("share").rename_axis("family").reset_index()
    return share


@task(name="publish-round", task_run_name="publish[r={round_index}]")
def publish_round(
    run_dir: str,
    round_index: int,
    step: int,
    next_step: int,
    commit: StageRecord,
    probe_after: StageRecord,
    train: StageRecord,
    annotation_ids: np.ndarray,
    manifest: StageRecord,
    seconds: float,
) -> dict:
    """Table, markdown summary and link artifacts of one round; returns the round's summary row."""
    table = round_cluster_table(commit, probe_after, annotation_ids)
    create_table_artifact(
        key=artifact_key(run_dir, "round", round_index, "clusters"),
        table=_records(table),
        description=f"Round {round_index} (steps {step}→{next_step}): clusters, accuracy "
        "before/after, relative change, probability and selected count.",
    )
    shares = concept_shares(manifest, read_ids(commit.files["new"]))
    probe_meta = probe_after.meta
    lines = [
        f"# Round {round_index}: steps {step} → {next_step}",
        "",
        f"- strategy: `{commit.meta.get('strategy')}`",
        f"- new samples: **{commit.rows['new']}**, selected so far: **{commit.rows['selected_until']}**, "
        f"left in the pool: {commit.rows['remaining_after']}",
        f"- probe at step {next_step}: {probe_meta.get('correct', 0)} / {probe_meta.get('n', 0)} correct "
        f"over {probe_meta.get('clusters', 0)} clusters ({probe_meta.get('unjudged', 0)} unjudged)",
        f"- final training loss: {train.meta.get('final_loss')}",
        f"- time spent: {seconds:.1f} s",
    ]
    for note in commit.meta.get("notes", []):
        lines.append(f"- note: {note}")
    if shares is not None:
        lines += [
            "",
            "## Share of this round's samples per concept family (evaluation labels)",
            "",
            "| family | share |",
            "|---|---|",
        ]
        lines += [f"| {r.family} | {r.share:.1%} |" for r in shares.itertuples()]
    create_markdown_artifact(
        key=artifact_key(run_dir, "round", round_index, "summary"),
        markdown="\n".join(lines),
        description=f"Round {round_index} summary",
    )
    round_dir = Path(commit.out_dir).parent.resolve()
    create_link_artifact(
        key=artifact_key(run_dir, "round", round_index, "files"),
        link=round_dir.as_uri(),
        link_text=str(round_dir),
        description=f"Round {round_index} files",
    )
    accuracy = probe_meta.get("correct", 0) / max(probe_meta.get("n", 0) - probe_meta.get("unjudged", 0), 1)
    return {
        "round": round_index,
        "strategy": commit.meta.get("strategy"),
        "from_step": step,
        "to_step": next_step,
        "new": commit.rows["new"],
        "selected": commit.rows["selected_until"],
        "remaining": commit.rows["remaining_after"],
        "probe_n": probe_meta.get("n", 0),
        "probe_accuracy": round(accuracy, 4),
        "seconds": round(seconds, 1),
        "dir": str(round_dir),
    }


def start_progress(run_dir: str) -> object:
    """The run's progress artifact (percentage of FINAL_STEP trained)."""
    return create_progress_artifact(
        progress=0.0, key=artifact_key(run_dir, "progress"), description="Share of FINAL_STEP trained"
    )


def set_progress(artifact_id: object, step: int, final_step: int) -> None:
    update_progress_artifact(artifact_id=artifact_id, progress=min(100.0, 100.0 * step / max(final_step, 1)))


def publish_summary(run_dir: str, rows: list[dict], final_step: int, extra: dict) -> None:
    """The run's final artifacts: a table of rounds and a markdown summary with where the files are."""
    create_table_artifact(key=artifact_key(run_dir, "rounds"), table=rows, description="All rounds of the run")
    last = rows[-1] if rows else {}
    lines = [
        f"# PROGRESS run `{Path(run_dir).resolve()}`",
        "",
        f"- rounds: {len(rows)} (2 warm-up + {max(len(rows) - 2, 0)} selection), final step "
        f"{last.get('to_step', 0)} of {final_step}",
        f"- selected samples: **{last.get('selected', 0)}**; final set: `{extra.get('final_selection')}`",
        f"- original-format export: `{extra.get('export_dir')}`",
        "",
        "| round | strategy | steps | new | selected | probe acc | s |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['round']} | {r['strategy']} | {r['from_step']}→{r['to_step']} | {r['new']} | {r['selected']} "
        f"| {r['probe_accuracy']:.3f} | {r['seconds']} |"
        for r in rows
    ]
    create_markdown_artifact(
        key=artifact_key(run_dir, "summary"), markdown="\n".join(lines), description="PROGRESS run summary"
    )
