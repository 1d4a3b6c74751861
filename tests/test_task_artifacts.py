"""Round and run artifacts (tasks/artifacts.py) from hand-made round files: the cluster table's columns,
formatting and order, the cluster descriptions, the round summary and the run report; then, once per module
on a temporary Prefect server, that a key published twice by one flow run is updated in place
(docs/architecture.md#orchestration)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tasks.artifacts as art
from progress_cli.run import format_rounds
from progress_core.id_sets import write_ids
from progress_core.probe.accuracy_table import write_accuracy_table
from progress_core.reporting.summary import RoundSummary
from tasks.artifacts import (
    artifact_key,
    concept_shares,
    describe_clusters,
    publish_round,
    round_cluster_table,
    rounds_plot,
    run_report,
)
from tasks.stage import StageRecord

ANNOTATION = np.repeat(np.arange(4), 3)
QUESTIONS = [
    "What colour is the square circle?",
    "colour of the square",
    "Which colour?",
    "How many dogs are there?",
    "Count the dogs please",
    "dogs",
    "Where is the arrow pointing?",
    "arrow",
    "Is the arrow red?",
    "What is 2 plus 3?",
    "Add numbers",
    "numbers",
]
FAMILIES = {"s0": "colour", "s1": "colour", "s2": "shape", "s9": "arithmetic", "s10": "arithmetic"}


def _accuracy(path: Path, accuracy: dict[int, float]) -> str:
    table = pd.DataFrame(
        {
            "cluster_id": list(accuracy),
            "n": [4] * len(accuracy),
            "correct": [round(4 * a) for a in accuracy.values()],
            "unjudged": [0] * len(accuracy),
            "accuracy": list(accuracy.values()),
        }
    )
    return str(write_accuracy_table(table, path))


@pytest.fixture
def round_files(tmp_path) -> dict:
    """One round over 12 samples in 4 annotation clusters: new = [9, 0, 1, 3]."""
    n = ANNOTATION.size
    manifest_path = tmp_path / "manifest.parquet"
    pq.write_table(
        pa.table({"sample_id": np.arange(n), "id": [f"s{i}" for i in range(n)], "question": QUESTIONS}), manifest_path
    )
    labels = tmp_path / "labels.parquet"
    pd.DataFrame({"id": list(FAMILIES), "family": list(FAMILIES.values())}).to_parquet(labels)
    manifest = StageRecord(
        stage="manifest", out_dir=str(tmp_path), files={"manifest": str(manifest_path)}, meta={"labels": str(labels)}
    )
    select = tmp_path / "rounds" / "r02" / "select"
    select.mkdir(parents=True)
    pd.DataFrame(
        {
            "cluster_id": [0, 1, 2],
            "acc_prev": [0.25, np.nan, 0.25],
            "acc_now": [0.5, np.nan, 0.25],
            "rel": [1.0, np.nan, 0.0],
            "se_now": [0.25, np.nan, 0.2165],
            "se_change": [0.3062, np.nan, 0.3062],
            "probability": [0.75, 0.25, np.nan],
            "quota": [2, 1, 0],
        }
    ).to_parquet(select / "clusters.parquet")
    commit = StageRecord(
        stage="select",
        out_dir=str(select),
        files={
            "new": str(write_ids(np.array([9, 0, 1, 3]), select / "new.parquet")),
            "remaining_after": str(write_ids(np.array([2, 4, 5, 6, 7, 8]), select / "remaining_after.parquet")),
            "clusters": str(select / "clusters.parquet"),
        },
        rows={"new": 4, "selected_until": 6, "remaining_after": 6},
        meta={"strategy": "progress", "probabilities": {"2": 0.1}, "budget": 4, "notes": ["cluster 3 ran dry"]},
    )
    probe = StageRecord(
        stage="probe",
        out_dir=str(tmp_path / "probe"),
        files={"per_cluster": _accuracy(tmp_path / "after.parquet", {0: 1.0, 1: 0.5, 2: 0.25})},
        meta={"correct": 3, "n": 6, "clusters": 3, "unjudged": 1},
    )
    before = _accuracy(tmp_path / "before.parquet", {1: 0.4, 3: 1 / 3})
    return {"manifest": manifest, "commit": commit, "probe": probe, "before": before}


def test_cluster_table_columns_formatting_and_order(round_files):
    table = round_cluster_table(
        round_files["commit"], round_files["probe"], ANNOTATION, round_files["manifest"], round_files["before"]
    )
    assert list(table.columns) == [
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
    ]
    assert table["cluster"].tolist() == [0, 1, 3, 2], "most selected first, then by cluster"
    rows = table.set_index("cluster")
    assert rows.loc[0, "what it is"] == "colour · colour, square, circle"
    assert rows.loc[3, "what it is"].startswith("arithmetic · numbers") and rows.loc[1, "what it is"] == "dogs, count"
    assert (
        rows.loc[0, "sample ids"] == "s0, s1" and rows.loc[3, "sample ids"] == "s9" and rows.loc[2, "sample ids"] == ""
    )
    assert rows["accuracy prev → now"].to_dict() == {
        0: "0.25 → 0.50",
        1: "– → 0.40",
        3: "– → 0.33",
        2: "0.25 → 0.25",
    }, "the selection's two probes, else the previous probe as now; missing: –"
    assert rows["accuracy after"].to_dict() == {0: "1.00", 1: "0.50", 3: "–", 2: "0.25"}
    assert rows["relative change"].to_dict() == {0: "+100.0%", 1: "–", 3: "–", 2: "+0.0%"}
    assert rows["probe SE now / change"].to_dict() == {0: "0.25 / 0.31", 1: "– / –", 3: "– / –", 2: "0.22 / 0.31"}
    assert rows["probability"].to_dict() == {0: "0.750", 1: "0.250", 3: "–", 2: "0.100"}
    assert rows["selected"].to_dict() == {0: 2, 1: 1, 3: 1, 2: 0}
    assert rows["pool left"].to_dict() == {0: 1, 1: 2, 3: 0, 2: 3}


def test_cluster_table_relative_change_is_that_of_the_accuracies_beside_it(round_files):
    table = round_cluster_table(
        round_files["commit"], round_files["probe"], ANNOTATION, round_files["manifest"], round_files["before"]
    )
    shown = 0
    for pair, rel in zip(table["accuracy prev → now"], table["relative change"]):
        if rel == "–":
            continue
        prev, now = (float(x) for x in pair.split(" → "))
        assert f"{(now - prev) / prev:+.1%}" == rel
        shown += 1
    assert shown == 2


def test_cluster_table_without_manifest_or_scores(round_files):
    commit = round_files["commit"]
    bare = commit.model_copy(update={"files": {k: v for k, v in commit.files.items() if k != "clusters"}, "meta": {}})
    table = round_cluster_table(bare, round_files["probe"], ANNOTATION)
    assert table["cluster"].tolist() == [0, 1, 3, 2]
    assert set(table["what it is"]) == {""} and set(table["sample ids"]) == {""}
    assert table["accuracy prev → now"].tolist() == ["– → –"] * 4
    assert table["accuracy after"].tolist() == ["1.00", "0.50", "–", "0.25"]
    assert set(table["probability"]) == {"–"} and set(table["relative change"]) == {"–"}


def test_cluster_descriptions_name_the_family_and_the_common_words(round_files):
    words = describe_clusters(round_files["manifest"], ANNOTATION)
    assert words[0] == "colour · colour, square, circle"
    assert words[1] == "dogs, count", "no labelled member: words only"
    assert words[2] == "arrow, pointing, red", "ties in alphabetical order, the same in every process"
    unlabelled = round_files["manifest"].model_copy(update={"meta": {}})
    assert describe_clusters(unlabelled, ANNOTATION)[0] == "colour, square, circle"


def test_concept_shares_of_the_new_samples(round_files):
    shares = concept_shares(round_files["manifest"], np.array([9, 0, 1, 3]))
    assert dict(zip(shares["family"], shares["share"])) == {"colour": 0.5, "arithmetic": 0.25, "unlabelled": 0.25}
    assert concept_shares(round_files["manifest"], np.array([], dtype=np.int64)) is None
    assert concept_shares(round_files["manifest"].model_copy(update={"meta": {}}), np.array([0])) is None


@pytest.fixture
def published(monkeypatch):
    """What publish_round would send to the server: (kind, key, data) per upsert."""
    sent: list[tuple[str, str, object]] = []

    def table(key, rows, description, on_task_run=False):
        sent.append(("table", key, rows))
        return f"id-{key}"

    def markdown(key, text, description, on_task_run=False):
        sent.append(("markdown", key, text))
        return f"id-{key}"

    monkeypatch.setattr(art, "upsert_table", table)
    monkeypatch.setattr(art, "upsert_markdown", markdown)
    return sent


def _round(files: dict, run_dir: str, r: int, **kw) -> dict:
    train = StageRecord(stage="train", out_dir="t", meta={"final_loss": 1.234567})
    args = dict(
        run_dir=run_dir,
        round_index=r,
        step=5,
        next_step=8,
        commit=files["commit"],
        probe_after=files["probe"],
        train=train,
        annotation_ids=ANNOTATION,
        manifest=files["manifest"],
        seconds=2.46,
    )
    return publish_round.fn(**{**args, **kw})


def test_round_summary_row_and_run_report(round_files, published, tmp_path):
    run_dir = str(tmp_path / "My Run")
    row = _round(round_files, run_dir, 2)
    assert row == {
        "round": 2,
        "strategy": "progress",
        "from_step": 5,
        "to_step": 8,
        "new": 4,
        "selected": 6,
        "remaining": 6,
        "probe_n": 6,
        "probe_accuracy": 0.6,
        "seconds": 2.5,
        "dir": str(Path(round_files["commit"].out_dir).parent.resolve()),
    }, "accuracy over the judged samples: 3 of 6 - 1 unjudged"
    assert [(kind, key) for kind, key, _ in published] == [
        ("table", "my-run-round-02-clusters"),
        ("markdown", "my-run-round-02-summary"),
        ("markdown", "my-run-summary"),
    ]
    clusters = published[0][2]
    assert [r["cluster"] for r in clusters] == [0, 1, 3, 2] and clusters[0]["accuracy prev → now"] == "0.25 → 0.50"
    summary = published[1][2].splitlines()
    assert summary[0] == "# Round 2: steps 5 → 8"
    for line in (
        "- strategy: `progress`",
        "- new samples: **4**, selected so far: **6**, left in the pool: 6",
        "- budget used: **4 of 4** samples (100%)",
        "- probe at step 8: 3 / 6 correct over 3 clusters (1 unjudged)",
        "- final training loss: 1.2346",
        "- time spent: 2.5 s",
        "- note: cluster 3 ran dry",
        "| colour | 50.0% |",
        "| unlabelled | 25.0% |",
    ):
        assert line in summary, line
    report = published[2][2]
    assert "- running: 1 rounds done, at step 8" in report
    assert (
        "| 2 | progress | 5→8 | 4 | 6 | 0.600 | 2.5 | [summary](/artifacts/artifact/id-my-run-round-02-summary)"
        in report
    )


def test_the_run_report_lists_rounds_in_order_and_restarts_at_round_zero(round_files, published, tmp_path):
    run_dir = str(tmp_path / "run")
    for r in (0, 1, 2):
        _round(round_files, run_dir, r, step=r, next_step=r + 1)
    report = published[-1][2]
    assert [line.split(" | ")[0] for line in report.splitlines() if line.startswith("| ") and "→" in line] == [
        "| 0",
        "| 1",
        "| 2",
    ]
    _round(round_files, run_dir, 0)
    again = published[-1][2]
    assert "- running: 1 rounds done" in again and "| 1 |" not in again, "a new run of the directory starts over"


def test_accuracy_before_comes_from_the_previous_rounds_probe(round_files, published, tmp_path):
    run_dir = str(tmp_path / "run")
    commit = round_files["commit"]
    bare = commit.model_copy(update={"files": {k: v for k, v in commit.files.items() if k != "clusters"}})
    first_probe = round_files["probe"].model_copy(
        update={"files": {"per_cluster": _accuracy(tmp_path / "r2.parquet", {0: 0.25, 3: 0.75})}}
    )
    _round(round_files, run_dir, 2, commit=bare, probe_after=first_probe)
    _round(round_files, run_dir, 3, commit=bare)
    table = {r["cluster"]: (r["accuracy prev → now"], r["accuracy after"]) for r in published[-3][2]}
    assert table[0] == ("– → 0.25", "1.00") and table[3] == ("– → 0.75", "–")
    _round(round_files, run_dir, 5, commit=bare)
    table = {r["cluster"]: (r["accuracy prev → now"], r["accuracy after"]) for r in published[-3][2]}
    assert table[0] == ("– → –", "1.00"), "a probe from a round that is not the previous one is not 'now'"


def test_a_round_without_probe_shows_a_dash_not_zero_accuracy(round_files, published, tmp_path):
    run_dir = str(tmp_path / "run")
    commit = round_files["commit"].model_copy(update={"meta": {"strategy": "random"}})
    unprobed = round_files["probe"].model_copy(update={"meta": {"correct": 0, "n": 0, "clusters": 0, "unjudged": 0}})
    row = _round(round_files, run_dir, 2, commit=commit, probe_after=unprobed)
    assert row["probe_n"] == 0 and row["probe_accuracy"] is None
    assert (
        "- probe at step 8: not probed (strategy `random` does not read it; probe.all_strategies probes anyway)"
        in published[1][2]
    )
    assert "| 2 | random | 5→8 | 4 | 6 | – | 2.5 |" in published[2][2]
    assert RoundSummary(**{k: v for k, v in row.items()}, budget=4).probe_accuracy is None
    rows = [{**row, "budget": 4}]
    assert format_rounds(rows).splitlines()[-1].split()[6] == "–"
    assert rounds_plot(rows)[:4] == b"\x89PNG"


def test_final_report_has_totals_and_an_embedded_plot(tmp_path):
    rows = [
        {
            "round": r,
            "strategy": s,
            "from_step": a,
            "to_step": b,
            "new": n,
            "selected": t,
            "probe_accuracy": p,
            "seconds": 1.0,
        }
        for r, s, a, b, n, t, p in [(0, "warmup:w1", 0, 2, 16, 16, 0.25), (1, "warmup:w2", 2, 3, 8, 24, 0.5)]
        + [(2, "progress", 3, 5, 16, 40, 0.625)]
    ]
    text = run_report(
        str(tmp_path / "run"), rows, final_step=6, extra={"final_selection": "/x.parquet", "export_dir": "/e"}
    )
    assert "- rounds: 3 (2 warm-up + 1 selection), final step 5 of 6" in text
    assert "- selected samples: **40**; final set: `/x.parquet`" in text and "`/e`" in text
    assert "| 2 | progress | 3→5 | 16 | 40 | 0.625 | 1.0 | summary · clusters |" in text, "no link without an id"
    assert "](data:image/png;base64,iVBOR" in text and "file://" not in text


def test_records_turn_nan_into_none():
    frame = pd.DataFrame({"a": [1.0, np.nan], "b": ["x", "y"]})
    assert art._records(frame) == [{"a": 1.0, "b": "x"}, {"a": None, "b": "y"}]


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _artifacts(key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def test_a_retry_updates_the_artifact_in_place_and_runs_add_versions(prefect_server, tmp_path):
    from prefect import flow

    run_dir = str(tmp_path / "Harness Run")
    key = artifact_key(run_dir, "summary")

    @flow
    def publish(text: str) -> tuple[str, str, str, str]:
        first = art.upsert_markdown(key, "draft", "d")
        second = art.upsert_markdown(key, text, "d")
        art.upsert_table(artifact_key(run_dir, "rounds"), [{"a": float("nan")}], "d")
        progress = art.start_progress(run_dir)
        art.set_progress(progress, step=9, final_step=6)
        return first, second, str(progress), str(art.start_progress(run_dir))

    first, second, progress, progress_again = publish("final")
    assert first == second and progress == progress_again
    found = _artifacts(key)
    assert [(a.type, a.data) for a in found] == [("markdown", "final")]
    assert json.loads(_artifacts(artifact_key(run_dir, "rounds"))[0].data) == [{"a": None}]
    assert _artifacts(artifact_key(run_dir, "progress"))[0].data == 100.0
    publish("second run")
    assert sorted(a.data for a in _artifacts(key)) == ["final", "second run"], "each flow run keeps its version"
