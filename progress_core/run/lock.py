"""One run per run directory (``docs/architecture.md#a-round-through-the-files``).

Two runs writing one run directory interleave their rounds: one moves the other's files to ``stale/`` and each
reports a selection the other last wrote. A run therefore holds an exclusive ``flock`` on ``<run_dir>/.run.lock``
for its whole life. The kernel drops the lock when the holding process exits in any way (even SIGKILL), so a
second run can always tell a live holder from a dead one; the file also records who holds it (pid, host, start
time) so the refusal names the holder.

A lock that can be taken while the file still names another holder was left by a process that ended without
releasing it; it is taken over with a logged line. A lock still held while the recorded holder is a pid that is
not alive on this host (in this pid namespace) is held only by an orphaned child of that run (a forked worker
sharing the open file): the file is replaced and the new one taken, also with a logged line.

Locks are re-entrant within a process: ``progress run`` takes the lock before it starts a Prefect server and the
flow it then runs in the same process takes it again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from progress_core.errors import ProgressError

LOCK_FILE = ".run.lock"
_ATTEMPTS = 3

_logger = logging.getLogger(__name__)


class RunDirLockedError(ProgressError):
    """Another live run holds the run directory."""


@dataclass(frozen=True)
class Holder:
    """Who holds a run directory, as recorded in its lock file."""

    pid: int
    host: str
    started: str
    pid_namespace: str = ""

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, started {self.started}"

    @classmethod
    def of_this_process(cls) -> Holder:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cls(os.getpid(), socket.gethostname(), started, pid_namespace())

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            data = json.loads(text)
            return cls(int(data["pid"]), str(data["host"]), str(data["started"]), str(data.get("pid_namespace", "")))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass
class _Held:
    fd: int
    count: int


_held: dict[Path, _Held] = {}
_guard = threading.Lock()


def pid_namespace() -> str:
    """This process's pid namespace (containers sharing a host name each have their own), "" where unknown."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """True when ``pid`` is a process on this host (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(fd: int) -> Holder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    return Holder.parse(os.read(fd, 4096).decode("utf-8", "replace"))


def _write_holder(fd: int, holder: Holder) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(vars(holder)).encode(), 0)
    os.fsync(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def _orphaned(holder: Holder | None) -> bool:
    if holder is None or holder.host != socket.gethostname() or holder.pid_namespace != pid_namespace():
        return False
    return not pid_alive(holder.pid)


def _try_lock(path: Path, log: Callable[[str], None]) -> int | None:
    """The locked descriptor of ``path``; None when the file changed under us (try again)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            os.close(fd)
            raise
        holder = _read_holder(fd)
        if _orphaned(holder) and _same_file(fd, path):
            log(f"{path.parent}: lock of {holder.describe()} is held only by a leftover of that run; taking it over")
            path.unlink()
            os.close(fd)
            return None
        os.close(fd)
        who = holder.describe() if holder else "a process that has not recorded itself yet"
        raise RunDirLockedError(
            f"run directory {path.parent} is in use by another run ({who}); wait for it to end or stop it"
        ) from None
    if not _same_file(fd, path):
        os.close(fd)
        return None
    previous = _read_holder(fd)
    if previous is not None and previous.pid != os.getpid():
        log(f"{path.parent}: taking over the lock left by {previous.describe()}, which is no longer running")
    return fd


def acquire(run_dir: str | Path, log: Callable[[str], None] | None = None) -> Path:
    """Take the run directory's lock (creating the directory); raises :class:`RunDirLockedError` naming the holder."""
    run = Path(run_dir).resolve()
    log = log or _logger.warning
    with _guard:
        held = _held.get(run)
        if held is not None:
            held.count += 1
            return run
        run.mkdir(parents=True, exist_ok=True)
        for _ in range(_ATTEMPTS):
            fd = _try_lock(run / LOCK_FILE, log)
            if fd is not None:
                _write_holder(fd, Holder.of_this_process())
                _held[run] = _Held(fd, 1)
                return run
        raise RunDirLockedError(f"run directory {run}: its lock file keeps changing; is another run starting there?")


def release(run_dir: str | Path) -> None:
    """Give the lock back (the last of this process's holds clears the holder and unlocks)."""
    run = Path(run_dir).resolve()
    with _guard:
        held = _held.get(run)
        if held is None:
            return
        held.count -= 1
        if held.count > 0:
            return
        del _held[run]
        with contextlib.suppress(OSError):
            os.ftruncate(held.fd, 0)
        os.close(held.fd)


@contextlib.contextmanager
def hold_run_dir(run_dir: str | Path, log: Callable[[str], None] | None = None) -> Iterator[Path]:
    """The run directory held for the ``with`` block (see the module docstring)."""
    run = acquire(run_dir, log)
    try:
        yield run
    finally:
        release(run)
