"""Every way to start a run refuses a run directory another live run holds: the CLI (at once, before any
Prefect server starts), the selection flow itself (so UI deployments), each of ``compare``'s sub-runs and the comparison's base directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from progress_core.run.lock import LOCK_FILE, RunDirLockedError
from tests.faultkit import tiny_config
from tests.test_run_lock import HOLD

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def hold(tmp_path):
    """``hold(path)`` keeps ``path`` locked by another process until the test ends; returns that process."""
    procs = []

    def start(path: Path) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=30)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    return subprocess.run(
        [sys.executable, "-m", "progress_cli", *args], cwd=REPO, env=env, capture_output=True, text=True
    )


@pytest.mark.parametrize("command", ["run", "demo"])
def test_cli_refuses_a_held_run_dir_with_one_line(tmp_path, hold, command):
    run = tmp_path / "run"
    holder = hold(run)
    if command == "run":
        config = tmp_path / "run.yaml"
        config.write_text(yaml.safe_dump(tiny_config(run).model_dump(mode="json")))
        done = _cli("run", "--config", str(config))
    else:
        done = _cli("demo", "--out", str(run))
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1, done.stderr
    assert len(errors) == 1 and f"pid {holder.pid}" in errors[0] and "in use by another run" in errors[0]
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]


@pytest.fixture
def api(prefect_api):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_api[0]}):
        yield


def test_selection_flow_refuses_a_held_run_dir(tmp_path, hold, api):
    from flows.progress_selection import progress_selection

    run = tmp_path / "run"
    holder = hold(run)
    with pytest.raises(RunDirLockedError, match=f"pid {holder.pid}"):
        progress_selection(config=tiny_config(run))
    assert not (run / "config.json").exists()


def test_ui_entry_flow_refuses_a_held_run_dir(tmp_path, hold, api):
    from flows.entry import run_selection

    run = tmp_path / "run"
    holder = hold(run)
    with pytest.raises(RunDirLockedError, match=f"pid {holder.pid}"):
        run_selection(preset="demo", run_dir=str(run))


def test_each_compare_sub_run_holds_its_run_dir(tmp_path, hold, api):
    from flows.compare_strategies import compare_strategies, run_config

    cfg = tiny_config(tmp_path / "compare", **{"data.synthetic_n_eval": 16})
    base = (tmp_path / "compare").resolve()
    sub = run_config(cfg, base, base / "shared", "random", cfg.schedule.budget_fraction, cfg.seed)
    holder = hold(Path(sub.run_dir))
    with pytest.raises(RunDirLockedError, match=f"pid {holder.pid}"):
        compare_strategies(config=cfg, strategies=["random"], seeds=[cfg.seed])
    assert not (Path(sub.run_dir) / "config.json").exists()


def test_a_second_comparison_on_the_same_base_directory_is_refused(tmp_path, hold, api):
    """Two comparisons on one base directory would both write its shared warm-up and ``comparison.parquet``."""
    from flows.compare_strategies import compare_strategies

    cfg = tiny_config(tmp_path / "compare", **{"data.synthetic_n_eval": 16})
    holder = hold(tmp_path / "compare")
    with pytest.raises(RunDirLockedError, match=f"pid {holder.pid}"):
        compare_strategies(config=cfg, strategies=["random"], seeds=[cfg.seed])
    assert sorted(p.name for p in (tmp_path / "compare").iterdir()) == [LOCK_FILE], "nothing written"
