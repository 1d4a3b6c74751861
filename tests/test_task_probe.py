"""The probe stage (tasks/probe.py) as a plain function with the model run replaced by a recorder: which
samples are probed and with which cluster, which checkpoint and judge are used, what the record says, and that
a retrained checkpoint is probed again (docs/algorithm.md#probe-and-judge)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tasks.probe as probe_mod
from progress_core.id_sets import write_ids
from progress_core.probe.accuracy import ProbeResult
from progress_core.probe.accuracy_table import accuracy_from_verdicts, read_accuracy_table
from progress_core.probe.config import ProbeConfig
from progress_core.probe.judges import ExactMatchJudge
from tasks.probe import probe_stage
from tasks.stage import StageRecord

N = 30
CLUSTERS = np.arange(N) % 3


@pytest.fixture
def inputs(tmp_path) -> dict:
    conversations = [json.dumps([{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]) for i in range(N)]
    manifest_path = tmp_path / "manifest.parquet"
    pq.write_table(
        pa.table(
            {
                "sample_id": np.arange(N),
                "id": [f"s{i}" for i in range(N)],
                "conversations": conversations,
                "image": [None] * N,
            }
        ),
        manifest_path,
    )
    pq.write_table(
        pa.table({"sample_id": np.arange(N), "cluster_id": CLUSTERS, "similarity": np.ones(N, np.float32)}),
        tmp_path / "annotation_assignment.parquet",
    )
    selected = np.arange(0, 24)
    return {
        "manifest": StageRecord(
            stage="manifest",
            out_dir=str(tmp_path),
            files={"manifest": str(manifest_path)},
            content_hash="m",
            meta={"image_root": "/img"},
        ),
        "annotation": StageRecord(
            stage="kmeans",
            out_dir=str(tmp_path),
            files={"assignment": str(tmp_path / "annotation_assignment.parquet")},
            content_hash="a",
        ),
        "selected": StageRecord(
            stage="select",
            out_dir=str(tmp_path),
            files={"selected_until": str(write_ids(selected, tmp_path / "selected_until.parquet"))},
            content_hash="s",
        ),
        "checkpoint": StageRecord(
            stage="train", out_dir=str(tmp_path), files={"checkpoint": "/ckpt/r02"}, content_hash="t2"
        ),
    }


@pytest.fixture
def model(monkeypatch):
    """Answers every even sample correctly; records what the probe was asked."""
    calls: list[dict] = []

    def run(checkpoint, rows, image_root, judge, settings):
        calls.append({"checkpoint": checkpoint, "rows": rows, "image_root": image_root, "judge": judge})
        ids = np.asarray(rows.column("sample_id").to_pylist())
        verdicts = (ids % 2 == 0).astype(int)
        per_sample = pd.DataFrame(
            {"sample_id": ids, "cluster_id": rows.column("cluster_id").to_pylist(), "verdict": verdicts}
        )
        table = accuracy_from_verdicts(per_sample["cluster_id"], verdicts)
        return ProbeResult(per_sample, table, {"n": len(ids), "correct": int(verdicts.sum()), "unjudged": 0})

    monkeypatch.setattr(probe_mod, "probe", run)
    return calls


def _probe(inputs, out_dir, samples_per_cluster, seed=7, **kw):
    args = dict(
        checkpoint=inputs["checkpoint"],
        selected=inputs["selected"],
        annotation=inputs["annotation"],
        manifest=inputs["manifest"],
        samples_per_cluster=samples_per_cluster,
        seed=seed,
        settings=ProbeConfig(source="selected"),
        round_index=2,
        to_step=300,
        out_dir=str(out_dir),
    )
    return probe_stage.fn(**{**args, **kw})


def test_probe_samples_per_cluster_from_the_selected_set(tmp_path, inputs, model):
    rec = _probe(inputs, tmp_path / "probe", samples_per_cluster=3)
    call = model[0]
    ids = np.asarray(call["rows"].column("sample_id").to_pylist())
    cids = np.asarray(call["rows"].column("cluster_id").to_pylist())
    assert np.array_equal(cids, CLUSTERS[ids]) and set(ids) <= set(range(24))
    assert np.bincount(cids).tolist() == [3, 3, 3] and list(ids) == sorted(ids)
    assert call["checkpoint"] == "/ckpt/r02" and call["image_root"] == "/img"
    assert isinstance(call["judge"], ExactMatchJudge), "the configured (default: exact-match) judge"
    assert rec.rows == {"per_sample": 9, "per_cluster": 3}
    assert rec.meta == {
        "n": 9,
        "correct": int((ids % 2 == 0).sum()),
        "unjudged": 0,
        "round": 2,
        "step": 300,
        "source": "selected",
    }
    assert read_accuracy_table(rec.files["per_cluster"])["cluster_id"].tolist() == [0, 1, 2]


def test_warmup_probe_takes_every_selected_sample(tmp_path, inputs, model):
    rec = _probe(inputs, tmp_path / "probe", samples_per_cluster=None)
    assert model[0]["rows"].column("sample_id").to_pylist() == list(range(24)) and rec.rows["per_sample"] == 24


def test_probe_is_reused_until_the_checkpoint_is_retrained(tmp_path, inputs, model):
    out = tmp_path / "probe"
    first = _probe(inputs, out, samples_per_cluster=3)
    assert _probe(inputs, out, samples_per_cluster=3).content_hash == first.content_hash and len(model) == 1
    retrained = inputs["checkpoint"].model_copy(update={"content_hash": "t2-retrained"})
    _probe(inputs, out, samples_per_cluster=3, checkpoint=retrained)
    assert len(model) == 2
    _probe(inputs, out, samples_per_cluster=3, checkpoint=retrained, seed=8)
    assert len(model) == 3, "another probe sample"
