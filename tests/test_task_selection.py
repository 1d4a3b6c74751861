"""Round commit and selection stages (tasks/selection.py) as plain functions on 24 samples in 4 clusters: the
sets each round commits, the strategy's options and seed, and the record the artifacts read
(docs/algorithm.md#selection)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tasks.selection as selection_mod
from progress_core.data.config import DataConfig
from progress_core.id_sets import read_ids, write_ids
from progress_core.probe.accuracy_table import write_accuracy_table
from progress_core.selection.config import SelectionConfig
from progress_core.selection.context import SelectionError
from tasks.manifest import manifest_stage
from tasks.pool import prepare_pool
from tasks.selection import commit_warmup_stage, select_stage, strategy_options
from tasks.stage import EVENTS, StageRecord

N = 24
CLUSTERS = np.arange(N) % 4


@pytest.fixture
def inputs(tmp_path) -> dict:
    pq.write_table(
        pa.table({"sample_id": np.arange(N), "cluster_id": CLUSTERS, "similarity": np.ones(N, np.float32)}),
        tmp_path / "annotation_assignment.parquet",
    )
    annotation = StageRecord(
        stage="kmeans",
        out_dir=str(tmp_path),
        files={"assignment": str(tmp_path / "annotation_assignment.parquet")},
        content_hash="a",
    )
    pools = StageRecord(
        stage="warmup_pools",
        out_dir=str(tmp_path),
        files={
            "w1": str(write_ids(np.array([0, 1, 2, 3]), tmp_path / "w1.parquet")),
            "w2": str(write_ids(np.array([4, 5]), tmp_path / "w2.parquet")),
        },
        content_hash="p",
    )
    probes = []
    for name, acc in (("prev", [0.5, 0.5, 0.5, 0.5]), ("now", [1.0, 0.5, 0.5, 0.25])):
        table = {"cluster_id": [0, 1, 2, 3], "n": [4] * 4, "correct": [int(4 * a) for a in acc], "unjudged": [0] * 4}
        path = write_accuracy_table(pd.DataFrame({**table, "accuracy": acc}), tmp_path / name)
        probes.append(
            StageRecord(stage="probe", out_dir=str(tmp_path), files={"per_cluster": str(path)}, content_hash=name)
        )
    return {"annotation": annotation, "pools": pools, "probes": probes}


def _warmup(tmp_path, pools) -> StageRecord:
    w1 = commit_warmup_stage.fn(
        pools=pools,
        pool_name="w1",
        selected_before=None,
        remaining_before=None,
        n_samples=N,
        round_index=0,
        step=0,
        out_dir=str(tmp_path / "r00"),
    )
    return commit_warmup_stage.fn(
        pools=pools,
        pool_name="w2",
        selected_before=w1,
        remaining_before=w1,
        n_samples=N,
        round_index=1,
        step=2,
        out_dir=str(tmp_path / "r01"),
    )


def test_warmup_rounds_commit_the_pools_against_the_whole_pool(tmp_path, inputs):
    w2 = _warmup(tmp_path, inputs["pools"])
    assert w2.rows == {"new": 2, "selected_until": 6, "remaining_after": N - 6}
    assert w2.meta == {"round": 1, "step": 2, "strategy": "warmup:w2"}
    assert sorted(w2.files) == ["new", "remaining_after", "selected_until"]
    assert w2.files["selected_until"].endswith("selected_until_2.parquet") and w2.files["new"].endswith("new_1.parquet")
    np.testing.assert_array_equal(read_ids(w2.files["selected_until"]), [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(np.sort(read_ids(w2.files["remaining_after"])), np.arange(6, N))


def test_strategy_options_belong_to_progress_only():
    progress = SelectionConfig(strategy="progress", temperature=0.2, exploit_fraction=0.5)
    assert strategy_options(progress) == {
        "temperature": 0.2,
        "exploit_fraction": 0.5,
        "progress_measure": progress.progress_measure,
        "redistribute_overflow": progress.redistribute_overflow,
        "fallback_when_no_progress": progress.fallback_when_no_progress,
        "allocation": "paper",
        "uniform_share": 0.5,
        "max_tilt": 3.0,
        "progress_signal": "abs_change",
    }
    assert strategy_options(SelectionConfig(strategy="random", temperature=0.2)) == {}


def _select(tmp_path, inputs, warm, settings, budget=6, seed=1, round_index=2, out="r02"):
    prev, now = inputs["probes"]
    return select_stage.fn(
        settings=settings,
        budget=budget,
        seed=seed,
        annotation=inputs["annotation"],
        selected_before=warm,
        remaining_before=warm,
        acc_prev=prev,
        acc_now=now,
        coincide_order=None,
        n_samples=N,
        round_index=round_index,
        step=3,
        out_dir=str(tmp_path / out),
    )


def test_progress_round_commits_its_selection_and_explains_it(tmp_path, inputs):
    warm = _warmup(tmp_path, inputs["pools"])
    rec = _select(tmp_path, inputs, warm, SelectionConfig(strategy="progress", selection_num=6))
    new = read_ids(rec.files["new"])
    assert rec.rows == {"new": new.size, "selected_until": 6 + new.size, "remaining_after": N - 6 - new.size}
    assert 0 < new.size <= 6 and not set(new) & set(range(6)), "only from the remaining pool"
    assert rec.meta["strategy"] == "progress" and rec.meta["budget"] == 6 and rec.meta["step"] == 3
    assert all(isinstance(k, str) for k in rec.meta["probabilities"]), "JSON-safe keys"
    assert max(rec.meta["probabilities"], key=rec.meta["probabilities"].get) == "0", "cluster 0 improved most"
    clusters = pq.read_table(rec.files["clusters"]).to_pandas()
    assert {"cluster_id", "probability"} <= set(clusters.columns)
    np.testing.assert_array_equal(
        np.sort(read_ids(rec.files["selected_until"])), np.sort(np.concatenate([np.arange(6), new]))
    )


def test_selection_is_seeded_by_run_seed_and_round(tmp_path, inputs, monkeypatch):
    warm = _warmup(tmp_path, inputs["pools"])
    draws: list[dict] = []
    real = selection_mod.select
    monkeypatch.setattr(
        selection_mod,
        "select",
        lambda *a, **kw: draws.append(a[5].bit_generator.state) or real(*a, **kw),
    )
    random = SelectionConfig(strategy="random", selection_num=6)
    first = _select(tmp_path, inputs, warm, random)
    same = _select(tmp_path, inputs, warm, random, out="again")
    assert draws[0] == draws[1] and read_ids(first.files["new"]).tolist() == read_ids(same.files["new"]).tolist()
    _select(tmp_path, inputs, warm, random, round_index=3, out="r03")
    _select(tmp_path, inputs, warm, random, seed=2, out="seed2")
    assert draws[2] != draws[0] and draws[3] != draws[0]
    _select(tmp_path, inputs, warm, random)
    assert len(draws) == 4 and EVENTS[-1].action == "reused"
    _select(tmp_path, inputs, warm, random, budget=5)
    assert len(draws) == 5


def _assignment(tmp_path, n: int) -> StageRecord:
    path = tmp_path / "assignment.parquet"
    pq.write_table(pa.table({"sample_id": np.arange(n), "cluster_id": np.arange(n) % 4}), path)
    return StageRecord(stage="kmeans", out_dir=str(tmp_path), files={"assignment": str(path)}, content_hash="k")


def _headroom_start(tmp_path):
    """A 200-row headroom pool's manifest, its labels in manifest order and warm-up round 0 (10 rows)."""
    data = DataConfig(synthetic_n=200, synthetic_n_eval=0, headroom="default")
    pool = prepare_pool.fn(data=data, fingerprint="synthetic", out_dir=str(tmp_path / "data"))
    manifest = manifest_stage.fn(
        pool=pool, mode="skip", allow_duplicate_ids=False, out_dir=str(tmp_path / "m"), images="x"
    )
    ids = pq.read_table(manifest.files["manifest"], columns=["id"]).column("id").to_pylist()
    lab = pd.read_parquet(pool.files["labels"]).set_index("id").loc[ids]
    waste = ((lab["duplicate_of"] != "") | lab["noisy"] | lab["known"] | (lab["family"] == "random")).to_numpy()
    pools = StageRecord(
        stage="warmup_pools", out_dir=str(tmp_path), files={"w1": str(write_ids(np.arange(10), tmp_path / "w1"))}
    )
    before = commit_warmup_stage.fn(
        pools=pools,
        pool_name="w1",
        selected_before=None,
        remaining_before=None,
        n_samples=200,
        round_index=0,
        step=0,
        out_dir=str(tmp_path / "r0"),
    )
    return manifest, lab, waste, before


def _oracle_round(tmp_path, strategy, manifest, before, budget, r):
    return select_stage.fn(
        settings=SelectionConfig(strategy=strategy, selection_num=budget),
        budget=budget,
        seed=0,
        annotation=_assignment(tmp_path, 200),
        selected_before=before,
        remaining_before=before,
        acc_prev=None,
        acc_now=None,
        coincide_order=None,
        n_samples=200,
        round_index=r,
        step=r,
        out_dir=str(tmp_path / f"{strategy}{r}"),
        manifest=manifest,
    )


def test_oracle_rounds_on_the_headroom_pool_take_no_waste_until_the_learnable_rows_run_out(tmp_path):
    manifest, _, waste, before = _headroom_start(tmp_path)
    learnable = int((~waste[10:]).sum())
    assert 20 < learnable < 150, "the headroom pool has waste of every kind and learnable rows"
    picks = []
    for r, budget in enumerate((learnable - 13, 8, 20), start=1):
        before = _oracle_round(tmp_path, "oracle", manifest, before, budget, r)
        picks.append(read_ids(before.files["new"]))
    assert [p.size for p in picks] == [learnable - 13, 8, 20]
    assert not waste[np.concatenate(picks[:2])].any(), "no duplicate, noised, known or random row while budget allows"
    assert (~waste[picks[2]]).sum() == 5 and waste[picks[2]].sum() == 15, "then the last learnable rows, then waste"


def test_oracle_every_round_feeds_the_known_family_and_still_skips_the_rest_of_the_waste(tmp_path):
    manifest, lab, waste, before = _headroom_start(tmp_path)
    other_waste = ((lab["duplicate_of"] != "") | lab["noisy"] | (lab["family"] == "random")).to_numpy()
    known = lab["known"].to_numpy() & ~other_waste
    worth = int((~other_waste[10:]).sum())
    picks = read_ids(_oracle_round(tmp_path, "oracle_every_round", manifest, before, worth, 1).files["new"])
    assert picks.size == worth and known[picks].sum() == known[10:].sum() > 0
    assert not other_waste[picks].any(), "no duplicate, noised or random row while learnable rows are left"


def test_oracle_without_labels_is_a_named_error(tmp_path, inputs):
    warm = _warmup(tmp_path, inputs["pools"])
    with pytest.raises(SelectionError, match="reads the pool's labels; this pool has none"):
        _select(tmp_path, inputs, warm, SelectionConfig(strategy="oracle", selection_num=6))
