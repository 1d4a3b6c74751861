import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from progress_core.data.manifest import build_manifest, export_llava, read_manifest
from progress_core.data.scenes import DIVIDER, PALETTE, START_CELL, grid_cell_box
from progress_core.data.statistics import pool_statistics
from progress_core.data.synthetic import FAMILIES, MOVES, generate_pool, walk
from progress_core.errors import ConfigError
from progress_core.io import file_hash

N, N_EVAL = 450, 90


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return generate_pool(tmp_path_factory.mktemp("synth") / "pool", n=N, n_eval=N_EVAL, seed=3)


@pytest.fixture(scope="module")
def samples(pool):
    rows = json.loads(pool.pool_json.read_text()) + json.loads(pool.eval_json.read_text())
    labels = pd.read_parquet(pool.labels_path).set_index("id")
    return [(r, labels.loc[r["id"]]) for r in rows]


def _pixels(pool, row):
    return np.asarray(Image.open(pool.image_root / row["image"]).convert("RGB"))


def _colour_name(rgb):
    for name, value in PALETTE.items():
        if tuple(int(v) for v in rgb) == value:
            return name
    raise AssertionError(f"{tuple(rgb)} is not a palette colour")


def _foreground(px):
    return np.any(px != px[0, 0], axis=-1)


def _by_family(samples, family):
    chosen = [(r, lab) for r, lab in samples if lab["family"] == family]
    assert len(chosen) >= 15, family
    return chosen


def test_files_sizes_and_label_schema(pool, samples):
    rows = json.loads(pool.pool_json.read_text())
    assert len(rows) == N and len(json.loads(pool.eval_json.read_text())) == N_EVAL
    labels = pd.read_parquet(pool.labels_path)
    assert list(labels.columns) == ["id", "split", "concept", "family", "difficulty"]
    assert labels["id"].is_unique and len(labels) == N + N_EVAL
    assert set(labels["split"]) == {"pool", "eval"}
    assert set(labels["family"]) == set(FAMILIES) | {"text"}
    assert set(labels["difficulty"]) == {"simple", "hard", "-"}
    for family in ("position", "table", "navigation", "analogy"):
        sub = labels[labels["family"] == family]
        assert set(sub["concept"]) == {f"{family}_simple", f"{family}_hard"}
    text = [r for r in rows if "image" not in r]
    assert 0.02 * N <= len(text) <= 0.04 * N
    assert any(len(r["conversations"]) > 2 for r in rows)
    for r in rows:
        if "image" in r:
            assert r["image"].split("/")[0] == labels.set_index("id").loc[r["id"], "family"]
            assert r["conversations"][0]["value"].startswith("<image>\n")
            assert Image.open(pool.image_root / r["image"]).size == (32, 32)


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    a = generate_pool(tmp_path / "a", n=120, n_eval=20, seed=5)
    b = generate_pool(tmp_path / "b", n=120, n_eval=20, seed=5)
    c = generate_pool(tmp_path / "c", n=120, n_eval=20, seed=6)
    assert file_hash(tmp_path / "a") == file_hash(tmp_path / "b")
    assert a.pool_json.read_bytes() == b.pool_json.read_bytes()
    assert a.pool_json.read_bytes() != c.pool_json.read_bytes()
    assert file_hash(a.image_root) != file_hash(c.image_root)


def test_whole_image_colour_from_pixels(pool, samples):
    for row, _ in _by_family(samples, "colour"):
        px = _pixels(pool, row)
        assert (px == PALETTE[row["conversations"][1]["value"]]).all()


def test_object_colour_from_pixels(pool, samples):
    for row, _ in _by_family(samples, "object_colour"):
        px = _pixels(pool, row)
        colours = {_colour_name(c) for c in px[_foreground(px)]}
        assert colours == {row["conversations"][1]["value"]}


def test_count_from_connected_blobs(pool, samples):
    seen = set()
    for row, _ in _by_family(samples, "count"):
        _, n_blobs = ndimage.label(_foreground(_pixels(pool, row)))
        assert str(n_blobs) == row["conversations"][1]["value"]
        seen.add(n_blobs)
    assert seen == {1, 2, 3, 4}


def test_position_from_centroid(pool, samples):
    for row, lab in _by_family(samples, "position"):
        ys, xs = np.nonzero(_foreground(_pixels(pool, row)))
        side = "left" if xs.mean() < 16 else "right"
        top = "top" if ys.mean() < 16 else "bottom"
        expected = side if lab["difficulty"] == "simple" else f"{top} {side}"
        assert row["conversations"][1]["value"] == expected


def _shape_from_mask(mask):
    ys, xs = np.nonzero(mask)
    box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    fill = box.mean()
    if fill > 0.95:
        return "square"
    if fill > 0.7:
        return "circle"
    return "triangle" if box[-1].all() else "diamond"


def test_shape_from_pixels(pool, samples):
    for row, _ in _by_family(samples, "shape"):
        assert _shape_from_mask(_foreground(_pixels(pool, row))) == row["conversations"][1]["value"]


def _cell_colour(px, r, c, cells):
    (y0, y1), (x0, x1) = grid_cell_box(r, cells), grid_cell_box(c, cells)
    return tuple(int(v) for v in px[(y0 + y1) // 2, (x0 + x1) // 2])


def test_table_readout_from_pixels(pool, samples):
    for row, lab in _by_family(samples, "table"):
        px = _pixels(pool, row)
        q, answer = row["conversations"][0]["value"], row["conversations"][1]["value"]
        numbers = [int(v) - 1 for v in re.findall(r"\d+", q)]
        if lab["difficulty"] == "simple":
            r, c = numbers
            assert _colour_name(_cell_colour(px, r, c, 2)) == answer
        else:
            line, first, last = numbers
            along_row = q.find("row") < q.find("column")
            cells = [(line, k) if along_row else (k, line) for k in range(first, last + 1)]
            assert " ".join(_colour_name(_cell_colour(px, r, c, 3)) for r, c in cells) == answer


def test_navigation_from_pixels(pool, samples):
    for row, _ in _by_family(samples, "navigation"):
        px = _pixels(pool, row)
        q, answer = row["conversations"][0]["value"], row["conversations"][1]["value"]
        start = [(r, c) for r in range(3) for c in range(3) if _cell_colour(px, r, c, 3) == START_CELL]
        assert len(start) == 1
        moves = re.findall("|".join(MOVES), q)
        end = walk(start[0], moves)
        assert end != start[0] and all(0 <= v < 3 for v in end)
        assert _colour_name(_cell_colour(px, *end, 3)) == answer


def test_analogy_from_pixels(pool, samples):
    for row, lab in _by_family(samples, "analogy"):
        px = _pixels(pool, row)
        answer = row["conversations"][1]["value"]
        assert len(answer.split(" and ")) == (2 if lab["difficulty"] == "hard" else 1)
        panels = []
        for half in (px[:, :15], px[:, 17:]):
            mask = np.any(half != (255, 255, 255), axis=-1) & np.any(half != DIVIDER, axis=-1)
            ys, xs = np.nonzero(mask)
            panels.append(({_colour_name(c) for c in half[mask]}, xs.max() - xs.min(), _shape_from_mask(mask)))
        assert (panels[0][0] != panels[1][0]) == ("colour" in answer)
        assert (panels[0][1] != panels[1][1]) == ("size" in answer)
        if "size" not in answer:
            assert (panels[0][2] != panels[1][2]) == ("shape" in answer)


def test_random_answers_come_from_a_small_fixed_set(samples):
    answers = [r["conversations"][1]["value"] for r, lab in samples if lab["family"] == "random"]
    assert 3 <= len(set(answers)) <= 5


def test_text_rows_are_right_arithmetic(samples):
    text_rows = [r for r, lab in samples if lab["family"] == "text"]
    assert len(text_rows) >= 10
    for row in text_rows:
        q = row["conversations"][0]["value"]
        a, b = (int(v) for v in re.findall(r"\d+", q))
        expected = a + b if ("plus" in q or "Add" in q) else a * b
        assert row["conversations"][1]["value"] == str(expected)
        assert "image" not in row


def test_round_trip_through_manifest_with_image_check(pool, tmp_path):
    report = build_manifest(pool.pool_json, tmp_path / "m.parquet", image_root=pool.image_root)
    assert report.n_rows == N and report.n_rejected == 0
    table = read_manifest(tmp_path / "m.parquet")
    assert set(table.column("source").to_pylist()) == set(FAMILIES) | {"text"}
    export_llava(table, tmp_path / "back.json")
    assert json.loads((tmp_path / "back.json").read_text()) == json.loads(pool.pool_json.read_text())


def test_pool_statistics_per_concept(pool, tmp_path):
    build_manifest(pool.pool_json, tmp_path / "m.parquet")
    stats = pool_statistics(tmp_path / "m.parquet", pool.labels_path)
    same = pool_statistics(pool.pool_json, pool.labels_path)
    pd.testing.assert_frame_equal(stats, same)
    assert stats["n"].sum() == N
    assert stats.loc["colour", "answer_vocab"] == len(PALETTE)
    assert stats.loc["position_simple", "answer_vocab"] == 2
    assert stats.loc["count", "answer_vocab"] == 4
    labels = pd.read_parquet(pool.labels_path)
    pool_labels = labels[labels["split"] == "pool"]
    assert stats.loc["count", "n"] == (pool_labels["concept"] == "count").sum()
    assert 0 < stats.loc["random", "majority_rate"] < 0.5
    assert abs(stats["share"].sum() - 1) < 1e-9


def test_bad_sizes_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="n"):
        generate_pool(tmp_path, n=0)
    with pytest.raises(ConfigError, match="text_fraction"):
        generate_pool(tmp_path, n=10, text_fraction=2)
