"""Ctrl-C and SIGTERM during a stage of ``progress run``: one line naming the stage, exit 130 / 143, and the same
command resumes (a real subprocess, held inside a stage by ``PROGRESS_FAULT=...:wait``)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from progress_cli.interrupts import interrupted_stage
from tests.faultkit import tiny_config
from tests.flowkit import REPO, env_for

WAITING = "fault: waiting at train:start"


def _start(config: Path, api, log: Path, fault: str | None) -> subprocess.Popen:
    env = env_for(*api)
    env["PYTHONPATH"] = str(REPO)
    if fault:
        env["PROGRESS_FAULT"] = fault
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "progress_cli", "run", "--config", str(config)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_for(proc: subprocess.Popen, log: Path, text: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, f"run ended ({proc.returncode}) before {text!r}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


@pytest.mark.parametrize(("signum", "code", "rerun"), [(signal.SIGINT, 130, True), (signal.SIGTERM, 143, False)])
def test_signal_during_a_stage_fails_loudly_and_the_rerun_resumes(tmp_path, prefect_api, signum, code, rerun):
    """Both signals fail with their code and one line; the re-run after Ctrl-C completes the run (the resume
    path is the same whichever signal stopped it)."""
    run = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(run).model_dump(mode="json")))
    log = tmp_path / "interrupted.log"
    proc = _start(config, prefect_api, log, "train@1:start:wait")
    try:
        _wait_for(proc, log, WAITING)
        proc.send_signal(signum)
        assert proc.wait(timeout=120) == code, log.read_text()[-3000:]
    finally:
        proc.kill()
    errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert errors == ["error: interrupted during train[r=0]; re-run the same command to resume"]
    assert not (run / "summary.json").exists()
    if rerun:
        again = _start(config, prefect_api, tmp_path / "rerun.log", None)
        assert again.wait(timeout=400) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
        assert (run / "summary.json").is_file()


def test_ctrl_c_while_shards_run_in_threads_exits_at_once_naming_them(tmp_path, prefect_api):
    """Feature shards run in the flow's threads; a Ctrl-C there must not wait for a shard to finish (here it
    never would) and names the shard task runs, and the re-run goes on from the shards."""
    run = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(run).model_dump(mode="json")))
    log = tmp_path / "interrupted.log"
    proc = _start(config, prefect_api, log, "features_shard:start:wait")
    try:
        _wait_for(proc, log, "fault: waiting at features_shard:start")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130, log.read_text()[-3000:]
    finally:
        proc.kill()
    errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: interrupted during features["), errors
    assert errors[0].endswith("; re-run the same command to resume")


class SyncTaskRunEngine:
    def __init__(self, name: str):
        self.task_run = SimpleNamespace(name=name)

    def run(self, inner):
        inner()


class FlowRunEngine:
    def __init__(self, name: str):
        self.flow_run = SimpleNamespace(name=name)

    def run(self, inner):
        inner()


def _interrupt_in(*engines) -> BaseException:
    def innermost():
        raise KeyboardInterrupt

    call = innermost
    for engine in reversed(engines):
        call = (lambda e, c: lambda: e.run(c))(engine, call)
    try:
        call()
    except KeyboardInterrupt as exc:
        return exc
    raise AssertionError("no interrupt")


def test_the_stage_is_the_innermost_task_run_the_interrupt_went_through():
    exc = _interrupt_in(FlowRunEngine("quick-fox"), SyncTaskRunEngine("probe[r=3]"))
    assert interrupted_stage(exc) == "probe[r=3]"
    assert interrupted_stage(_interrupt_in(FlowRunEngine("quick-fox"))) == "flow run quick-fox (between stages)"
    assert interrupted_stage(_interrupt_in()) == "start-up (before the flow ran)"


def test_between_stages_names_the_task_runs_still_running_in_threads():
    started, release = threading.Event(), threading.Event()

    def shard():
        SyncTaskRunEngine("features[0000000096]").run(lambda: (started.set(), release.wait(30)))

    worker = threading.Thread(target=shard)
    worker.start()
    try:
        assert started.wait(30)
        exc = _interrupt_in(FlowRunEngine("quick-fox"))
        assert interrupted_stage(exc) == "features[0000000096]"
    finally:
        release.set()
        worker.join(30)
