"""The held-out evaluation stage (tasks/evaluation.py) as a plain function with the model run replaced by a
recorder: its record and its key, which follows the checkpoint's content rather than its path
(docs/algorithm.md#probe-and-judge)."""

from __future__ import annotations

import pandas as pd

import tasks.evaluation as evaluation_mod
from progress_core.probe.config import ProbeConfig
from tasks.evaluation import evaluate_stage


def test_evaluation_is_keyed_by_the_checkpoints_content_not_its_path(tmp_path, monkeypatch):
    calls: list[str] = []

    def evaluate(checkpoint, eval_json, image_root, labels, settings):
        calls.append(checkpoint)
        return pd.DataFrame({"concept": ["colour", "count"], "n": [4, 6], "correct": [3, 2]})

    monkeypatch.setattr(evaluation_mod, "evaluate_concepts", evaluate)
    args = dict(
        checkpoint="/run/final/checkpoint",
        checkpoint_key="train-abc",
        eval_json="/pool/eval.json",
        image_root=None,
        labels="/pool/labels.parquet",
        settings=ProbeConfig(),
        label="progress",
        out_dir=str(tmp_path / "eval"),
    )
    rec = evaluate_stage.fn(**args)
    assert rec.meta == {"label": "progress", "accuracy": 0.5} and rec.rows == {"concepts": 2}
    assert pd.read_parquet(rec.files["concepts"])["concept"].tolist() == ["colour", "count"]
    evaluate_stage.fn(**args)
    assert calls == ["/run/final/checkpoint"]
    evaluate_stage.fn(**{**args, "checkpoint_key": "train-retrained"})
    assert len(calls) == 2, "a retrained checkpoint at the same path is evaluated again"
