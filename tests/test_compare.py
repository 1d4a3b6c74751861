"""progress compare: equal budgets, trained samples and steps across strategies; adding a seed reuses the runs
that exist; comparison tables and a report whose plots exist."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import pandas as pd
import pytest
from flowkit import REPO, env_for, small_config, write_config
from PIL import Image

from flows.compare_strategies import RESULT_FILE, check_strategies, compare_strategies, config_digest, run_config
from progress_core.errors import ConfigError
from progress_core.run.config import RunConfig
from progress_core.run.validation import check_run


def test_a_seed_sets_init_order_selection_and_probe(tmp_path):
    base = RunConfig.model_validate(small_config(tmp_path / "cmp"))
    a = run_config(base, tmp_path, tmp_path / "shared", "progress", 0.3, 1)
    b = run_config(base, tmp_path, tmp_path / "shared", "progress", 0.3, 2, ("selection.temperature", 1.0))
    assert (a.seed, a.training.seed, a.training.model.init_seed) == (1, 1, 1)
    assert (b.seed, b.training.seed, b.training.model.init_seed) == (2, 2, 2)
    assert a.schedule.budget_fraction == 0.3 and a.schedule.final_step is None
    assert b.selection.temperature == 1.0 and a.selection.temperature == 0.5
    assert a.run_dir.endswith("b0.3/progress/seed1") and "progress[temperature=1.0]" in b.run_dir
    assert config_digest(a) != config_digest(b) and config_digest(a) == config_digest(a.model_copy())


def test_settings_that_change_how_a_run_goes_not_what_it_writes_keep_finished_runs(tmp_path):
    base = RunConfig.model_validate(small_config(tmp_path / "cmp"))
    a = run_config(base, tmp_path, tmp_path / "shared", "random", 0.3, 1)
    workers = a.model_copy(update={"training": a.training.model_copy(update={"data_workers": 3})})
    assert config_digest(workers) == config_digest(a), "training.data_workers enters no stage key"
    assert config_digest(a) == hashlib.sha256(a.model_dump_json().encode()).hexdigest()[:16], "earlier digests hold"
    reseeded = a.model_copy(update={"training": a.training.model_copy(update={"seed": 7})})
    assert config_digest(reseeded) != config_digest(a)


def test_oracle_runs_on_bundled_pools_and_is_refused_in_one_line_on_a_users_pool(tmp_path):
    bundled = RunConfig.model_validate(small_config(tmp_path / "cmp", **{"data.headroom": "default"}))
    check_strategies(["oracle", "random"], bundled)
    assert not check_run(run_config(bundled, tmp_path, tmp_path / "s", "oracle", 0.3, 0), check_disk=False)
    (tmp_path / "pool.json").write_text("[]")
    users = RunConfig.model_validate(small_config(tmp_path / "cmp", **{"data.pool_json": str(tmp_path / "pool.json")}))
    with pytest.raises(ConfigError) as err:
        compare_strategies.fn(config=users, strategies=["random", "oracle"])
    assert len(str(err.value).splitlines()) == 1 and "'oracle' reads the pool's labels" in str(err.value)
    problems = check_run(run_config(users, tmp_path, tmp_path / "s", "oracle", 0.3, 0), count_rows=False)
    assert [p for p in problems if p.startswith("selection.strategy")] == [str(err.value)]
    with pytest.raises(ConfigError, match="unknown strategies"):
        check_strategies(["orcale"], bundled)


def _compare(config, api_url, home, *extra):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "progress_cli",
            "compare",
            "--config",
            str(config),
            "-s",
            "progress",
            "-s",
            "random",
            "--budgets",
            "0.35",
            "--no-full",
            *extra,
        ],
        cwd=REPO,
        env=env_for(api_url, home),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_equal_budgets_and_a_seed_added_reuses_the_others(prefect_api, tmp_path):
    api_url, home = prefect_api
    cfg = small_config(
        tmp_path / "cmp",
        **{
            "data.synthetic_n": 200,
            "data.synthetic_n_eval": 40,
            "warmup.fractions": [0.1, 0.2],
            "schedule.final_step": None,
            "selection.selection_num": 24,
        },
    )
    config = write_config(cfg, tmp_path / "cmp.yaml")
    _compare(config, api_url, home, "--seeds", "1")
    first = {p: p.stat().st_mtime_ns for p in (tmp_path / "cmp").glob(f"b0.35/*/seed0/{RESULT_FILE}")}
    assert len(first) == 2
    proc = _compare(config, api_url, home, "--seeds", "2")
    assert proc.stdout.count("±") >= 2
    for path, mtime in first.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"
    table = pd.read_parquet(tmp_path / "cmp" / "comparison.parquet")
    assert len(table) == 4 and set(table["seed"]) == {0, 1}
    assert table["n_selected"].nunique() == 1 and table["steps"].nunique() == 1, "equal selected and steps"
    for row in table.itertuples():
        summary = json.loads(
            (tmp_path / "cmp" / "b0.35" / row.strategy / f"seed{row.seed}" / "summary.json").read_text()
        )
        rounds = summary["rounds"]
        assert sum(r["new"] for r in rounds) == row.n_selected
        trained = sum(r["to_step"] - r["from_step"] for r in rounds)
        assert trained == row.steps, "every round trains from where the last stopped"
        for r in rounds[2:]:
            assert r["new"] == r["budget"], f"round {r['round']} under-spent its budget"
            assert (r["to_step"] - r["from_step"]) * 8 == r["new"], "selection budgets are whole batches"
        assert set(rounds[-1]["stage_seconds"]) == {"select", "train", "probe"}
    assert {"seconds_train", "seconds_probe", "seconds_evaluate", "accuracy"} <= set(table.columns)
    concepts = pd.read_parquet(tmp_path / "cmp" / "comparison_concepts.parquet")
    assert {"strategy", "budget", "seed", "concept", "accuracy"} <= set(concepts.columns)
    page = (tmp_path / "cmp" / "report.html").read_text()
    for src in re.findall(r'<img src="([^"]+)"', page):
        with Image.open(tmp_path / "cmp" / src) as im:
            im.verify()
    run_page = tmp_path / "cmp" / "b0.35" / "progress" / "seed0" / "report.html"
    assert run_page.is_file()
