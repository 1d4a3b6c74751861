import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flowkit import png_bytes

from progress_core.data.manifest import (
    MANIFEST_SCHEMA,
    DuplicateIdError,
    MalformedJSONError,
    ManifestError,
    ManifestFileError,
    MissingConversationsError,
    MissingImageError,
    TurnOrderError,
    build_manifest,
    export_llava,
    iter_json_array,
    manifest_rows_to_llava,
    read_manifest,
    rejected_path_for,
)
from progress_core.errors import ProgressError


def _turns(*values):
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]


HAND_POOL = [
    {
        "id": "000000033471",
        "image": "coco/train2017/000000033471.jpg",
        "conversations": _turns(
            "<image>\nWhat colour is the bus?", "White and red.", "Where is it going?", "Downtown."
        ),
    },
    {"id": "i6IyJda_0", "model": "", "conversations": _turns("Write a haiku about snow.", "Soft white hush...")},
    {"id": "text-2", "conversations": _turns("What is 2 plus 3?", "5"), "model": "gpt-4", "lang": "en"},
    {"id": 1234, "image": "gqa/images/2354786.jpg", "conversations": _turns("Is the sky blue?\n<image>", "Yes")},
    {"conversations": _turns("<image>\nRead the text.", "STOP"), "image": "ocr_vqa/images/1.jpg", "id": "ocr-1"},
    {
        "id": "vg-1",
        "image": "vg/VG_100K/1.jpg",
        "conversations": _turns("<image> Describe ünïcödé 日本", "≈ ok"),
        "meta": {"nested": [1, 2.5, None, True]},
    },
    {"id": "none-image", "image": None, "conversations": _turns("Hi", "Hello")},
    {"id": "bare", "image": "bare.png", "conversations": _turns("<image>", "")},
    {
        "id": "textvqa-1",
        "image": "textvqa/train_images/a.jpg",
        "conversations": _turns("<image>\nq1", "a1", "q2", "a2", "q3", "a3"),
    },
]


def _write_images(root, rows):
    for r in rows:
        if r.get("image"):
            p = root / r["image"]
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(png_bytes(len(str(p))))


def _write_pool(path, rows, indent=None):
    path.write_text(json.dumps(rows, indent=indent), encoding="utf-8")
    return path


@pytest.mark.parametrize("batch_rows", [50_000, 2])
def test_round_trip_hand_pool_equal_with_key_order(tmp_path, batch_rows):
    pool = _write_pool(tmp_path / "pool.json", HAND_POOL, indent=2)
    images = tmp_path / "images"
    _write_images(images, HAND_POOL)
    report = build_manifest(pool, tmp_path / "m.parquet", image_root=images, batch_rows=batch_rows)
    assert report.n_rows == report.n_input_rows == len(HAND_POOL)
    assert report.n_text_only == 3
    table = read_manifest(tmp_path / "m.parquet")
    assert table.schema.equals(MANIFEST_SCHEMA, check_metadata=False)

    rows = manifest_rows_to_llava(table)
    assert rows == HAND_POOL
    assert [list(r) for r in rows] == [list(r) for r in HAND_POOL]

    export_llava(table, tmp_path / "out.json", batch_rows=4)
    back = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert back == HAND_POOL
    assert [list(r) for r in back] == [list(r) for r in HAND_POOL]
    assert isinstance(back[3]["id"], int)
    assert (tmp_path / "out.json").read_text(encoding="utf-8") == json.dumps(HAND_POOL, ensure_ascii=False)


def test_export_streams_from_manifest_path_with_extra_fields(tmp_path):
    pool = _write_pool(tmp_path / "pool.json", HAND_POOL)
    build_manifest(pool, tmp_path / "m.parquet", batch_rows=4)
    index = list(range(100, 100 + len(HAND_POOL)))
    export_llava(tmp_path / "m.parquet", tmp_path / "out.json", {"index": index}, batch_rows=3)
    expected = [dict(r, index=i) for r, i in zip(HAND_POOL, index)]
    assert (tmp_path / "out.json").read_text(encoding="utf-8") == json.dumps(expected, ensure_ascii=False)
    with pytest.raises(ManifestError, match="values for"):
        export_llava(tmp_path / "m.parquet", tmp_path / "bad.json", {"index": index[:-1]})
    assert not (tmp_path / "bad.json").exists()


def test_manifest_columns_derived_from_rows(tmp_path):
    pool = _write_pool(tmp_path / "pool.json", HAND_POOL)
    build_manifest(pool, tmp_path / "m.parquet")
    t = read_manifest(tmp_path / "m.parquet").to_pydict()
    assert t["sample_id"] == list(range(len(HAND_POOL)))
    assert t["id"][:4] == ["000000033471", "i6IyJda_0", "text-2", "1234"]
    assert t["source"] == ["coco", "text", "text", "gqa", "ocr_vqa", "vg", "text", "image", "textvqa"]
    assert t["question"][0] == "What colour is the bus?"
    assert t["question"][3] == "Is the sky blue?"
    assert t["question"][7] == ""
    assert t["answer"][0] == "White and red."
    assert t["n_turns"] == [4, 2, 2, 2, 2, 2, 2, 2, 6]
    assert t["image"][1] is None and t["image"][6] is None
    assert json.loads(t["extra"][2]) == {"model": "gpt-4", "lang": "en"}
    assert t["extra"][0] is None
    assert json.loads(t["conversations"][0]) == HAND_POOL[0]["conversations"]
    assert t["layout"][0] is None and t["layout"][2] is None
    assert json.loads(t["layout"][3]) == {"id": 1234}


def test_extra_fields_appended_in_order(tmp_path):
    pool = _write_pool(tmp_path / "pool.json", HAND_POOL[:3])
    build_manifest(pool, tmp_path / "m.parquet")
    table = read_manifest(tmp_path / "m.parquet")
    import numpy as np

    rows = manifest_rows_to_llava(table, {"cluster_id": np.array([7, 8, 9]), "index": [0, 1, 2]})
    assert [r["cluster_id"] for r in rows] == [7, 8, 9]
    assert type(rows[0]["cluster_id"]) is int
    assert list(rows[1]) == ["id", "model", "conversations", "cluster_id", "index"]
    export_llava(table.slice(1, 2), tmp_path / "sub.json", {"index": [1, 2]})
    sub = json.loads((tmp_path / "sub.json").read_text())
    assert sub == [dict(HAND_POOL[1], index=1), dict(HAND_POOL[2], index=2)]
    with pytest.raises(ManifestError, match="2 values for 3 rows"):
        manifest_rows_to_llava(table, {"index": [0, 1]})


@pytest.mark.parametrize("chunk", [1, 3, 17, 1 << 20])
def test_streaming_parser_equals_json_load_at_any_chunk_size(tmp_path, chunk):
    pool = _write_pool(tmp_path / "pool.json", HAND_POOL + [5, "str", [1], None, 12345], indent=1)
    got = [v for _, v in iter_json_array(pool, chunk_bytes=chunk)]
    assert got == json.loads(pool.read_text(encoding="utf-8"))


def test_empty_pool(tmp_path):
    pool = tmp_path / "pool.json"
    pool.write_text(" [ ] \n")
    report = build_manifest(pool, tmp_path / "m.parquet")
    assert report.n_rows == 0
    assert read_manifest(tmp_path / "m.parquet").num_rows == 0


GOOD = {"id": "g", "image": "coco/a.jpg", "conversations": _turns("<image>\nq", "a")}

BAD_ROWS = [
    (MalformedJSONError, 42, "not an object"),
    (MalformedJSONError, {"image": "coco/a.jpg", "conversations": _turns("q", "a")}, "no 'id'"),
    (MissingConversationsError, {"id": "x", "image": "coco/a.jpg"}, "no 'conversations'"),
    (MissingConversationsError, {"id": "x", "conversations": []}, "empty"),
    (
        TurnOrderError,
        {"id": "x", "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]},
        "expected 'human'",
    ),
    (
        TurnOrderError,
        {"id": "x", "conversations": _turns("q", "a", "q2")[:2] + [{"from": "gpt", "value": "b"}]},
        "turn 2",
    ),
    (
        TurnOrderError,
        {"id": "x", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "a"}]},
        "string 'value'",
    ),
    (TurnOrderError, {"id": "x", "conversations": _turns("q")}, "no gpt answer"),
    (DuplicateIdError, {"id": "g", "conversations": _turns("q", "a")}, "row 0"),
    (MissingImageError, {"id": "x", "image": "coco/missing.jpg", "conversations": _turns("q", "a")}, "not found"),
    (MissingImageError, {"id": "x", "image": "../coco/a.jpg", "conversations": _turns("q", "a")}, "not a path under"),
]


@pytest.mark.parametrize("error, bad, reason", BAD_ROWS, ids=lambda x: getattr(x, "__name__", None))
def test_strict_mode_raises_named_error_with_row_index(tmp_path, error, bad, reason):
    rows = [GOOD, dict(GOOD, id="h"), bad, dict(GOOD, id="i")]
    pool = _write_pool(tmp_path / "pool.json", rows)
    images = tmp_path / "images"
    _write_images(images, [GOOD])
    with pytest.raises(error, match=reason) as info:
        build_manifest(pool, tmp_path / "m.parquet", image_root=images)
    assert info.value.row == 2
    assert "row 2 (0-based)" in str(info.value)
    assert isinstance(info.value, ProgressError)
    assert not (tmp_path / "m.parquet").exists()
    assert list(tmp_path.glob("*.tmp")) == []


def test_skip_mode_counts_and_writes_every_bad_row(tmp_path):
    rows = [GOOD]
    expected = []
    for error, bad, _ in BAD_ROWS:
        expected.append((len(rows), error.__name__))
        rows.append(bad)
        rows.append(dict(GOOD, id=f"ok{len(rows)}"))
    pool = _write_pool(tmp_path / "pool.json", rows)
    images = tmp_path / "images"
    _write_images(images, [GOOD])
    report = build_manifest(pool, tmp_path / "m.parquet", image_root=images, mode="skip")
    assert report.n_input_rows == len(rows)
    assert report.n_rejected == len(BAD_ROWS)
    assert report.n_rows == len(rows) - len(BAD_ROWS)
    assert report.rejected_by_error == {
        "MalformedJSONError": 2,
        "MissingConversationsError": 2,
        "TurnOrderError": 4,
        "DuplicateIdError": 1,
        "MissingImageError": 2,
    }
    table = read_manifest(tmp_path / "m.parquet")
    assert table.column("sample_id").to_pylist() == list(range(report.n_rows))
    kept = manifest_rows_to_llava(table)
    bad_rows = {i for i, _ in expected}
    assert kept == [r for i, r in enumerate(rows) if i not in bad_rows]

    rejected_file = rejected_path_for(tmp_path / "m.parquet")
    assert report.rejected_path == str(rejected_file) == str(tmp_path / "m.rejected.jsonl")
    records = [json.loads(line) for line in rejected_file.read_text(encoding="utf-8").splitlines()]
    assert [(r["row"], r["error"]) for r in records] == expected
    assert all(r["reason"] for r in records)
    assert records[0]["raw"] == 42
    assert records[-1]["raw"] == rows[expected[-1][0]]
    assert records[2]["id"] == "x"


def test_skip_mode_without_bad_rows_writes_empty_rejected_file(tmp_path):
    pool = _write_pool(tmp_path / "pool.json", [GOOD])
    report = build_manifest(pool, tmp_path / "m.parquet", mode="skip")
    assert report.n_rejected == 0
    assert (tmp_path / "m.rejected.jsonl").read_text() == ""


def test_duplicate_ids_allowed_when_asked(tmp_path):
    pool = _write_pool(tmp_path / "pool.json", [GOOD, GOOD])
    report = build_manifest(pool, tmp_path / "m.parquet", allow_duplicate_ids=True)
    assert report.n_rows == 2
    assert manifest_rows_to_llava(read_manifest(tmp_path / "m.parquet")) == [GOOD, GOOD]


def test_images_not_checked_without_image_root(tmp_path):
    pool = _write_pool(tmp_path / "pool.json", [dict(GOOD, image="coco/nowhere.jpg")])
    assert build_manifest(pool, tmp_path / "m.parquet").n_rows == 1


@pytest.mark.parametrize("mode", ["strict", "skip"])
@pytest.mark.parametrize(
    "text, row, reason",
    [
        ('[ROW, ROW, {"id": "b", "conv', 2, "invalid JSON"),
        ("[ROW ROW]", 0, "expected ',' or ']'"),
        ('[ROW, {"id": nope}]', 1, "invalid JSON"),
        ("[ROW, ROW", 1, "found end of file"),
        ("ROW", None, "JSON list"),
        ("[ROW] [", None, "extra data"),
    ],
)
def test_syntax_errors_are_fatal_in_both_modes(tmp_path, mode, text, row, reason):
    pool = tmp_path / "pool.json"
    pool.write_text(text.replace("ROW", json.dumps({"id": "a", "conversations": _turns("q", "a")})))
    with pytest.raises(MalformedJSONError, match=reason) as info:
        build_manifest(pool, tmp_path / "m.parquet", mode=mode, allow_duplicate_ids=True)
    assert info.value.row == row
    assert not (tmp_path / "m.parquet").exists()
    assert not (tmp_path / "m.rejected.jsonl").exists()


def test_missing_inputs_and_non_manifest_are_named_errors(tmp_path):
    with pytest.raises(ManifestFileError, match="not found"):
        build_manifest(tmp_path / "nope.json", tmp_path / "m.parquet")
    pool = _write_pool(tmp_path / "pool.json", [GOOD])
    with pytest.raises(ManifestFileError, match="not a directory"):
        build_manifest(pool, tmp_path / "m.parquet", image_root=tmp_path / "no_images")
    with pytest.raises(ManifestError, match="mode"):
        build_manifest(pool, tmp_path / "m.parquet", mode="lenient")
    with pytest.raises(ManifestFileError, match="not found"):
        read_manifest(tmp_path / "nope.parquet")
    pq.write_table(pa.table({"sample_id": [0]}), tmp_path / "other.parquet")
    with pytest.raises(ManifestFileError, match="missing columns"):
        read_manifest(tmp_path / "other.parquet")
    (tmp_path / "junk.parquet").write_text("junk")
    with pytest.raises(ManifestFileError, match="not a Parquet file"):
        read_manifest(tmp_path / "junk.parquet")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_truncated_image_is_a_named_skip_with_its_pool_row_and_id(tmp_path, fmt):
    import io

    from PIL import Image

    from progress_core.data.manifest import UnreadableImageError

    rows = [{"id": f"r{i}", "image": f"{i}.img", "conversations": _turns("q", "a")} for i in range(6)]
    for i in range(6):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (i * 40, 10, 20)).save(buf, format=fmt)
        data = buf.getvalue()
        (tmp_path / f"{i}.img").write_bytes(data[: len(data) // 2] if i == 4 else data)
    pool = _write_pool(tmp_path / "pool.json", rows)
    report = build_manifest(pool, tmp_path / "m.parquet", image_root=tmp_path, mode="skip")
    assert report.n_rows == 5 and report.rejected_by_error == {"UnreadableImageError": 1}
    kept = pq.read_table(tmp_path / "m.parquet").column("id").to_pylist()
    assert kept == ["r0", "r1", "r2", "r3", "r5"]
    rejected = [json.loads(line) for line in open(rejected_path_for(tmp_path / "m.parquet"))]
    assert [(r["row"], r["id"], r["error"]) for r in rejected] == [(4, "r4", "UnreadableImageError")]
    with pytest.raises(UnreadableImageError, match=r"row 4 \(0-based\) \(id 'r4'\).*cannot be read"):
        build_manifest(pool, tmp_path / "strict.parquet", image_root=tmp_path, mode="strict")
