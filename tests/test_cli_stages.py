import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from progress_cli.main import main

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "colour", "is", "the", "shape", "?", "image"]
COLOURS = [(220, 20, 20), (20, 220, 20), (20, 20, 220)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """60-row manifest (shared schema) of three colours plus a tiny BERT text encoder saved by path."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("stages")
    (root / "img").mkdir()
    for c, rgb in enumerate(COLOURS):
        Image.new("RGB", (32, 32), rgb).save(root / "img" / f"{c}.png")
    n = 60
    conv = json.dumps(
        [{"from": "human", "value": "<image>\nwhat colour is the shape ?"}, {"from": "gpt", "value": "x"}]
    )
    table = pa.table(
        {
            "sample_id": pa.array(np.arange(n), pa.int64()),
            "id": pa.array([str(i) for i in range(n)]),
            "image": pa.array([f"img/{i % 3}.png" for i in range(n)]),
            "question": pa.array(["what colour is the shape ?"] * n),
            "answer": pa.array(["x"] * n),
            "n_turns": pa.array([2] * n, pa.int32()),
            "source": pa.array(["img"] * n),
            "conversations": pa.array([conv] * n),
            "extra": pa.array([None] * n, pa.string()),
        }
    )
    pq.write_table(table, root / "manifest.parquet")
    bert = root / "bert"
    bert.mkdir()
    (bert / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(VOCAB),
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            max_position_embeddings=32,
        )
    ).save_pretrained(bert)
    BertTokenizerFast(vocab_file=str(bert / "vocab.txt")).save_pretrained(bert)
    return root


def _sample_ids(path) -> np.ndarray:
    return pq.read_table(path).column("sample_id").to_numpy()


def test_features_cluster_warmup_end_to_end(workdir, capsys):
    feats = workdir / "features.npy"
    argv = ["features", "--manifest", str(workdir / "manifest.parquet"), "--images", str(workdir), "--out", str(feats)]
    argv += ["--set", f"features.text_encoder={workdir / 'bert'}", "--set", "features.batch_size=16"]
    assert main(argv) == 0
    x = np.load(feats)
    assert x.shape == (60, 264) and x.dtype == np.float16
    assert "unreadable images 0" in capsys.readouterr().out

    clusters = workdir / "clusters"
    argv = ["cluster", "--features", str(feats), "--set", "clustering.selection_k=3", "--set", "clustering.niter=10"]
    assert main([*argv, "--out", str(clusters), "--name", "selection"]) == 0
    assign = pq.read_table(clusters / "selection_assignment.parquet")
    cid = assign.column("cluster_id").to_numpy()
    assert {tuple(sorted(set(cid[np.arange(60) % 3 == c]))) for c in range(3)} == {(a,) for a in set(cid)}
    assert len(set(cid)) == 3

    argv = ["cluster", "--features", str(feats), "--out", str(clusters), "--name", "annotation"]
    assert main([*argv, "--set", "clustering.annotation_k=null"]) == 0
    assert "k=2, niter=50, seed=1234" in capsys.readouterr().out

    out = workdir / "pools"
    argv = ["warmup", "--features", str(feats), "--clusters", str(clusters), "--set", "warmup.fractions=[0.2, 0.3]"]
    assert main([*argv, "--out", str(out)]) == 0
    w1, w2, rem = (_sample_ids(out / f"{name}.parquet") for name in ("w1", "w2", "remaining"))
    assert len(w1) == 12 and len(set(w1) | set(w2)) == len(w1) + len(w2) >= 18
    assert sorted(np.concatenate([w1, w2, rem]).tolist()) == list(range(60))
    assert f"w1=12 w2={len(w2)} remaining={len(rem)}" in capsys.readouterr().out


def test_stage_errors_are_one_line(workdir, tmp_path, capsys):
    assert main(["features", "--manifest", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "f.npy")]) == 1
    assert "manifest not found" in capsys.readouterr().err
    feats = tmp_path / "f.npy"
    np.save(feats, np.eye(4, dtype=np.float16))
    cluster = ["cluster", "--features", str(feats), "--out", str(tmp_path), "--name", "annotation"]
    assert main([*cluster, "--set", "clustering.annotation_k=9"]) == 1
    err = capsys.readouterr().err
    assert "k=9" in err and len(err.strip().splitlines()) == 1
    assert main(["warmup", "--features", str(feats), "--clusters", str(tmp_path), "--out", str(tmp_path)]) == 1
    assert "no clustering 'selection'" in capsys.readouterr().err


def test_stage_knobs_come_from_config_file_preset_and_sets(workdir, tmp_path, capsys):
    """The same resolution as `progress run`: file, then --preset, then each --set."""
    feats = tmp_path / "f.npy"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 6)).astype(np.float32)
    np.save(feats, (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16))
    config = tmp_path / "run.yaml"
    config.write_text("clustering:\n  selection_k: 3\n  niter: 5\n  seed: 7\n")
    cluster = ["cluster", "--features", str(feats), "--out", str(tmp_path / "c"), "--name", "selection"]
    assert main([*cluster, "--config", str(config)]) == 0
    assert "k=3, niter=5, seed=7" in capsys.readouterr().out
    assert main([*cluster, "--config", str(config), "--set", "clustering.selection_k=4"]) == 0
    assert "k=4, niter=5, seed=7" in capsys.readouterr().out
    assert main([*cluster, "--preset", "paper"]) == 0
    assert "k=2," in capsys.readouterr().out, "the paper's 5000 per 665,298 rows scaled to 30"
    assert main([*cluster, "--preset", "paper", "--set", "clustering.selection_k=5000"]) == 1
    assert "k=5000" in capsys.readouterr().err
    assert main([*cluster, "--set", "clustering.nitre=5"]) == 1
    assert "invalid config field 'clustering.nitre': unknown field" in capsys.readouterr().err

    warmup = ["warmup", "--features", str(feats), "--clusters", str(tmp_path / "c"), "--out", str(tmp_path / "w")]
    sets = ["warmup.fractions=[0.2, 0.3]", "selection.strategy=coincide", "schedule.final_step=2"]
    sets += ["training.global_batch_size=5"]
    assert main([*warmup, *(arg for item in sets for arg in ("--set", item))]) == 0
    assert "w1=6 " in capsys.readouterr().out
    order = pq.read_table(tmp_path / "w" / "coincide_order.parquet").column("sample_id").to_numpy()
    # W1 6 and W2 3 samples at batch 5 train 2 + 1 steps, so the last planned step is 3 (past FINAL_STEP 2):
    # 3 x 5 trained samples plus room for the 9 warm-up samples.
    assert order.size == 24 and len(set(order.tolist())) == 24


def test_features_import_reads_the_config_sources(tmp_path, capsys):
    n = 12
    pq.write_table(pa.table({"sample_id": pa.array(np.arange(n), pa.int64())}), tmp_path / "manifest.parquet")
    np.save(tmp_path / "joint.npy", np.eye(n, 5, dtype=np.float32) + 0.5)
    args = ["features", "import", "--manifest", str(tmp_path / "manifest.parquet"), "--out", str(tmp_path / "feat")]
    assert main([*args, "--set", f"features.import_features={tmp_path / 'joint.npy'}"]) == 0
    assert f"{n} rows (joint)" in capsys.readouterr().out
    assert np.load(tmp_path / "feat" / "features.npy").shape == (n, 5)
    extract = ["features", "--manifest", str(tmp_path / "manifest.parquet"), "--out", str(tmp_path / "x.npy")]
    assert main([*extract, "--set", f"features.import_features={tmp_path / 'joint.npy'}"]) == 1
    assert "use `progress features import`" in capsys.readouterr().err
