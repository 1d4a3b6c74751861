"""Held-out split of a user's pool and the majority-answer baseline (``progress compare``)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from progress_core.data.holdout import HoldoutError, concept_of_row, split_holdout
from progress_core.data.statistics import majority_baseline


def _rows(n):
    rows = []
    for i in range(n):
        image = None if i % 5 == 0 else f"{'coco' if i % 2 else 'gqa'}/{i}.jpg"
        rows.append(
            {
                "id": f"s{i}",
                **({"image": image} if image else {}),
                "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "yes" if i % 3 else "no"}],
            }
        )
    return rows


def test_split_holdout_keeps_every_row_once(tmp_path):
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(_rows(50)))
    split = split_holdout(pool, tmp_path / "out", 0.2, seed=3)
    kept = json.loads(split["pool_json"].read_text())
    held = json.loads(split["eval_json"].read_text())
    assert len(held) == split["n_eval"] == 10 and len(kept) == 40
    assert sorted(r["id"] for r in kept + held) == sorted(r["id"] for r in _rows(50))
    labels = pd.read_parquet(split["labels"])
    assert labels["id"].tolist() == [r["id"] for r in held]
    assert set(labels["concept"]) <= {"coco", "gqa", "text"}
    again = split_holdout(pool, tmp_path / "again", 0.2, seed=3)
    assert json.loads(again["eval_json"].read_text()) == held, "seeded"


def test_split_holdout_with_a_given_eval_split_and_bad_fractions(tmp_path):
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(_rows(20)))
    ev = tmp_path / "eval.json"
    ev.write_text(json.dumps(_rows(4)))
    split = split_holdout(pool, tmp_path / "out", 0.0, eval_json=ev)
    assert split["pool_json"] == pool and split["n_eval"] == 4
    with pytest.raises(HoldoutError, match="fraction"):
        split_holdout(pool, tmp_path / "bad", 0.0)


def test_concept_of_row_and_majority_baseline(tmp_path):
    assert concept_of_row({"image": "coco/a.jpg"}) == "coco" and concept_of_row({}) == "text"
    rows = _rows(30)
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(rows))
    labels = pd.DataFrame({"id": [r["id"] for r in rows], "concept": [concept_of_row(r) for r in rows]})
    labels["family"], labels["difficulty"] = labels["concept"], "-"
    expected = 0
    for _, part in labels.assign(answer=[r["conversations"][1]["value"] for r in rows]).groupby("concept"):
        expected += part["answer"].value_counts().iloc[0]
    assert majority_baseline(path, labels) == pytest.approx(expected / 30)


def test_concepts_of_a_flat_pool_from_a_labels_file_or_a_json_field(tmp_path):
    rows = [{**r, "image": f"images/{i}.jpg", "source": "vqa" if i % 2 else "ocr"} for i, r in enumerate(_rows(20))]
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(rows))
    flat = pd.read_parquet(split_holdout(pool, tmp_path / "flat", 0.5, seed=1)["labels"])
    assert set(flat["concept"]) == {"images"}, "a flat images/ folder is one concept"
    by_field = pd.read_parquet(split_holdout(pool, tmp_path / "f", 0.5, seed=1, concept_field="source")["labels"])
    assert set(by_field["concept"]) == {"vqa", "ocr"} and by_field["family"].equals(by_field["concept"])
    table = tmp_path / "concepts.csv"
    pd.DataFrame({"id": [r["id"] for r in rows], "concept": [f"c{i % 3}" for i in range(20)]}).to_csv(table)
    by_file = pd.read_parquet(split_holdout(pool, tmp_path / "l", 0.5, seed=1, concept_labels=table)["labels"])
    assert by_file["concept"].tolist() == [f"c{int(i[1:]) % 3}" for i in by_file["id"]]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({r["id"]: "x" for r in rows[:2]}))
    with pytest.raises(HoldoutError, match=r"data.concept_labels has no entry for \d+ of 10 held-out rows \(ids '"):
        split_holdout(pool, tmp_path / "p", 0.5, seed=1, concept_labels=partial)
    assert not (tmp_path / "p" / "pool.json").exists(), "nothing written"
    with pytest.raises(HoldoutError, match="data.concept_labels: file not found"):
        split_holdout(pool, tmp_path / "m", 0.5, concept_labels=tmp_path / "none.json")
    with pytest.raises(HoldoutError, match="data.concept_field 'kind' is missing in 10 of 10"):
        split_holdout(pool, tmp_path / "k", 0.5, concept_field="kind")


def test_a_bad_concept_source_is_refused_before_any_stage(tmp_path):
    from flows.compare_strategies import check_strategies
    from progress_core.errors import ConfigError
    from progress_core.run.config import load_config

    pool = tmp_path / "pool.json"
    pool.write_text("[]")
    for data, message in (
        ({"concept_field": "source"}, "only a user's pool"),
        ({"pool_json": str(pool), "concept_labels": str(tmp_path / "x.json")}, "data.concept_labels: file not found"),
        ({"pool_json": str(pool), "concept_labels": str(pool), "concept_field": "s"}, "both set"),
    ):
        with pytest.raises(ConfigError, match=message) as err:
            check_strategies(["random"], load_config(overrides={"data": data}))
        assert len(str(err.value).splitlines()) == 1
