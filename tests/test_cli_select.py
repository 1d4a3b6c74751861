import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from progress_cli.main import main
from progress_core.id_sets import read_ids, write_ids
from progress_core.probe.accuracy_table import read_accuracy_table

SIZES = [50, 50, 5, 30, 20]


def inputs(tmp_path):
    cids = np.repeat(np.arange(5), SIZES)
    n = cids.size
    pq.write_table(
        pa.table({"sample_id": np.arange(n), "cluster_id": cids, "similarity": np.ones(n, dtype=np.float32)}),
        tmp_path / "clusters.parquet",
    )
    write_ids(np.arange(n), tmp_path / "remaining.parquet")
    prev = {
        "cluster_accuracies": {
            "0": {"correct": 2, "total": 4, "accuracy": 0.5},
            "1": {"correct": 0, "total": 4, "accuracy": 0.0},
            "3": {"correct": 4, "total": 5, "accuracy": 0.8},
        }
    }
    (tmp_path / "prev.json").write_text(json.dumps(prev))
    pd.DataFrame(
        {
            "cluster_id": [0, 1, 2, 3],
            "n": [4, 4, 4, 5],
            "correct": [3, 2, 3, 3],
            "unjudged": [0] * 4,
            "accuracy": [0.75, 0.5, 0.75, 0.6],
        }
    ).to_parquet(tmp_path / "now.parquet")
    return cids


def args(tmp_path, *extra):
    return [
        "select",
        "--set",
        "selection.strategy=progress",
        "--clusters",
        str(tmp_path / "clusters.parquet"),
        "--remaining",
        str(tmp_path / "remaining.parquet"),
        "--acc-prev",
        str(tmp_path / "prev.json"),
        "--acc-now",
        str(tmp_path / "now.parquet"),
        "--set",
        "selection.selection_num=100",
        "--set",
        "seed=3",
        "--set",
        "training.global_batch_size=4",
        "--out",
        str(tmp_path / "new.parquet"),
        *extra,
    ]


def test_select_end_to_end(tmp_path, capsys):
    cids = inputs(tmp_path)
    original = (
        "--set",
        "selection.redistribute_overflow=false",
        "--set",
        "selection.fallback_when_no_progress=original",
    )
    assert main(args(tmp_path, "--cluster-table", str(tmp_path / "table.parquet"), *original)) == 0
    ids = read_ids(tmp_path / "new.parquet")
    # same quotas as the hand-computed example in test_selection: 3, 10, 5 (capped) + 10 exploration
    counts = np.bincount(cids[ids], minlength=5)
    assert counts[:3].tolist() == [3, 10, 5] and counts[3:].sum() == 10
    assert pq.read_table(tmp_path / "new.parquet").column("cluster_id").to_numpy().tolist() == cids[ids].tolist()
    table = pd.read_parquet(tmp_path / "table.parquet")
    assert table.set_index("cluster_id").loc[[0, 1, 2], "quota"].tolist() == [3, 10, 5]
    out = capsys.readouterr().out
    assert "selected 28 (exploit 18, explore 10)" in out and "capped by availability" in out
    assert main(args(tmp_path, "--set", "selection.redistribute_overflow=true")) == 0
    assert np.bincount(cids[read_ids(tmp_path / "new.parquet")], minlength=5)[:3].tolist() == [33, 50, 5]


def test_select_same_seed_same_ids(tmp_path):
    inputs(tmp_path)
    assert main(args(tmp_path)) == 0
    first = read_ids(tmp_path / "new.parquet")
    assert main(args(tmp_path)) == 0
    assert read_ids(tmp_path / "new.parquet").tolist() == first.tolist()
    assert main(args(tmp_path, "--round", "3")) == 0
    assert read_ids(tmp_path / "new.parquet").tolist() != first.tolist()


def test_select_by_hand_draws_what_the_runs_select_stage_draws(tmp_path):
    """Round 4 of a run with seed 3: the select stage's draw, by hand with --round 4 (docs/algorithm.md#selection)."""
    from progress_core.run.config import load_config
    from progress_core.selection.context import SelectionHistory
    from progress_core.selection.strategies import select

    cids = inputs(tmp_path)
    assert main(args(tmp_path, "--round", "4")) == 0
    cfg = load_config(overrides={"selection": {"strategy": "progress", "selection_num": 100}, "seed": 3})
    history = SelectionHistory(
        acc_prev=read_accuracy_table(tmp_path / "prev.json"), acc_now=read_accuracy_table(tmp_path / "now.parquet")
    )
    remaining = read_ids(tmp_path / "remaining.parquet")
    rng = np.random.default_rng([3, 4])
    run = select("progress", remaining, cids, history, 100, rng, **cfg.selection.progress_options())
    assert read_ids(tmp_path / "new.parquet").tolist() == run.sample_ids.tolist()


def test_select_bad_input_is_one_line(tmp_path, capsys):
    inputs(tmp_path)
    (tmp_path / "prev.json").write_text('{"cluster_accuracies": {"zero": {}}}')
    assert main(args(tmp_path)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "'zero' is not an integer" in err and "\n" not in err
    assert not (tmp_path / "new.parquet").exists()


def test_select_missing_acc_now_and_wrong_options(tmp_path, capsys):
    inputs(tmp_path)
    a = args(tmp_path)
    i = a.index("--acc-now")
    del a[i : i + 2]
    assert main(a) == 1
    assert "needs the accuracy at the current probe" in capsys.readouterr().err
    random_args = ["select", "--set", "selection.strategy=random", "--set", "selection.selection_num=7"]
    random_args += [
        "--clusters",
        str(tmp_path / "clusters.parquet"),
        "--remaining",
        str(tmp_path / "remaining.parquet"),
    ]
    assert main([*random_args, "--set", "selection.strategy=randm", "--out", str(tmp_path / "r.parquet")]) == 1
    assert "selection.strategy" in capsys.readouterr().err and not (tmp_path / "r.parquet").exists()
    random_args += ["--set", "training.global_batch_size=4", "--out", str(tmp_path / "r.parquet")]
    assert main([*random_args, "--set", "selection.temperature=1"]) == 0
    assert read_ids(tmp_path / "r.parquet").size == 4
    assert "budget 4: selection.selection_num 7 in whole batches of 4" in capsys.readouterr().out


def test_select_checks_manifest_size(tmp_path, capsys):
    from progress_core.data.manifest import build_manifest

    inputs(tmp_path)
    rows = [
        {"id": f"s{i}", "conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]}
        for i in range(7)
    ]
    (tmp_path / "pool.json").write_text(json.dumps(rows))
    build_manifest(tmp_path / "pool.json", tmp_path / "manifest.parquet")
    assert main(args(tmp_path, "--manifest", str(tmp_path / "manifest.parquet"))) == 1
    assert "has 155 samples, the manifest 7" in capsys.readouterr().err
