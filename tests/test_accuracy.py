"""Accuracy probe: per-cluster sampling, greedy answers, per-sample and per-cluster tables (docs/algorithm.md#probe-and-judge)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_model import make_pool, pool_texts

from progress_core.model.config import ModelConfig
from progress_core.model.tiny import build_tiny_model
from progress_core.probe.accuracy import ProbeError, probe, probe_sample, save_probe
from progress_core.probe.accuracy_table import read_accuracy_table
from progress_core.probe.config import ProbeConfig
from progress_core.probe.judges import ExactMatchJudge, Verdict
from progress_core.training.config import TrainingConfig
from progress_core.training.loop import train_to_step


def test_probe_sample_draws_at_most_spc_per_cluster_from_selected_only():
    rng = np.random.default_rng(0)
    all_clusters = rng.integers(0, 20, size=5000)
    selected = np.sort(rng.choice(5000, size=1500, replace=False))
    all_clusters[selected[:3]] = 99
    chosen = probe_sample(selected, all_clusters[selected], 10, seed=3)
    assert set(chosen) <= set(selected) and len(np.unique(chosen)) == len(chosen)
    counts = pd.Series(all_clusters[chosen]).value_counts().sort_index()
    available = pd.Series(all_clusters[selected]).value_counts().sort_index()
    assert (counts <= 10).all() and counts[99] == 3
    assert counts.index.tolist() == available.index.tolist()
    assert (counts.to_numpy() == np.minimum(available.to_numpy(), 10)).all()
    assert np.array_equal(chosen, probe_sample(selected, all_clusters[selected], 10, seed=3))
    assert not np.array_equal(chosen, probe_sample(selected, all_clusters[selected], 10, seed=4))
    assert np.array_equal(probe_sample(selected, all_clusters[selected], None, seed=3), selected)
    small = probe_sample([7, 3, 9], [1, 1, 2], 100, seed=0)
    assert list(small) == [3, 7, 9]
    with pytest.raises(ProbeError):
        probe_sample([1, 2], [0], 5, seed=0)
    with pytest.raises(ProbeError):
        probe_sample([1, 1], [0, 0], 5, seed=0)


class ScriptedJudge:
    """A judge with fixed verdicts, to check the tables independently of the model's answers."""

    name = "scripted"

    def __init__(self, verdicts):
        self.verdicts = verdicts

    def judge(self, questions, predictions, references):
        assert len(questions) == len(predictions) == len(references) == len(self.verdicts)
        return [Verdict(v, "", None if v is not None else "unparseable") for v in self.verdicts]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    pool = make_pool(root, n=240, seed=0)
    evaluation = make_pool(root / "eval", n=60, seed=1)
    cfg = TrainingConfig(model=ModelConfig(patch_size=8), global_batch_size=16, final_step=30)
    init = build_tiny_model(pool_texts(pool), cfg.model, root / "init")
    result = train_to_step(init, pool, root / "images", 30, cfg, root / "step30", progress=False)
    return root, evaluation, cfg, init, result.checkpoint


@pytest.mark.slow
def test_learnable_concept_rises_above_chance_random_concept_does_not(trained):
    root, evaluation, cfg, init, checkpoint = trained
    judge = ExactMatchJudge()
    pcfg = ProbeConfig(model=cfg.model, batch_size=32)
    before = probe(init, evaluation, root / "eval" / "images", judge, pcfg, progress=False).per_cluster
    after = probe(checkpoint, evaluation, root / "eval" / "images", judge, pcfg, progress=False).per_cluster
    acc_before = dict(zip(before.cluster_id, before.accuracy))
    acc = dict(zip(after.cluster_id, after.accuracy))
    assert acc_before[0] <= 0.3
    assert acc[0] >= 0.8, after
    assert acc[1] <= 0.5, after


def test_tables_sum_and_batched_generation_matches_single(trained, tmp_path):
    root, evaluation, cfg, init, checkpoint = trained
    rows = evaluation.iloc[:12]
    verdicts = [1, 0, None, 1, 1, 0, None, None, 1, 0, 0, 1]
    result = probe(
        checkpoint,
        rows,
        root / "eval" / "images",
        ScriptedJudge(verdicts),
        ProbeConfig(model=cfg.model, batch_size=5),
        progress=False,
    )
    single = probe(
        checkpoint,
        rows,
        root / "eval" / "images",
        ExactMatchJudge(),
        ProbeConfig(model=cfg.model, batch_size=1),
        progress=False,
    )
    assert result.per_sample["prediction"].tolist() == single.per_sample["prediction"].tolist()
    ps, pc = result.per_sample, result.per_cluster
    assert list(ps.columns[:6]) == ["sample_id", "cluster_id", "prompt", "prediction", "reference", "verdict"]
    assert ps["sample_id"].tolist() == rows["sample_id"].tolist()
    assert ps["reference"].tolist()[:2] == [c.split('"value": "')[2].split('"')[0] for c in rows.conversations[:2]]
    assert "<image>" not in " ".join(ps["prompt"])
    assert pc["n"].sum() == len(ps) == 12
    assert pc["correct"].sum() == 5 and pc["unjudged"].sum() == 3
    for _, c in pc.iterrows():
        mine = ps[ps.cluster_id == c.cluster_id]
        assert c.n == len(mine) and c.correct == int((mine.verdict == 1).sum())
        assert c.accuracy == pytest.approx(c.correct / (c.n - c.unjudged))
    paths = save_probe(result, tmp_path / "probe")
    back = pq.read_table(paths["per_sample"]).to_pandas()
    assert back["verdict"].isna().sum() == 3 and back["verdict"].dropna().astype(int).tolist() == [
        1,
        0,
        1,
        1,
        0,
        1,
        0,
        0,
        1,
    ]
    assert read_accuracy_table(paths["per_cluster"])["n"].sum() == 12
