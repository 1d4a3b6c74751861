"""Feature shards on a real Dask cluster (prefect-dask): byte-identical to the thread runner on a
LocalCluster, and on a scheduler and workers started as separate processes (as a user's cluster is) a worker
killed mid-stage costs only its own shards on the re-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flowkit import REPO, env_for, write_config

pytestmark = pytest.mark.slow

SCRIPT = REPO / "tests" / "featureflow.py"


def config(run_dir: Path, **orchestration) -> dict:
    return {
        "run_dir": str(run_dir),
        "data": {"synthetic_n": 300, "synthetic_n_eval": 0},
        "shard_size": 25,
        "orchestration": orchestration or {"task_runner": "threads"},
    }


def start(cfg: dict, tmp: Path, name: str, env: dict) -> subprocess.Popen:
    path = write_config(cfg, tmp / f"{name}.yaml")
    log = open(tmp / f"{name}.log", "w")
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(path)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )


def markers(run_dir: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (run_dir / "features" / "shards").glob("*/.stage.json")}


@pytest.fixture(scope="module")
def env(prefect_api):
    api_url, home = prefect_api
    e = env_for(api_url, home)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO), e.get("PYTHONPATH", "")])
    e["OMP_NUM_THREADS"] = "1"
    return e


@pytest.fixture(scope="module")
def sequential(env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("threads")
    proc = start(config(tmp / "run"), tmp, "threads", env)
    assert proc.wait(timeout=600) == 0, (tmp / "threads.log").read_text()[-3000:]
    return tmp / "run" / "features" / "features.npy"


def test_local_cluster_of_two_processes_gives_identical_features(env, sequential, tmp_path):
    cfg = config(tmp_path / "run", task_runner="dask", n_workers=2, threads_per_worker=1)
    proc = start(cfg, tmp_path, "dask", env)
    assert proc.wait(timeout=600) == 0, (tmp_path / "dask.log").read_text()[-3000:]
    assert (tmp_path / "run" / "features" / "features.npy").read_bytes() == sequential.read_bytes()
    assert len(markers(tmp_path / "run")) == 12


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SeparateCluster:
    """A scheduler and workers started as their own processes with the ``dask`` command, as on a user's
    cluster (docs: README "Scaling out"); workers run without a nanny, so a killed one stays dead."""

    def __init__(self, env: dict, log_dir: Path):
        self.env = {**env, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
        self.log_dir = log_dir
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        self.dask = str(Path(sys.executable).with_name("dask"))
        port = self.address.rsplit(":", 1)[1]
        self.scheduler = self._spawn("scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard")
        self.workers: list[subprocess.Popen] = []

    def _spawn(self, *args: str) -> subprocess.Popen:
        log = open(self.log_dir / f"dask-{args[0]}-{len(list(self.log_dir.glob('dask-*')))}.log", "w")
        return subprocess.Popen([self.dask, *args], env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def add_worker(self) -> subprocess.Popen:
        worker = self._spawn("worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard")
        self.workers.append(worker)
        return worker

    def wait_for(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(n, timeout=120)

    def close(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def test_killed_worker_of_a_separate_cluster_costs_only_its_shards(env, sequential, tmp_path):
    run = tmp_path / "run"
    cluster = SeparateCluster(env, tmp_path)
    try:
        first_worker = cluster.add_worker()
        cluster.add_worker()
        cluster.wait_for(2)
        cfg = config(run, task_runner="dask", address=cluster.address)
        proc = start(cfg, tmp_path, "first", env)
        deadline = time.monotonic() + 600
        while not markers(run) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0 < len(markers(run)) < 12, "the kill must land mid-stage"
        os.kill(first_worker.pid, signal.SIGKILL)
        assert proc.wait(timeout=600) != 0, "the shard on the killed worker fails the run"
        done = markers(run)
        assert 0 < len(done) < 12
        cluster.add_worker()
        cluster.wait_for(2)
        proc = start(cfg, tmp_path, "second", env)
        assert proc.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        cluster.close()
    after = markers(run)
    assert len(after) == 12
    assert {k: after[k] for k in done} == done, "committed shards are not recomputed"
    assert all(after[k] != done.get(k) for k in set(after) - set(done))
    assert (run / "features" / "features.npy").read_bytes() == sequential.read_bytes()


def test_flow_imports_features_instead_of_extracting(env, sequential, tmp_path):
    import numpy as np

    cfg = config(tmp_path / "run")
    cfg["features"] = {"import_features": str(sequential)}
    proc = start(cfg, tmp_path, "import", env)
    assert proc.wait(timeout=600) == 0, (tmp_path / "import.log").read_text()[-3000:]
    assert not (tmp_path / "run" / "features" / "shards").exists()
    got, want = np.load(tmp_path / "run" / "features" / "features.npy"), np.load(sequential)
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), atol=2e-3)
