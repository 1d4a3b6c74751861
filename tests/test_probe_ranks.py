"""The probe sharded over launcher ranks (README: The probe on every GPU): rows dealt out over 2 CPU ranks (and
over 2 "nodes"), each rank answering and judging its share with the tiny model and the exact-match judge; the
merged tables equal a one-process probe's on the same rows exactly."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
from test_model import make_pool, pool_texts

from progress_core.model.config import ModelConfig
from progress_core.model.tiny import build_tiny_model
from progress_core.probe.accuracy import probe
from progress_core.probe.accuracy_table import accuracy_from_verdicts, merge_accuracy_tables
from progress_core.probe.config import ProbeConfig
from progress_core.probe.judges import ExactMatchJudge
from progress_core.probe.launched import probe_launched
from progress_core.run.config import load_config
from progress_core.training.config import TrainingConfig
from progress_core.training.launch import free_port
from progress_core.training.loop import train_to_step
from progress_core.training.node import follow


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """A tiny model trained a little (so the exact-match verdicts are mixed) and its one-process probe."""
    root = tmp_path_factory.mktemp("probe_ranks")
    pool = make_pool(root, n=47)
    cfg = TrainingConfig(
        model=ModelConfig(patch_size=8), global_batch_size=8, final_step=20, learning_rate=3e-3, num_threads=1
    )
    init = build_tiny_model(pool_texts(pool), cfg.model, root / "init")
    checkpoint = train_to_step(init, pool, root / "images", 20, cfg, root / "step20", progress=False).checkpoint
    pcfg = ProbeConfig(model=cfg.model, batch_size=8, num_threads=1, dist_backend="gloo")
    one = probe(checkpoint, pool, root / "images", ExactMatchJudge(), pcfg, progress=False)
    verdicts = one.per_sample["verdict"]
    assert 0 < verdicts.sum() < len(verdicts), "the test needs right and wrong answers"
    return root, pool, checkpoint, pcfg, one


def assert_same_probe(a, b) -> None:
    pd.testing.assert_frame_equal(a.per_cluster, b.per_cluster, check_exact=True)
    pd.testing.assert_frame_equal(a.per_sample, b.per_sample, check_exact=True)
    assert a.stats == b.stats


def test_probe_ranks_counts_merge_to_the_whole_table():
    rng = np.random.default_rng(0)
    clusters = rng.integers(0, 7, size=300)
    verdicts = rng.choice(np.array([1, 0, None], dtype=object), size=300, p=[0.5, 0.4, 0.1])
    whole = accuracy_from_verdicts(clusters, verdicts)
    parts = [accuracy_from_verdicts(clusters[r::3], verdicts[r::3]) for r in range(3)]
    low = clusters < 3
    split = [
        accuracy_from_verdicts(clusters[low], verdicts[low]),
        accuracy_from_verdicts(clusters[~low], verdicts[~low]),
    ]
    pd.testing.assert_frame_equal(merge_accuracy_tables(split), whole, check_exact=True)
    pd.testing.assert_frame_equal(merge_accuracy_tables(parts), whole, check_exact=True)
    pd.testing.assert_frame_equal(merge_accuracy_tables([parts[0], whole.iloc[:0]]), parts[0], check_exact=True)
    assert merge_accuracy_tables([]).empty
    assert load_config(None, {"probe": {"nproc_per_node": 2}}).probe_config().world_size() == 2


@pytest.mark.slow
def test_probe_ranks_two_ranks_merge_to_the_one_process_probe(probed):
    root, pool, checkpoint, pcfg, one = probed
    lines: list[str] = []
    two = probe_launched(
        checkpoint,
        pool,
        root / "images",
        pcfg.model_copy(update={"nproc_per_node": 2}),
        log_line=lines.append,
        progress=False,
        timeout_s=120,
    )
    assert any("run_probe_job on 2 process(es), gloo" in line for line in lines)
    assert {line for line in lines if "joined the process group" in line} == {
        f"[rank {r}] joined the process group of 2 ranks" for r in (0, 1)
    }
    assert_same_probe(two, one)


@pytest.mark.slow
def test_probe_ranks_over_two_nnodes_merge_to_the_one_process_probe(probed, tmp_path):
    """The probe spans the training's nodes: node 0 publishes it, node 1 joins through the same follower."""
    root, pool, checkpoint, pcfg, one = probed
    jobs = tmp_path / "jobs"
    lines: list[str] = []
    follower = threading.Thread(target=follow, args=(jobs, 1), kwargs={"pieces": 1, "log_line": lines.append})
    follower.start()
    multi = pcfg.model_copy(
        update={"nnodes": 2, "rdzv_endpoint": f"127.0.0.1:{free_port()}", "rdzv_id": "t", "node_jobs_dir": str(jobs)}
    )
    for _ in range(300):
        if lines:
            break
        follower.join(0.1)
    two = probe_launched(checkpoint, pool.iloc[::-1], root / "images", multi, progress=False, timeout_s=120)
    follower.join(60)
    assert not follower.is_alive() and any("run_probe_job on 1 process(es), gloo, node 1 of 2" in x for x in lines)
    reversed_one = probe(checkpoint, pool.iloc[::-1], root / "images", ExactMatchJudge(), pcfg, progress=False)
    assert_same_probe(two, reversed_one)
    assert reversed_one.per_cluster.equals(one.per_cluster)


class CountingJudge(ExactMatchJudge):
    """The exact judge, counting its calls (an LLM judge stands for it: only where it runs is checked)."""

    calls: list[int] = []

    def judge(self, questions, predictions, references):
        self.calls.append(len(predictions))
        return super().judge(questions, predictions, references)


def test_probe_ranks_an_llm_judge_runs_once_after_the_ranks_on_all_rows(tmp_path, monkeypatch):
    """Ranks that only answered (an LLM judge) leave the judging to the caller: one call on all rows, in order."""
    from progress_core.io import write_parquet
    from progress_core.probe import launched
    from progress_core.probe.accuracy import ProbeError

    answers = pd.DataFrame(
        {
            "sample_id": [10, 11, 12, 13, 14],
            "cluster_id": [0, 1, 0, 1, 0],
            "prompt": list("abcde"),
            "prediction": ["red", "x", "blue", "y", "green"],
            "reference": ["red", "z", "blue", "y", "grey"],
        }
    )
    for rank in range(2):
        rows = np.arange(rank, 5, 2)
        write_parquet(answers.iloc[rows].assign(row=rows), tmp_path / f"samples{rank}.parquet")
    monkeypatch.setattr(launched, "make_judge", lambda cfg: CountingJudge())
    cfg = ProbeConfig(nproc_per_node=2, judge={"kind": "llm"})
    assert not launched.judged_on_ranks(cfg)
    result = launched._merged(tmp_path, cfg)
    assert CountingJudge.calls == [5]
    assert result.per_sample["sample_id"].tolist() == [10, 11, 12, 13, 14]
    assert result.per_sample["verdict"].tolist() == [1, 0, 1, 1, 0]
    assert result.per_cluster[["n", "correct"]].to_numpy().tolist() == [[3, 2], [2, 1]]
    write_parquet(answers.iloc[[1]].assign(row=[3]), tmp_path / "samples1.parquet")
    with pytest.raises(ProbeError, match="do not cover the rows exactly once"):
        launched._merged(tmp_path, cfg)
