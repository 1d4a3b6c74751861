"""Pool and manifest stages (tasks/manifest.py) called as plain functions: what their keys follow, what they
write and when they are reused (docs/architecture.md#stage-contract)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from flowkit import png_bytes

import tasks.manifest as data_mod
from progress_core.data.config import DataConfig
from progress_core.data.manifest import EmptyPoolError
from tasks.manifest import image_fingerprint, image_paths, manifest_stage
from tasks.pool import pool_fingerprint, prepare_pool
from tasks.stage import EVENTS, read_marker_file, skip_counts


def _turns(question: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]


def _pool(tmp_path: Path, n: int = 5, missing: tuple[int, ...] = ()) -> tuple[Path, Path]:
    root = tmp_path / "img"
    root.mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        rows.append({"id": f"s{i}", "image": f"{i}.png", "conversations": _turns(f"q{i}", f"a{i}")})
        if i not in missing:
            (root / f"{i}.png").write_bytes(png_bytes(i))
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(rows))
    return pool, root


@pytest.fixture
def builds(monkeypatch):
    """Counts the manifest builds the stage really runs."""
    calls: list[str] = []
    real = data_mod.build_manifest

    def counted(pool_json, out, **kw):
        calls.append(str(out))
        return real(pool_json, out, **kw)

    monkeypatch.setattr(data_mod, "build_manifest", counted)
    return calls


def test_pool_fingerprint_follows_the_users_pool_file(tmp_path):
    assert pool_fingerprint(DataConfig()) == "synthetic"
    pool, _ = _pool(tmp_path)
    cfg = DataConfig(pool_json=str(pool))
    first = pool_fingerprint(cfg)
    assert first == pool_fingerprint(cfg)
    pool.write_text(pool.read_text() + " ")
    assert pool_fingerprint(cfg) != first


def test_image_paths_are_resolved_sorted_and_unique(tmp_path):
    rows = [
        {"id": "a", "image": "b.png", "conversations": []},
        {"id": "b", "image": ["a.png", "b.png"], "conversations": []},
        {"id": "c", "conversations": []},
        {"id": "d", "image": "", "conversations": []},
        {"id": "e", "image": None, "conversations": []},
        "not a row",
    ]
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps(rows))
    assert image_paths(pool, "/root") == ["/root/a.png", "/root/b.png"]
    assert image_paths(pool, None) == ["a.png", "b.png"]


def test_image_fingerprint_counts_images_and_names_an_unreadable_pool(tmp_path):
    pool, root = _pool(tmp_path, n=3)
    record = prepare_pool.fn(
        data=DataConfig(pool_json=str(pool), image_root=str(root)), fingerprint="f", out_dir=str(tmp_path / "p")
    )
    assert image_fingerprint(record).startswith("stat:3:")
    assert image_fingerprint(record, contents=True).startswith("content:3:")
    pool.write_text("[{")
    assert image_fingerprint(record) == "unreadable-pool"


def test_users_pool_is_named_not_copied_and_reused_until_the_file_changes(tmp_path):
    pool, root = _pool(tmp_path)
    cfg = DataConfig(pool_json=str(pool), image_root=str(root))
    out = tmp_path / "data"
    first = prepare_pool.fn(data=cfg, fingerprint=pool_fingerprint(cfg), out_dir=str(out))
    assert first.files == {"pool_json": str(pool.resolve())} and first.meta["image_root"] == str(root.resolve())
    assert sorted(p.name for p in out.iterdir()) == [".stage.json"]
    again = prepare_pool.fn(data=cfg, fingerprint=pool_fingerprint(cfg), out_dir=str(out))
    assert EVENTS[-1].action == "reused" and again.content_hash == first.content_hash
    pool.write_text(json.dumps(json.loads(pool.read_text())[:4]))
    changed = prepare_pool.fn(data=cfg, fingerprint=pool_fingerprint(cfg), out_dir=str(out))
    assert EVENTS[-1].action == "computed" and changed.content_hash != first.content_hash


def test_synthetic_pool_is_generated_into_the_run(tmp_path):
    cfg = DataConfig(synthetic_n=50, synthetic_n_eval=4, synthetic_seed=3)
    record = prepare_pool.fn(data=cfg, fingerprint=pool_fingerprint(cfg), out_dir=str(tmp_path / "data"))
    assert record.rows == {"pool": 50, "eval": 4}
    assert set(record.files) == {"pool_json", "eval_json", "labels"}
    assert all(Path(p).is_relative_to(tmp_path / "data") and Path(p).exists() for p in record.files.values())
    assert len(json.loads(Path(record.files["pool_json"]).read_text())) == 50
    assert Path(record.meta["image_root"]).is_dir()
    other = prepare_pool.fn(
        data=cfg.model_copy(update={"synthetic_seed": 4}), fingerprint="synthetic", out_dir=str(tmp_path / "data")
    )
    assert other.key != record.key and other.content_hash != record.content_hash


def test_manifest_key_follows_images_and_mode_and_reuse_skips_the_build(tmp_path, builds):
    pool, root = _pool(tmp_path)
    cfg = DataConfig(pool_json=str(pool), image_root=str(root))
    pool_rec = prepare_pool.fn(data=cfg, fingerprint=pool_fingerprint(cfg), out_dir=str(tmp_path / "data"))
    out = str(tmp_path / "manifest")
    images = image_fingerprint(pool_rec)
    first = manifest_stage.fn(pool=pool_rec, mode="strict", allow_duplicate_ids=False, out_dir=out, images=images)
    assert first.rows == {"manifest": 5} and first.fingerprint == images and len(builds) == 1
    assert pq.read_table(first.files["manifest"]).column("id").to_pylist() == [f"s{i}" for i in range(5)]
    assert first.meta["image_root"] == str(root.resolve()) and first.meta["report"]["n_rows"] == 5
    assert "labels" not in first.meta
    again = manifest_stage.fn(pool=pool_rec, mode="strict", allow_duplicate_ids=False, out_dir=out, images=images)
    assert len(builds) == 1 and again.key == first.key and again.content_hash == first.content_hash

    img = root / "2.png"
    st = img.stat()
    img.write_bytes(png_bytes(200))
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    new_images = image_fingerprint(pool_rec)
    assert new_images != images
    fixed = manifest_stage.fn(pool=pool_rec, mode="strict", allow_duplicate_ids=False, out_dir=out, images=new_images)
    assert len(builds) == 2 and fixed.key != first.key
    assert fixed.content_hash != first.content_hash, "a changed image must reach the features' key"
    skip = manifest_stage.fn(pool=pool_rec, mode="skip", allow_duplicate_ids=False, out_dir=out, images=new_images)
    assert len(builds) == 3 and skip.key != fixed.key


def test_skipped_rows_are_counted_and_their_file_is_part_of_the_stage(tmp_path):
    pool, root = _pool(tmp_path, n=6, missing=(1, 4))
    cfg = DataConfig(pool_json=str(pool), image_root=str(root))
    pool_rec = prepare_pool.fn(data=cfg, fingerprint=pool_fingerprint(cfg), out_dir=str(tmp_path / "data"))
    out = tmp_path / "manifest"
    rec = manifest_stage.fn(pool=pool_rec, mode="skip", allow_duplicate_ids=False, out_dir=str(out))
    assert rec.rows == {"manifest": 4} and rec.fingerprint == ""
    assert skip_counts(rec) == {"manifest: MissingImageError": 2}
    written = read_marker_file(out).written
    assert any(p.endswith(".rejected.jsonl") for p in written) and any(p.endswith("manifest.parquet") for p in written)


def test_skipped_rows_are_announced_with_the_rejected_rows_file_when_it_happens(tmp_path, caplog):
    pool, root = _pool(tmp_path, n=6, missing=(1, 4))
    cfg = DataConfig(pool_json=str(pool), image_root=str(root))
    pool_rec = prepare_pool.fn(data=cfg, fingerprint=pool_fingerprint(cfg), out_dir=str(tmp_path / "data"))
    out = tmp_path / "manifest"
    with caplog.at_level(logging.INFO, logger="progress.stage"):
        manifest_stage.fn(pool=pool_rec, mode="skip", allow_duplicate_ids=False, out_dir=str(out))
    (line,) = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert line.startswith("manifest: skipped 2 of 6 rows (MissingImageError 2); each with its row (0-based")
    assert line.endswith(str(out / "manifest.rejected.jsonl"))


def test_empty_pool_fails_without_a_marker_so_the_next_run_retries(tmp_path, builds):
    pool, root = _pool(tmp_path, n=3, missing=(0, 1, 2))
    cfg = DataConfig(pool_json=str(pool), image_root=str(root))
    pool_rec = prepare_pool.fn(data=cfg, fingerprint=pool_fingerprint(cfg), out_dir=str(tmp_path / "data"))
    out = tmp_path / "manifest"
    for _ in range(2):
        with pytest.raises(EmptyPoolError, match="MissingImageError 3"):
            manifest_stage.fn(pool=pool_rec, mode="skip", allow_duplicate_ids=False, out_dir=str(out))
    assert len(builds) == 2 and not (out / ".stage.json").exists() and not (out / "manifest.parquet").exists()


def test_synthetic_labels_travel_with_the_manifest(tmp_path):
    cfg = DataConfig(synthetic_n=50, synthetic_n_eval=0)
    pool_rec = prepare_pool.fn(data=cfg, fingerprint="synthetic", out_dir=str(tmp_path / "data"))
    rec = manifest_stage.fn(
        pool=pool_rec, mode="skip", allow_duplicate_ids=False, out_dir=str(tmp_path / "m"), images="x"
    )
    assert rec.rows["manifest"] == 50 and rec.meta["labels"] == pool_rec.files["labels"]
