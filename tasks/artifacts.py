"""Per-round and per-run Prefect artifacts (docs/architecture.md#orchestration): what every round selected and why.

One artifact per key per flow run: keys come from the run directory's name and the zero-padded round
(``demo-round-02-summary``), and publishing a key that the flow run already has (a Retry) updates that
artifact in place instead of adding a duplicate. Different runs of the same run directory add versions of
the same keys, so the UI's artifact pages show their history. The UI lists a flow run's artifacts in no
particular order, so ``<run>-summary`` is the ordered entry point: updated after every round, it lists the
rounds in order with links to their artifacts. Plots are PNGs embedded in markdown as data URIs: the UI
cannot open ``file://`` links, so no artifact links to local files.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from prefect import task
from prefect.artifacts import TableArtifact, create_progress_artifact, update_progress_artifact

from progress_core.id_sets import read_ids
from progress_core.probe.accuracy_table import read_accuracy_table
from progress_core.reporting.summary import format_accuracy
from tasks._tables import manifest_rows
from tasks.stage import StageRecord

SAMPLE_IDS_SHOWN = 3
WORDS_SHOWN = 3
MEMBERS_READ = 200
_STOPWORDS = frozenset(
    """a an the and or of in on at to for from with by as is are was were be been this that these those it its
    what which who whom whose how many much does do did there their them they he she his her you your can could
    would should will shall may might please answer question questions image picture photo shown show shows
    provide describe given using use one two word phrase single short brief based following about into than
    then also any all some not no yes other more most very""".split()
)


_PUBLISHED: dict[str, dict[int, dict]] = {}
"""Per run directory: each published round's row and the ids of its summary and cluster artifacts."""
_LAST_PROBE: dict[str, tuple[int, str]] = {}
"""Per run directory: the last published round and its per-cluster probe table (accuracy before the next)."""


def artifact_key(run_dir: str | Path, *parts: object) -> str:
    """``<run name>-<parts>`` lowercased, every other character run replaced by one dash."""
    raw = "-".join([Path(run_dir).resolve().name, *map(str, parts)]).lower()
    return re.sub(r"[^a-z0-9]+", "-", raw).strip("-")


def round_key(run_dir: str | Path, round_index: int, kind: str) -> str:
    """Key of a round's artifact; the round is zero-padded so keys sort in round order."""
    return artifact_key(run_dir, "round", f"{round_index:02d}", kind)


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return flow_run.id


def _existing(key: str) -> Any | None:
    """This flow run's artifact called ``key``, if it already published one (a Retry)."""
    run_id = _flow_run_id()
    if not run_id:
        return None
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])
            ),
            limit=1,
        )
    return found[0] if found else None


def _upsert(key: str, kind: str, data: Any, description: str, on_task_run: bool = False) -> str:
    """Create artifact ``key`` on the flow run, or update this flow run's one in place; returns its id.

    With ``on_task_run`` a new artifact also belongs to the task run publishing it: the Prefect UI lists a
    run's own artifacts apart from its task runs', so the run-level summary, rounds table, report and
    progress stay together at the top and the per-round tables follow under their ``publish[r=N]`` runs.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate
    from prefect.runtime import task_run

    run_id = _flow_run_id()
    found = _existing(key)
    with get_client(sync_client=True) as client:
        if found is not None:
            client.update_artifact(found.id, ArtifactUpdate(data=data, description=description))
            return str(found.id)
        owner = (task_run.id or None) if on_task_run else None
        created = client.create_artifact(
            ArtifactCreate(
                key=key, type=kind, data=data, description=description, flow_run_id=run_id, task_run_id=owner
            )
        )
        return str(created.id)


def upsert_table(key: str, table: list[dict], description: str, on_task_run: bool = False) -> str:
    """Create the table artifact ``key``, or update this flow run's one in place; returns its id."""
    return _upsert(key, "table", json.dumps(TableArtifact._sanitize(table)), description, on_task_run)


def upsert_markdown(key: str, markdown: str, description: str, on_task_run: bool = False) -> str:
    """Create the markdown artifact ``key``, or update this flow run's one in place; returns its id."""
    return _upsert(key, "markdown", markdown, description, on_task_run)


def _records(df: pd.DataFrame) -> list[dict]:
    return [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in df.to_dict(orient="records")
    ]


def png_data_uri(png: bytes | str | Path) -> str:
    """A PNG as a ``data:`` URI, the one image form the UI's markdown renders without a web server."""
    raw = png if isinstance(png, bytes) else Path(png).read_bytes()
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


def _words(texts: pd.Series) -> str:
    counts: Counter[str] = Counter()
    for text in texts.dropna():
        counts.update(w for w in set(re.findall(r"[a-z][a-z'-]{2,}", str(text).lower())) if w not in _STOPWORDS)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(w for w, _ in ranked[:WORDS_SHOWN])


def describe_clusters(manifest: StageRecord, annotation_ids: np.ndarray) -> dict[int, str]:
    """``{cluster_id: "family · word, word, word"}`` for the annotation clusters (cached per manifest and clustering)."""
    digest = str(hash(annotation_ids.tobytes()))
    return _describe(manifest.files["manifest"], manifest.meta.get("labels"), digest, annotation_ids)


_DESCRIPTIONS: dict[tuple, dict[int, str]] = {}


def _describe(manifest_path: str, labels_path: str | None, digest: str, annotation_ids: np.ndarray) -> dict[int, str]:
    cache_key = (manifest_path, labels_path, digest)
    if cache_key in _DESCRIPTIONS:
        return _DESCRIPTIONS[cache_key]
    frame = pd.DataFrame({"sample_id": np.arange(annotation_ids.size), "cluster_id": annotation_ids})
    members = frame.groupby("cluster_id", sort=True).head(MEMBERS_READ)
    rows = pq.read_table(manifest_path, columns=["id", "question"]).take(members["sample_id"].to_numpy())
    members = members.assign(id=rows.column("id").to_pandas(), question=rows.column("question").to_pandas())
    family = None
    if labels_path and Path(labels_path).exists():
        labels = pd.read_parquet(labels_path, columns=["id", "family"]).drop_duplicates("id")
        family = (
            members.merge(labels, on="id", how="left")
            .groupby("cluster_id")["family"]
            .agg(lambda s: s.mode().iloc[0] if s.notna().any() else None)
        )
    out = {}
    for cid, group in members.groupby("cluster_id"):
        words = _words(group["question"])
        label = family.get(cid) if family is not None else None
        out[int(cid)] = f"{label} · {words}" if isinstance(label, str) and label else words
    _DESCRIPTIONS.clear()
    _DESCRIPTIONS[cache_key] = out
    return out


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


CLUSTER_TABLE_COLUMNS = (
    "cluster",
    "what it is",
    "selected",
    "probability",
    "accuracy prev → now",
    "relative change",
    "probe SE now / change",
    "pool left",
    "accuracy after",
    "sample ids",
)


def _selection_scores(commit: StageRecord) -> pd.DataFrame:
    """The selection's per-cluster scores by cluster id; empty for warm-up rounds and strategies without scores."""
    if "clusters" in commit.files and Path(commit.files["clusters"]).exists():
        return pd.read_parquet(commit.files["clusters"]).set_index("cluster_id")
    return pd.DataFrame(index=pd.Index([], name="cluster_id"))


def _score(scores: pd.DataFrame, name: str, cid: int) -> float | None:
    """Score ``name`` of cluster ``cid``, None when the selection has none for it."""
    if name in scores and cid in scores.index:
        value = scores.at[cid, name]
        return None if pd.isna(value) else float(value)
    return None


def _accuracy_before(cid: int, scores: pd.DataFrame, previous: pd.Series) -> float | None:
    """Accuracy of cluster ``cid`` before the round: the selection's ``acc_now``, else the previous probe's."""
    before = _score(scores, "acc_now", cid)
    if before is None and cid in previous.index and not pd.isna(previous[cid]):
        before = float(previous[cid])
    return before


def _picked_sample_ids(manifest: StageRecord, annotation_ids: np.ndarray, new_ids: np.ndarray) -> dict[int, list[str]]:
    """Up to SAMPLE_IDS_SHOWN ids per cluster of the round's new samples, in the order the round lists them."""
    picked_ids: dict[int, list[str]] = {}
    if not new_ids.size:
        return picked_ids
    order = np.argsort(annotation_ids[new_ids], kind="stable")
    ids = manifest_rows(manifest, new_ids[order], columns=("id",)).column("id").to_pylist()
    for cid, sid in zip(annotation_ids[new_ids][order].tolist(), ids):
        shown = picked_ids.setdefault(cid, [])
        if len(shown) < SAMPLE_IDS_SHOWN:
            shown.append(str(sid))
    return picked_ids


def round_cluster_table(
    commit: StageRecord,
    probe_after: StageRecord,
    annotation_ids: np.ndarray,
    manifest: StageRecord | None = None,
    probe_before: str | None = None,
) -> pd.DataFrame:
    """Clusters of one round for a reader, most selected first.

    Columns: cluster, what it is (concept label and most common question words), selected, the selection
    probability, the accuracy of the two probes the selection compared (prev → now) and their relative
    change, the binomial standard error of the "now" probe and of the change (docs/algorithm.md#probe-noise),
    the samples of the cluster left in the pool, the accuracy of the probe after the round, and a few sample
    ids selected from it. What the round did comes first, so it stays on screen next to the cluster's name
    in a narrow window; the free-text ids come last. Missing facts (warm-up rounds, strategies without scores) show as
    "–". Both probes come from the selection's scores; without scores "now" is ``probe_before`` (the previous
    round's per-cluster probe table).
    """
    k = int(annotation_ids.max()) + 1 if annotation_ids.size else 0
    new_ids = read_ids(commit.files["new"])
    selected = np.bincount(annotation_ids[new_ids], minlength=k)
    left = np.bincount(annotation_ids[read_ids(commit.files["remaining_after"])], minlength=k)
    after = read_accuracy_table(probe_after.files["per_cluster"]).set_index("cluster_id")["accuracy"]
    previous = pd.Series(dtype="float64")
    if probe_before and Path(probe_before).exists():
        previous = read_accuracy_table(probe_before).set_index("cluster_id")["accuracy"]
    scores = _selection_scores(commit)
    probabilities = {int(c): float(p) for c, p in (commit.meta.get("probabilities") or {}).items()}
    quota = scores["quota"] if "quota" in scores else pd.Series(dtype="float64")
    clusters = sorted(
        set(np.flatnonzero(selected).tolist()) | set(after.index.tolist()) | set(quota[quota > 0].index.tolist())
    )
    descriptions = describe_clusters(manifest, annotation_ids) if manifest is not None else {}
    picked_ids = _picked_sample_ids(manifest, annotation_ids, new_ids) if manifest is not None else {}
    rows = []
    for cid in clusters:
        before = _accuracy_before(cid, scores, previous)
        acc_after = float(after[cid]) if cid in after.index and not pd.isna(after[cid]) else None
        rel = _score(scores, "rel", cid)
        prob = _score(scores, "probability", cid)
        if prob is None:
            prob = probabilities.get(cid)
        rows.append(
            {
                "cluster": int(cid),
                "what it is": descriptions.get(int(cid), ""),
                "sample ids": ", ".join(picked_ids.get(int(cid), [])),
                "accuracy prev → now": f"{_fmt(_score(scores, 'acc_prev', cid), '.2f')} → {_fmt(before, '.2f')}",
                "relative change": "–" if rel is None else f"{rel:+.1%}",
                "probe SE now / change": f"{_fmt(_score(scores, 'se_now', cid), '.2f')} / "
                f"{_fmt(_score(scores, 'se_change', cid), '.2f')}",
                "probability": _fmt(prob, ".3f"),
                "selected": int(selected[cid]) if cid < k else 0,
                "pool left": int(left[cid]) if cid < k else 0,
                "accuracy after": _fmt(acc_after, ".2f"),
            }
        )
    table = pd.DataFrame(rows, columns=list(CLUSTER_TABLE_COLUMNS))
    return table.sort_values(["selected", "cluster"], ascending=[False, True]).reset_index(drop=True)


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


def _run_setting(run_dir: str, section: str, name: str) -> Any:
    path = Path(run_dir) / "config.json"
    try:
        return json.loads(path.read_text()).get(section, {}).get(name)
    except (OSError, ValueError):
        return None


def budget_lines(commit: StageRecord, table: pd.DataFrame, run_dir: str) -> list[str]:
    """How much of the round's budget was used and why (docs/algorithm.md#selection)."""
    meta = commit.meta
    new = commit.rows.get("new", 0)
    strategy = str(meta.get("strategy", ""))
    if strategy.startswith("warmup"):
        return [f"- budget: the whole warm-up pool {strategy.split(':')[-1].upper()} ({new} samples)"]
    budget = meta.get("budget")
    if budget is None:
        return [f"- budget: {new} samples selected"]
    lines = [f"- budget used: **{new} of {budget}** samples ({new / max(budget, 1):.0%})"]
    n_exploit, n_explore = meta.get("n_exploit"), meta.get("n_explore")
    if n_exploit is not None or n_explore is not None:
        lines.append(f"  - by softmax quotas: {n_exploit or 0}, by exploration: {n_explore or 0}")
    redistribute = meta.get("redistribute_overflow")
    if redistribute is None:
        redistribute = _run_setting(run_dir, "selection", "redistribute_overflow")
    exhausted = meta.get("exhausted_clusters")
    if exhausted is None and not table.empty:
        exhausted = int(((table["selected"] > 0) & (table["pool left"] == 0)).sum())
    if new < budget:
        reasons = []
        if commit.rows.get("remaining_after", 1) == 0:
            reasons.append("the pool is exhausted")
        if exhausted:
            reasons.append(f"{exhausted} cluster{'s' if exhausted != 1 else ''} ran out of samples")
        if redistribute is False:
            reasons.append("quota capped by a cluster's availability is not passed on (redistribution off)")
        lines.append(f"  - why not all of it: {'; '.join(reasons) or 'see the notes below'}")
    elif exhausted:
        lines.append(f"  - {exhausted} cluster{'s' if exhausted != 1 else ''} gave their last samples this round")
    if redistribute is not None:
        lines.append(
            f"  - redistribution of capped quota (selection.redistribute_overflow): {'on' if redistribute else 'off'}"
        )
    return lines


def _share_lines(shares: pd.DataFrame | None) -> list[str]:
    """The round summary's table of new samples per concept family (none without evaluation labels)."""
    if shares is None:
        return []
    lines = [
        "",
        "## Share of this round's samples per concept family (evaluation labels)",
        "",
        "| family | share |",
        "|---|---|",
    ]
    return lines + [f"| {r.family} | {r.share:.1%} |" for r in shares.itertuples()]


def _probe_line(probe_meta: dict, step: int, strategy: str | None) -> str:
    if not probe_meta.get("n", 0):
        return (
            f"- probe at step {step}: not probed (strategy `{strategy}` does not read it; "
            "probe.all_strategies probes anyway)"
        )
    return (
        f"- probe at step {step}: {probe_meta.get('correct', 0)} / {probe_meta.get('n', 0)} correct "
        f"over {probe_meta.get('clusters', 0)} clusters ({probe_meta.get('unjudged', 0)} unjudged)"
    )


def _round_row(
    round_index: int, step: int, next_step: int, commit: StageRecord, probe_meta: dict, seconds: float, round_dir: Path
) -> dict:
    """The round's row in the run report and the flow's round summary."""
    judged = probe_meta.get("n", 0) - probe_meta.get("unjudged", 0)
    accuracy = round(probe_meta.get("correct", 0) / judged, 4) if judged > 0 else None
    return {
        "round": round_index,
        "strategy": commit.meta.get("strategy"),
        "from_step": step,
        "to_step": next_step,
        "new": commit.rows["new"],
        "selected": commit.rows["selected_until"],
        "remaining": commit.rows["remaining_after"],
        "probe_n": probe_meta.get("n", 0),
        "probe_accuracy": accuracy,
        "seconds": round(seconds, 1),
        "dir": str(round_dir),
    }


def _update_run_report(run_dir: str, round_index: int, row: dict, summary_id: str, clusters_id: str) -> None:
    """Remember the round's row and artifact ids (round 0 starts afresh) and refresh ``<run>-summary``."""
    published = _PUBLISHED.setdefault(run_dir, {})
    if round_index == 0:
        published.clear()
    published[round_index] = {"row": row, "summary": summary_id, "clusters": clusters_id}
    rows = [published[r]["row"] for r in sorted(published)]
    upsert_markdown(artifact_key(run_dir, "summary"), run_report(run_dir, rows), "PROGRESS run (in progress)")


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
    """Summary and cluster-table artifacts of one round; returns the round's summary row."""
    last = _LAST_PROBE.get(run_dir)
    before = last[1] if last and last[0] == round_index - 1 else None
    table = round_cluster_table(commit, probe_after, annotation_ids, manifest, before)
    _LAST_PROBE[run_dir] = (round_index, probe_after.files["per_cluster"])
    shares = concept_shares(manifest, read_ids(commit.files["new"]))
    probe_meta = probe_after.meta
    round_dir = Path(commit.out_dir).parent.resolve()
    lines = [
        f"# Round {round_index}: steps {step} → {next_step}",
        "",
        f"- strategy: `{commit.meta.get('strategy')}`",
        f"- new samples: **{commit.rows['new']}**, selected so far: **{commit.rows['selected_until']}**, "
        f"left in the pool: {commit.rows['remaining_after']}",
        *budget_lines(commit, table, run_dir),
        _probe_line(probe_meta, next_step, commit.meta.get("strategy")),
        f"- final training loss: {_fmt(train.meta.get('final_loss'), '.4f')}",
        f"- time spent: {seconds:.1f} s",
    ]
    lines += [f"- note: {note}" for note in commit.meta.get("notes", [])]
    lines += _share_lines(shares)
    lines += ["", f"Files of this round: `{round_dir}` (select/, train/, probe/)"]
    clusters_id = upsert_table(
        round_key(run_dir, round_index, "clusters"),
        _records(table),
        f"Round {round_index} (steps {step}→{next_step}): clusters it selected from or probed, most selected "
        "first. what it is: concept label · most common question words; accuracy prev → now and relative "
        "change: the last two probes before the round, which set the probability; probe SE now / change: the "
        "binomial standard error of the now probe and of the change (a change within 2 SE is noise); accuracy "
        "after: this round's probe.",
        on_task_run=True,
    )
    summary_id = upsert_markdown(
        round_key(run_dir, round_index, "summary"), "\n".join(lines), f"Round {round_index} summary", True
    )
    row = _round_row(round_index, step, next_step, commit, probe_meta, seconds, round_dir)
    _update_run_report(run_dir, round_index, row, summary_id, clusters_id)
    return row


def start_progress(run_dir: str) -> object:
    """The run's one progress artifact (share of FINAL_STEP trained); a Retry reuses it."""
    key = artifact_key(run_dir, "progress")
    found = _existing(key)
    if found is not None:
        return found.id
    return create_progress_artifact(progress=0.0, key=key, description="Share of FINAL_STEP trained")


def set_progress(artifact_id: object, step: int, final_step: int) -> None:
    update_progress_artifact(artifact_id=artifact_id, progress=min(100.0, 100.0 * step / max(final_step, 1)))


def rounds_plot(rows: list[dict]) -> bytes:
    """PNG: probe accuracy after every round over the training steps, and the new samples of every round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    accuracy = [np.nan if r["probe_accuracy"] is None else r["probe_accuracy"] for r in rows]
    ax1.plot([r["to_step"] for r in rows], accuracy, marker="o")
    ax1.set(title="probe accuracy after each round", xlabel="step", ylabel="accuracy", ylim=(-0.02, 1.02))
    ax2.bar([r["round"] for r in rows], [r["new"] for r in rows], color="tab:orange")
    ax2.set(title="new samples per round", xlabel="round (0, 1 = warm-up)", ylabel="samples")
    ax2.set_xticks([r["round"] for r in rows])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _artifact_link(text: str, artifact_id: str | None) -> str:
    return f"[{text}](/artifacts/artifact/{artifact_id})" if artifact_id else text


def run_report(run_dir: str, rows: list[dict], final_step: int | None = None, extra: dict | None = None) -> str:
    """The run's ordered entry point: the UI lists a flow run's artifacts in no particular order, so this
    markdown lists every round in order with links to its summary and cluster table. Updated after every
    round; at the end it adds the totals and the plots (docs/architecture.md#a-round-through-the-files)."""
    published = _PUBLISHED.get(run_dir, {})
    last = rows[-1] if rows else {}
    done = extra is not None
    lines = [f"# PROGRESS run `{Path(run_dir).resolve()}`", ""]
    if done:
        lines += [
            f"- rounds: {len(rows)} (2 warm-up + {max(len(rows) - 2, 0)} selection), final step "
            f"{last.get('to_step', 0)} of {final_step}",
            f"- selected samples: **{last.get('selected', 0)}**; final set: `{extra.get('final_selection')}`",
            f"- original-format export: `{extra.get('export_dir')}`",
        ]
    else:
        lines.append(f"- running: {len(rows)} rounds done, at step {last.get('to_step', 0)}")
    lines += [
        "",
        "| round | strategy | steps | new | selected | probe acc | s | details |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ids = published.get(r["round"], {})
        details = (
            _artifact_link("summary", ids.get("summary")) + " · " + _artifact_link("clusters", ids.get("clusters"))
        )
        lines.append(
            f"| {r['round']} | {r['strategy']} | {r['from_step']}→{r['to_step']} | {r['new']} | {r['selected']} "
            f"| {format_accuracy(r['probe_accuracy'])} | {r['seconds']} | {details} |"
        )
    lines.append("")
    if done and rows:
        lines += [f"![probe accuracy and new samples per round]({png_data_uri(rounds_plot(rows))})", ""]
    concept_png = (extra or {}).get("concept_report")
    if concept_png and Path(concept_png).exists():
        lines += [
            "## Per concept family (evaluation labels)",
            "",
            f"![probe accuracy and selection share per concept family]({png_data_uri(concept_png)})",
            "",
        ]
    return "\n".join(lines)


def _run_level_artifacts() -> list[Any]:
    """This flow run's own artifacts (not its task runs'), as the UI's "Flow run" section lists them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run_id = _flow_run_id()
    if not run_id:
        return []
    flt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=flt, limit=200)
    return [a for a in found if a.task_run_id is None and a.type != "result"]


def listed_first(key: str, markdown: str, description: str, tries: int = 64) -> None:
    """Make the markdown artifact ``key`` the first card of the run's "Flow run" section.

    The Prefect UI lists a run's artifacts by descending id and the server draws ids at random, so the
    summary, the entry point of a run (README "What a run shows"), is created again until its id is the
    largest of the section; a Retry finds it first already and keeps it.
    """
    from prefect.client.orchestration import get_client

    for _ in range(tries):
        listed = _run_level_artifacts()
        mine = [a for a in listed if a.key == key]
        if not mine or all(str(mine[0].id) > str(a.id) for a in listed if a.key != key):
            return
        with get_client(sync_client=True) as client:
            client.delete_artifact(mine[0].id)
        upsert_markdown(key, markdown, description)


def publish_summary(run_dir: str, rows: list[dict], final_step: int, extra: dict) -> None:
    """The run's final artifacts: the run report with its plots embedded, and the table of rounds."""
    upsert_table(artifact_key(run_dir, "rounds"), rows, "All rounds of the run")
    report = run_report(run_dir, rows, final_step, extra)
    upsert_markdown(artifact_key(run_dir, "summary"), report, "PROGRESS run")
    listed_first(artifact_key(run_dir, "summary"), report, "PROGRESS run")
