import json

import numpy as np
import pandas as pd
import pytest

from progress_core.probe.accuracy_table import (
    AccuracyTableError,
    accuracy_from_verdicts,
    accuracy_table_to_original,
    read_accuracy_table,
    write_accuracy_table,
)


def test_verdicts_count_correct_and_unjudged():
    t = accuracy_from_verdicts([3, 3, 3, 1, 1, 7], [1, 0, None, 1, 1, None])
    assert t["cluster_id"].tolist() == [1, 3, 7]
    assert t["n"].tolist() == [2, 3, 1]
    assert t["correct"].tolist() == [2, 1, 0]
    assert t["unjudged"].tolist() == [0, 1, 1]
    assert t["accuracy"].iloc[0] == 1.0
    assert t["accuracy"].iloc[1] == 0.5
    assert np.isnan(t["accuracy"].iloc[2])


def test_verdicts_reject_other_values():
    with pytest.raises(AccuracyTableError, match="verdict 1"):
        accuracy_from_verdicts([0, 0], [1, 2])
    with pytest.raises(AccuracyTableError, match="2 verdicts for 3"):
        accuracy_from_verdicts([0, 0, 1], [1, 0])


def test_read_original_judge_json(tmp_path):
    obj = {
        "cluster_accuracies": {
            "12": {"correct": 3, "total": 4, "accuracy": 0.75},
            "5": {"correct": 0, "total": 2, "accuracy": 0.0},
        },
        "total_samples": 6,
        "total_cluster_samples": 6,
        "total_correct_samples": 3,
        "overall_accuracy": 0.5,
    }
    p = tmp_path / "combined_results_internVL.json"
    p.write_text(json.dumps(obj))
    t = read_accuracy_table(p)
    assert t["cluster_id"].tolist() == [5, 12]
    assert t["n"].tolist() == [2, 4]
    assert t["correct"].tolist() == [0, 3]
    assert t["accuracy"].tolist() == [0.0, 0.75]
    assert str(t["cluster_id"].dtype) == "int64"


def test_parquet_and_json_round_trip(tmp_path):
    t = accuracy_from_verdicts([0, 0, 2, 2, 2], [1, 0, 1, 1, 0])
    write_accuracy_table(t, tmp_path / "acc.parquet")
    back = read_accuracy_table(tmp_path / "acc.parquet")
    pd.testing.assert_frame_equal(back, t)
    write_accuracy_table(t, tmp_path / "acc.json")
    obj = json.loads((tmp_path / "acc.json").read_text())
    assert list(obj["cluster_accuracies"]) == ["2", "0"]
    assert obj["cluster_accuracies"]["2"] == {"correct": 2, "total": 3, "accuracy": 2 / 3}
    assert obj["overall_accuracy"] == 3 / 5
    assert read_accuracy_table(tmp_path / "acc.json")["accuracy"].tolist() == [0.5, 2 / 3]
    assert accuracy_table_to_original(t)["total_correct_samples"] == 3


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"clusters": {}}), "cluster_accuracies"),
        (
            json.dumps({"cluster_accuracies": {"x": {"correct": 1, "total": 1, "accuracy": 1.0}}}),
            "'x' is not an integer",
        ),
        (json.dumps({"cluster_accuracies": {"1": {"correct": 1, "total": 1}}}), "needs 'correct'"),
        (json.dumps({"cluster_accuracies": {"1": {"correct": 3, "total": 2, "accuracy": 1.0}}}), "exceeds n"),
        (json.dumps({"cluster_accuracies": {"1": {"correct": 1, "total": 2, "accuracy": 1.5}}}), r"outside \[0, 1\]"),
    ],
)
def test_malformed_json_is_a_named_error(tmp_path, content, match):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(AccuracyTableError, match=match):
        read_accuracy_table(p)


def test_malformed_parquet(tmp_path):
    pd.DataFrame(
        {"cluster_id": [1, 1], "n": [2, 2], "correct": [1, 1], "unjudged": [0, 0], "accuracy": [0.5, 0.5]}
    ).to_parquet(tmp_path / "dup.parquet")
    with pytest.raises(AccuracyTableError, match="row 1: cluster_id 1 appears more than once"):
        read_accuracy_table(tmp_path / "dup.parquet")
    pd.DataFrame({"cluster_id": [1]}).to_parquet(tmp_path / "cols.parquet")
    with pytest.raises(AccuracyTableError, match="missing columns"):
        read_accuracy_table(tmp_path / "cols.parquet")
    (tmp_path / "x.parquet").write_text("nope")
    with pytest.raises(AccuracyTableError, match="neither Parquet"):
        read_accuracy_table(tmp_path / "x.parquet")
    with pytest.raises(AccuracyTableError, match="not found"):
        read_accuracy_table(tmp_path / "missing.parquet")


def test_probe_standard_errors_are_binomial_and_reach_every_strategys_cluster_table():
    from progress_core.probe.accuracy_table import probe_standard_errors
    from progress_core.selection.context import SelectionHistory
    from progress_core.selection.strategies import select

    def table(acc: dict[int, tuple[int, int]]) -> pd.DataFrame:
        rows = [(c, n, k, 0, k / n) for c, (k, n) in acc.items()]
        return pd.DataFrame(rows, columns=["cluster_id", "n", "correct", "unjudged", "accuracy"])

    prev, now = table({0: (3, 12), 1: (0, 12)}), table({0: (6, 12), 2: (12, 12)})
    se = probe_standard_errors(prev, now)
    assert se.loc[0].tolist() == pytest.approx([0.125, 0.144338, 0.190941], abs=1e-6)
    assert se.loc[1, "se_prev"] == 0 and np.isnan(se.loc[1, "se_now"]) and np.isnan(se.loc[2, "se_change"])
    history = SelectionHistory(acc_prev=prev, acc_now=now)
    for strategy in ("random", "progress"):
        t = select(strategy, np.arange(9), np.arange(9) % 3, history, 4, 0).cluster_table.set_index("cluster_id")
        assert t.loc[0, "se_change"] == pytest.approx(0.190941, abs=1e-6) and np.isnan(t.loc[2, "se_prev"]), strategy
