"""One run per run directory: the lock of progress_core/run/lock.py between real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from progress_core.run import lock as run_lock
from progress_core.run.lock import LOCK_FILE, Holder, RunDirLockedError, hold_run_dir

REPO = Path(__file__).resolve().parent.parent

HOLD = """
import sys
from progress_core.run.lock import acquire
acquire(sys.argv[1])
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    """A second process holding ``tmp_path / 'run'`` until the test ends."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "held"
    yield run, proc
    proc.stdin.close()
    proc.wait(timeout=30)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_run_is_refused_naming_the_holder(holder):
    run, proc = holder
    with pytest.raises(RunDirLockedError) as err:
        run_lock.acquire(run)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert f"pid {proc.pid}" in message and socket.gethostname() in message and "started 20" in message
    assert str(run.resolve()) in message


def test_lock_of_a_killed_run_is_taken_over_with_one_line(holder):
    run, proc = holder
    proc.kill()
    proc.wait(timeout=30)
    logged: list[str] = []
    with hold_run_dir(run, logged.append):
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert len(logged) == 1 and f"pid {proc.pid}" in logged[0] and "no longer running" in logged[0]
    assert (run / LOCK_FILE).read_text() == ""


def test_lock_left_by_a_dead_process_is_taken_over_with_a_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    dead = _dead_pid()
    (run / LOCK_FILE).write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "started": "then"}))
    logged: list[str] = []
    with hold_run_dir(run, logged.append):
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert len(logged) == 1 and f"pid {dead}" in logged[0] and "taking over" in logged[0]


def _recorded(pid: int, **changes) -> str:
    return json.dumps({**vars(Holder.of_this_process()), "pid": pid, "started": "then", **changes})


def test_lock_kept_only_by_an_orphan_of_a_dead_run_is_taken_over(holder):
    run, proc = holder
    dead = _dead_pid()
    lock = run / LOCK_FILE
    lock.write_text(_recorded(dead))
    logged: list[str] = []
    with hold_run_dir(run, logged.append):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert len(logged) == 1 and f"pid {dead}" in logged[0]


@pytest.mark.parametrize("elsewhere", [{"host": "elsewhere"}, {"pid_namespace": "pid:[1]"}])
def test_live_holder_on_another_host_or_in_another_container_is_never_taken_over(holder, elsewhere):
    run, _ = holder
    (run / LOCK_FILE).write_text(_recorded(_dead_pid(), **elsewhere))
    with pytest.raises(RunDirLockedError, match="in use by another run"):
        run_lock.acquire(run)


def test_lock_is_reentrant_within_a_process(tmp_path):
    with hold_run_dir(tmp_path / "run"):
        with hold_run_dir(tmp_path / "run"):
            pass
        assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert (tmp_path / "run" / LOCK_FILE).read_text() == ""
