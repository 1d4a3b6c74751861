import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from progress_core.data.headroom import HeadroomConfig, generate_headroom_pool, resolve_headroom
from progress_core.data.synthetic import FAMILIES, family_counts, generate_pool
from progress_core.errors import ConfigError
from progress_core.selection.oracle import oracle_concepts


def test_null_case_is_the_bundled_pool_byte_for_byte(tmp_path):
    ours = generate_headroom_pool(tmp_path / "h", n=60, n_eval=20, seed=3, headroom="none")
    bundled = generate_pool(tmp_path / "b", n=60, n_eval=20, seed=3)
    assert ours.pool_json.read_bytes() == bundled.pool_json.read_bytes()
    assert ours.eval_json.read_bytes() == bundled.eval_json.read_bytes()
    assert ours.n_known == 0 and json.loads(ours.known_json.read_text()) == []
    labels = pd.read_parquet(ours.labels_path)
    assert not labels["noisy"].any() and (labels["duplicate_of"] == "").all() and not labels["known"].any()


def test_family_counts_sum_to_n_and_follow_the_shares():
    counts = family_counts(1000, {"a": 158, "b": 9, "c": 40})
    assert sum(counts.values()) == 1000
    assert counts == {"a": 763, "b": 44, "c": 193}  # exact 763.3, 43.5, 193.2: the spare row to the largest remainder


@pytest.fixture(scope="module")
def headroom_pool(tmp_path_factory):
    out = tmp_path_factory.mktemp("headroom")
    pool = generate_headroom_pool(out, n=400, n_eval=90, seed=1, n_known=30)
    return pool, pd.read_parquet(pool.labels_path), json.loads(pool.pool_json.read_text())


def test_pool_is_skewed_and_evaluation_balanced_and_clean(headroom_pool):
    _, labels, _ = headroom_pool
    pool, held_out = labels[labels["split"] == "pool"], labels[labels["split"] == "eval"]
    shares = pool["family"].value_counts()
    assert shares["colour"] > 5 * shares["analogy"]
    image_counts = held_out[held_out["family"].isin(FAMILIES)]["family"].value_counts()
    assert image_counts.max() - image_counts.min() <= 1
    assert not held_out["noisy"].any() and (held_out["duplicate_of"] == "").all()


def test_near_duplicates_copy_a_row_on_a_jittered_image(headroom_pool):
    pool, labels, rows = headroom_pool
    by_id = {r["id"]: r for r in rows}
    dups = labels[(labels["split"] == "pool") & (labels["duplicate_of"] != "")]
    assert len(dups) == round(0.30 * 400)
    for _, lab in dups.head(10).iterrows():
        copy, source = by_id[lab["id"]], by_id[lab["duplicate_of"]]
        assert copy["conversations"][0] == source["conversations"][0]
        a = np.asarray(Image.open(pool.image_root / copy["image"]), dtype=np.int16)
        b = np.asarray(Image.open(pool.image_root / source["image"]), dtype=np.int16)
        assert 0 < np.abs(a - b).max() <= 8


def test_label_noise_only_in_noisy_families_and_known_split_only_known(headroom_pool):
    pool, labels, _ = headroom_pool
    noisy = labels[labels["noisy"]]
    assert 0.08 < len(noisy) / 400 < 0.22
    assert set(noisy["family"]) <= set(FAMILIES) - {"random"}
    known = labels[labels["split"] == "known"]
    assert len(known) == 30 and set(known["family"]) == {"colour"} and known["known"].all()


def test_oracle_concepts_mark_every_kind_of_waste(headroom_pool):
    _, labels, rows = headroom_pool
    codes = oracle_concepts(labels, [r["id"] for r in rows])
    pool = labels[labels["split"] == "pool"].set_index("id").loc[[r["id"] for r in rows]]
    waste = (pool["duplicate_of"] != "") | pool["noisy"] | pool["known"] | (pool["family"] == "random")
    assert ((codes < 0) == waste.to_numpy()).all()
    assert codes.max() >= 5


def test_bad_headroom_settings_are_one_clear_error():
    with pytest.raises(ConfigError, match="unknown families"):
        generate_headroom_pool("/nonexistent", n=10, headroom={"known_families": ["nope"]})
    with pytest.raises(ConfigError, match="near_duplicate_share"):
        resolve_headroom({"near_duplicate_share": 1.5})
    with pytest.raises(ConfigError, match="'none', 'default'"):
        resolve_headroom("lots")
    assert resolve_headroom("default") == HeadroomConfig()
