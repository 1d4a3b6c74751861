import json
import math

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from progress_core.features.config import FeatureConfig
from progress_core.features.extract import (
    CLIP_MEAN,
    CLIP_STD,
    DescriptorEncoder,
    DinoV2Encoder,
    MiniLMEncoder,
    WeightsChecksumError,
    extract_features,
    extract_shard,
    question_text,
    shard_ranges,
    verify_minilm_weights,
)
from progress_core.features.store import FeatureError, combine_features, load_shards, save_shard

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "<",
    ">",
    "image",
    "what",
    "colour",
    "is",
    "the",
    "square",
    "shape",
    "?",
    "a",
    "red",
    "blue",
    "how",
    "many",
    "count",
    "answer",
    "with",
    "word",
    "\n",
]


def conv(question, answer="yes"):
    return json.dumps([{"from": "human", "value": question}, {"from": "gpt", "value": answer}])


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny_bert")
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tok = BertTokenizerFast(vocab_file=str(d / "vocab.txt"))
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory):
    from transformers import Dinov2Config, Dinov2Model

    d = tmp_path_factory.mktemp("tiny_dino")
    torch.manual_seed(0)
    cfg = Dinov2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, patch_size=14, image_size=28
    )
    Dinov2Model(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A 5-row manifest following the shared schema: 2 images, a text-only row, a missing and a corrupt file."""
    root = tmp_path_factory.mktemp("pool")
    (root / "imgs").mkdir()
    Image.new("RGB", (40, 30), (220, 20, 20)).save(root / "imgs" / "red.png")
    Image.new("RGB", (30, 40), (20, 20, 220)).save(root / "imgs" / "blue.png")
    (root / "imgs" / "corrupt.png").write_bytes(b"not a png")
    images = ["imgs/red.png", "imgs/blue.png", None, "imgs/missing.png", "imgs/corrupt.png"]
    n = len(images)
    table = pa.table(
        {
            "sample_id": pa.array(np.arange(n), pa.int64()),
            "id": pa.array([f"s{i}" for i in range(n)]),
            "image": pa.array(images, pa.string()),
            "question": pa.array(["what colour is the square ?"] * n),
            "answer": pa.array(["red"] * n),
            "n_turns": pa.array([2] * n, pa.int32()),
            "source": pa.array(["imgs", "imgs", "text", "imgs", "imgs"]),
            "conversations": pa.array(
                [
                    conv("<image>\nwhat colour is the square ?\nAnswer with a word"),
                    conv("<image>\nwhat is the shape ?"),
                    conv("how many ?"),
                    conv("<image>\ncount"),
                    conv("<image>\nwhat is the square ?"),
                ]
            ),
            "extra": pa.array([None] * n, pa.string()),
        }
    )
    path = root / "manifest.parquet"
    import pyarrow.parquet as pq

    pq.write_table(table, path)
    return root, path, table


def test_question_text_joins_human_turns_and_cuts_answer_format():
    c = json.dumps(
        [
            {"from": "human", "value": "<image>\nWhat is it?"},
            {"from": "gpt", "value": "A cat."},
            {"from": "human", "value": "Its colour?\nAnswer the question using a single word."},
            {"from": "gpt", "value": "Black"},
        ]
    )
    assert question_text(c) == "<image>\nWhat is it?\nIts colour?"
    assert question_text(conv("Q?\nAnswer with the option's letter.\nAnswer the x")) == "Q?"
    assert question_text(conv("<image>\nDescribe.")) == "<image>\nDescribe."
    assert question_text("[]") == ""


def test_descriptor_distinguishes_colours_and_is_deterministic():
    enc = DescriptorEncoder()
    ims = [
        Image.new("RGB", (50, 40), (230, 10, 10)),
        Image.new("RGB", (64, 64), (240, 20, 15)),
        Image.new("RGB", (50, 40), (10, 10, 230)),
    ]
    v = enc.encode(ims)
    assert v.shape == (3, 256) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > 0.95 > v[0] @ v[2]
    np.testing.assert_array_equal(v, enc.encode(ims))


def test_combine_global_and_balanced_numbers():
    image = np.array([[3, 4], [0, 0], [0, 0]], np.float16)
    text = np.array([[1, 0], [0, 2], [0, 0]], np.float16)
    glob = combine_features(image, text, balanced=False).astype(np.float32)
    np.testing.assert_allclose(glob[0], np.array([3, 4, 1, 0]) / math.sqrt(26), atol=1e-3)
    np.testing.assert_allclose(glob[1], [0, 0, 0, 1], atol=1e-3)
    np.testing.assert_array_equal(glob[2], 0)
    bal = combine_features(image, text, balanced=True).astype(np.float32)
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(bal[0], [0.6 * r, 0.8 * r, r, 0], atol=1e-3)
    np.testing.assert_allclose(bal[1], [0, 0, 0, 1], atol=1e-3)
    np.testing.assert_array_equal(bal[2], 0)
    assert combine_features(image, text).dtype == np.float16 and not np.isnan(bal).any()
    with pytest.raises(FeatureError):
        combine_features(image[:2], text)


def test_minilm_code_path_with_tiny_bert_equals_masked_mean_pooling(tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    texts = ["what colour is the square ?", "how many"]
    enc = MiniLMEncoder(tiny_bert, device="cpu")
    got = enc.encode(texts)
    tok, model = AutoTokenizer.from_pretrained(tiny_bert), AutoModel.from_pretrained(tiny_bert).eval()
    for i, t in enumerate(texts):
        ids = tok(t, return_tensors="pt")
        with torch.no_grad():
            h = model(**ids).last_hidden_state[0].numpy()
        v = h.mean(0)
        np.testing.assert_allclose(got[i], v / np.linalg.norm(v), atol=1e-5)
    assert enc.dim == 16


def test_dinov2_code_path_preprocessing_and_pooler(tiny_dino):
    from transformers import AutoModel

    enc = DinoV2Encoder(str(tiny_dino), device="cpu")
    im = Image.new("RGB", (448, 224), (128, 64, 32))
    pix = enc.preprocess([im])
    assert pix.shape == (1, 3, 224, 224)
    np.testing.assert_allclose(pix[0, :, 100, 100], np.array([128, 64, 32]) / 255.0, atol=1e-6)
    got = enc.encode([im, Image.new("RGB", (60, 90), (0, 200, 0))])
    model = AutoModel.from_pretrained(tiny_dino).eval()
    x = (torch.from_numpy(pix) - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = model(pixel_values=x).pooler_output.numpy()
    np.testing.assert_allclose(got[0], ref[0], atol=1e-5)
    assert got.shape == (2, 16) and not np.allclose(got[0], got[1])


def test_extract_shard_text_only_and_unreadable_images(pool, tiny_bert, caplog):
    root, path, table = pool
    cfg = FeatureConfig(text_encoder=str(tiny_bert), device="cpu", batch_size=2)
    shard = extract_shard(table, root, 0, 5, cfg)
    assert shard.image.shape == (5, 256) and shard.text.shape == (5, 16) and shard.image.dtype == np.float16
    np.testing.assert_array_equal(shard.image_failed, [False, False, False, True, True])
    np.testing.assert_array_equal(shard.failed_sample_ids, [3, 4])
    assert np.abs(shard.image[:2]).sum(1).min() > 0
    np.testing.assert_array_equal(shard.image[2:], 0)
    assert np.abs(shard.text).sum(1).min() > 0
    assert "sample_id 3" in caplog.text and "sample_id 4" in caplog.text
    part = extract_shard(path, root, 2, 4, cfg)
    np.testing.assert_array_equal(part.failed_sample_ids, [3])
    np.testing.assert_array_equal(part.text, shard.text[2:4])


def test_extract_features_writes_aligned_float16(pool, tiny_bert, tmp_path):
    root, path, _ = pool
    cfg = FeatureConfig(text_encoder=str(tiny_bert), device="cpu")
    report = extract_features(path, root, tmp_path / "f.npy", cfg, shard_size=2, progress=False)
    feats = np.load(tmp_path / "f.npy", mmap_mode="r")
    assert feats.shape == (5, 272) and feats.dtype == np.float16
    assert (report.n, report.dim, report.n_image_failures, report.n_text_only) == (5, 272, 2, 1)
    assert report.failed_sample_ids == [3, 4]
    np.testing.assert_allclose(np.linalg.norm(feats.astype(np.float32), axis=1), 1.0, atol=2e-3)
    np.testing.assert_array_equal(feats[2:, :256], 0)
    shards = [save_shard(extract_shard(path, root, a, b, cfg), tmp_path / "shards") for a, b in shard_ranges(5, 2)]
    merged = load_shards(shards[::-1])
    np.testing.assert_array_equal(combine_features(merged.image, merged.text), feats)
    np.testing.assert_array_equal(merged.failed_sample_ids, [3, 4])
    with pytest.raises(FeatureError, match="tile"):
        load_shards(shards[1:])


def test_extract_rejects_non_dense_sample_ids(pool, tiny_bert, tmp_path):
    _, _, table = pool
    bad = table.set_column(0, "sample_id", pa.array([0, 1, 2, 4, 5], pa.int64()))
    with pytest.raises(FeatureError, match="row 3"):
        extract_features(bad, None, tmp_path / "f.npy", FeatureConfig(text_encoder=str(tiny_bert)), progress=False)
    assert not (tmp_path / "f.npy").exists()


def test_checksum_mismatch_is_a_named_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(WeightsChecksumError, match="sha256"):
        verify_minilm_weights(tmp_path)


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder(device="cpu")


def test_default_minilm_is_hand_computed_mean_pooling(minilm):
    from transformers import AutoModel, AutoTokenizer

    from progress_core.features.extract import default_minilm_path

    texts = ["A cat sits on the mat.", "What is the man holding in his right hand while riding the bike?"]
    got = minilm.encode(texts)
    assert got.shape == (2, 384)
    path = default_minilm_path()
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    for i, t in enumerate(texts):
        with torch.no_grad():
            h = model(**tok(t, return_tensors="pt")).last_hidden_state[0].numpy()
        v = h.mean(0)
        np.testing.assert_allclose(got[i], v / np.linalg.norm(v), atol=1e-5)


def test_default_minilm_paraphrases_are_closer(minilm):
    a, b, c = minilm.encode(
        ["What colour is the bus?", "Which color does the bus have?", "How many calories are in a banana?"]
    )
    assert a @ b > 0.7 and a @ b > a @ c + 0.3
