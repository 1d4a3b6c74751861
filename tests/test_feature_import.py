"""Bring-your-own features: layouts, alignment, named errors and the content-keyed import stage."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from progress_core.features.importing import (
    FeatureIdMismatchError,
    FeatureImportError,
    FeatureRowCountError,
    import_features,
    npy_info,
    source_fingerprint,
)
from progress_core.features.store import combine_features, load_features

N = 50


@pytest.fixture
def parts(tmp_path):
    rng = np.random.default_rng(0)
    image = (rng.standard_normal((N, 12)) * 30).astype(np.float16)
    image[[3, 7]] = 0
    text = rng.standard_normal((N, 5)).astype(np.float32)
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "text.npy", text)
    return tmp_path, image, text


def test_pair_in_pool_order_equals_extraction_combine(parts):
    d, image, text = parts
    for balanced in (False, True):
        report = import_features(
            d / "f.npy", N, image=d / "image.npy", text=d / "text.npy", balanced=balanced, chunk=16
        )
        got = load_features(d / "f.npy")
        assert isinstance(got, np.memmap) and got.dtype == np.float16 and got.shape == (N, 17)
        np.testing.assert_array_equal(got, combine_features(image, text, balanced))
        assert (report.image_dim, report.text_dim, report.n_zero_rows) == (12, 5, 0)


def test_joint_npy_keyed_by_sample_id_is_reordered(parts, tmp_path):
    d, image, text = parts
    joint = np.concatenate([image.astype(np.float32), text], axis=1)
    perm = np.random.default_rng(1).permutation(N)
    np.save(tmp_path / "joint.npy", joint[perm])
    np.save(tmp_path / "ids.npy", perm)
    import_features(tmp_path / "keyed.npy", N, features=tmp_path / "joint.npy", ids=tmp_path / "ids.npy", chunk=7)
    np.save(tmp_path / "ordered.npy", joint)
    import_features(tmp_path / "ordered_out.npy", N, features=tmp_path / "ordered.npy")
    expected = combine_features(joint, np.zeros((N, 0), np.float32))
    np.testing.assert_array_equal(np.load(tmp_path / "keyed.npy"), expected)
    np.testing.assert_array_equal(np.load(tmp_path / "ordered_out.npy"), expected)
    norms = np.linalg.norm(expected.astype(np.float32), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-3)


def test_parquet_keyed_image_and_text_columns(parts, tmp_path):
    d, image, text = parts
    perm = np.random.default_rng(2).permutation(N)
    table = pa.table(
        {
            "sample_id": pa.array(perm, pa.int64()),
            "image": pa.array(image.astype(np.float32)[perm].tolist(), pa.list_(pa.float32())),
            "text": pa.array(text[perm].tolist(), pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, tmp_path / "keyed.parquet", row_group_size=9)
    report = import_features(tmp_path / "out.npy", N, features=tmp_path / "keyed.parquet", chunk=8)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), combine_features(image, text))
    assert (report.image_dim, report.text_dim) == (12, 5)


def test_row_count_mismatch_is_named(parts):
    d, _, _ = parts
    with pytest.raises(FeatureRowCountError, match="49 rows but the manifest has 50"):
        np.save(d / "short.npy", np.ones((N - 1, 5), np.float32))
        import_features(d / "f.npy", N, image=d / "image.npy", text=d / "short.npy")
    assert not (d / "f.npy").exists()


def test_id_mismatch_names_missing_unknown_and_repeated(parts, tmp_path):
    ids = np.arange(N)
    ids[4] = 3
    ids[9] = 77
    np.save(tmp_path / "joint.npy", np.ones((N, 4), np.float32))
    np.save(tmp_path / "ids.npy", ids)
    with pytest.raises(FeatureIdMismatchError) as err:
        import_features(tmp_path / "f.npy", N, features=tmp_path / "joint.npy", ids=tmp_path / "ids.npy")
    msg = str(err.value)
    assert "2 missing (e.g. 4, 9)" in msg and "1 unknown (e.g. 77)" in msg and "1 repeated (e.g. 3)" in msg
    table = pa.table({"sample_id": pa.array(np.arange(1, N + 1)), "features": pa.array([[1.0, 2.0]] * N)})
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(FeatureIdMismatchError, match="1 missing"):
        import_features(tmp_path / "f.npy", N, features=tmp_path / "bad.parquet")


def test_bad_inputs_are_named_errors(parts, tmp_path):
    d, _, _ = parts
    nan = np.ones((N, 5), np.float32)
    nan[11, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(FeatureImportError, match="non-finite feature at row 11"):
        import_features(tmp_path / "f.npy", N, image=d / "image.npy", text=tmp_path / "nan.npy")
    (tmp_path / "junk.npy").write_text("not numpy")
    with pytest.raises(FeatureImportError, match="not a .npy"):
        npy_info(tmp_path / "junk.npy")
    np.save(tmp_path / "one_d.npy", np.ones(N, np.float32))
    with pytest.raises(FeatureImportError, match="2-D"):
        import_features(tmp_path / "f.npy", N, features=tmp_path / "one_d.npy")
    with pytest.raises(FeatureImportError, match="both"):
        import_features(tmp_path / "f.npy", N, image=d / "image.npy")
    with pytest.raises(FeatureImportError, match="not found"):
        import_features(tmp_path / "f.npy", N, features=tmp_path / "missing.npy")


def test_fingerprint_follows_content_and_is_remembered(parts, tmp_path):
    d, image, _ = parts
    memo = tmp_path / "memo.json"
    first = source_fingerprint([d / "image.npy", d / "text.npy"], memo)
    assert memo.exists() and source_fingerprint([d / "image.npy", d / "text.npy"], memo) == first
    image[0, 0] += 1
    np.save(d / "image.npy", image)
    assert source_fingerprint([d / "image.npy", d / "text.npy"], memo) != first


def test_import_stage_is_content_keyed(parts, tmp_path):
    from tasks.feature_import import import_fingerprint, import_stage
    from tasks.stage import StageRecord

    d, image, text = parts
    manifest = StageRecord(stage="manifest", out_dir=str(d), rows={"manifest": N}, content_hash="m1")
    sources = {"image": str(d / "image.npy"), "text": str(d / "text.npy")}
    out_dir = str(tmp_path / "features")
    rec = import_stage.fn(manifest, sources, import_fingerprint(sources, out_dir), False, out_dir)
    assert rec.stage == "features" and rec.rows["features"] == N and rec.meta["imported"] == "image+text"
    again = import_stage.fn(manifest, sources, import_fingerprint(sources, out_dir), False, out_dir)
    assert again.key == rec.key and again.content_hash == rec.content_hash
    image[5] = 1
    np.save(d / "image.npy", image)
    changed = import_stage.fn(manifest, sources, import_fingerprint(sources, out_dir), False, out_dir)
    assert changed.key != rec.key and changed.content_hash != rec.content_hash
    np.testing.assert_array_equal(np.load(changed.files["features"]), combine_features(image, text))


def test_cli_features_import(parts, tmp_path, capsys):
    from progress_cli.main import main

    d, image, text = parts
    pq.write_table(pa.table({"sample_id": pa.array(np.arange(N), pa.int64())}), tmp_path / "manifest.parquet")
    args = ["features", "import", "--manifest", str(tmp_path / "manifest.parquet"), "--out", str(tmp_path / "feat")]
    assert main([*args, "--image", str(d / "image.npy"), "--text", str(d / "text.npy")]) == 0
    assert "50 rows (image+text; image 12 + text 5)" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "feat" / "features.npy"), combine_features(image, text))
    assert (tmp_path / "feat" / ".stage.json").exists()
    np.save(tmp_path / "short.npy", np.ones((N - 2, 17), np.float32))
    assert main([*args, "--features", str(tmp_path / "short.npy")]) == 1
    assert "FeatureRowCountError" not in capsys.readouterr().err  # one readable line, not a traceback
    assert main(["features", "--out", str(tmp_path / "x.npy")]) == 1


def test_combine_shards_streams_to_the_same_matrix(parts, tmp_path):
    from progress_core.features.store import FeatureError, ShardFeatures, combine_shards, load_shards, save_shard

    _, image, text = parts
    failed = np.zeros(N, bool)
    failed[[4, 33]] = True
    paths = [
        save_shard(
            ShardFeatures(s, image[s : s + 20], text[s : s + 20].astype(np.float16), failed[s : s + 20]), tmp_path
        )
        for s in range(0, N, 20)
    ]
    n, di, dt, bad = combine_shards(paths[::-1], tmp_path / "f.npy")
    merged = load_shards(paths)
    assert (n, di, dt, bad.tolist()) == (N, 12, 5, [4, 33])
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), combine_features(merged.image, merged.text))
    with pytest.raises(FeatureError, match="tile"):
        combine_shards(paths[1:], tmp_path / "g.npy")
    assert not (tmp_path / "g.npy").exists()
