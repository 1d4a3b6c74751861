"""Ctrl-C and SIGTERM during a stage of ``progress run``: one line naming the stage, exit 130 / 143, and the same
command resumes (a real subprocess, held inside a stage by ``PROGRESS_FAULT=...:wait``)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from progress_cli.interrupts import interrupted_stage
from tests.faultkit import tiny_config
from tests.flowkit import run_cli

WAITING = "fault: waiting at train:start"


def _wait_for(proc: subprocess.Popen, log: Path, text: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, f"run ended ({proc.returncode}) before {text!r}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def _interrupted(
    tmp_path: Path, api, fault: str, waiting: str, signum: int, code: int, timeout: float = 120
) -> tuple[Path, Path, list]:
    """A tiny run held by ``fault`` until it prints ``waiting``, then sent ``signum``: it must exit ``code``
    within ``timeout`` seconds.
    Returns the run directory, its config and the ``error:`` lines it printed."""
    run = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(run).model_dump(mode="json")))
    log = tmp_path / "interrupted.log"
    proc = run_cli(config, *api, log, fault)
    try:
        _wait_for(proc, log, waiting)
        proc.send_signal(signum)
        assert proc.wait(timeout=timeout) == code, log.read_text()[-3000:]
    finally:
        proc.kill()
    return run, config, [line for line in log.read_text().splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(("signum", "code", "rerun"), [(signal.SIGINT, 130, True), (signal.SIGTERM, 143, False)])
def test_signal_during_a_stage_fails_loudly_and_the_rerun_resumes(tmp_path, prefect_api, signum, code, rerun):
    """Both signals fail with their code and one line; the re-run after Ctrl-C completes the run (the resume
    path is the same whichever signal stopped it)."""
    run, config, errors = _interrupted(tmp_path, prefect_api, "train@1:start:wait", WAITING, signum, code)
    assert errors == ["error: interrupted during train[r=0]; re-run the same command to resume"]
    assert not (run / "summary.json").exists()
    if rerun:
        again = run_cli(config, *prefect_api, tmp_path / "rerun.log")
        assert again.wait(timeout=400) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
        assert (run / "summary.json").is_file()


def test_ctrl_c_while_shards_run_in_threads_exits_at_once_naming_them(tmp_path, prefect_api):
    """Feature shards run in the flow's threads; a Ctrl-C there must not wait for a shard to finish (here it
    never would, so a wait shows as the exit timing out) and the line names the shard task runs."""
    waiting = "fault: waiting at features_shard:start"
    _, _, errors = _interrupted(tmp_path, prefect_api, "features_shard:start:wait", waiting, signal.SIGINT, 130, 60)
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
