"""Ctrl-C and SIGTERM stop a run loudly: one ``error:`` line naming the stage and exit status 130 or 143.

Prefect catches an interrupt inside a flow, marks the run Crashed and re-raises it; a SIGTERM becomes its
``TerminationSignal``, after which Prefect re-sends the signal to the handler that was installed before the flow.
Typer, in turn, turns a ``KeyboardInterrupt`` into a plain return value, so the command would end with status 0.
:func:`interrupts_fail_loudly` catches both before Typer sees them and raises :class:`RunInterrupted` instead.
Every finished stage is kept (``docs/architecture.md#stage-contract``), so the same command resumes.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from progress_core.errors import ProgressError, exception_chain

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class RunInterrupted(ProgressError):
    """The run was stopped by a signal; ``exit_code`` is 128 + the signal's number."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(BaseException):
    """SIGTERM outside Prefect's own handler (a BaseException, like ``KeyboardInterrupt``)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _run_names(frames: Iterator[Any]) -> tuple[list[str], list[str]]:
    """Names of the task runs and flow runs whose Prefect engines own ``frames``, outermost first."""
    tasks: list[str] = []
    flows: list[str] = []
    for frame in frames:
        engine = frame.f_locals.get("self")
        kind = type(engine).__name__
        run = getattr(engine, "task_run" if "TaskRunEngine" in kind else "flow_run", None)
        if "RunEngine" in kind and isinstance(getattr(run, "name", None), str):
            (tasks if "TaskRunEngine" in kind else flows).append(run.name)
    return tasks, flows


def _traceback_frames(exc: BaseException) -> Iterator[Any]:
    for link in exception_chain(exc):
        tb = link.__traceback__
        while tb is not None:
            yield tb.tb_frame
            tb = tb.tb_next


def _thread_frames() -> Iterator[Any]:
    """Frames of the other threads, outermost first (stages a task runner runs in its threads)."""
    for ident, frame in sys._current_frames().items():
        if ident == threading.get_ident():
            continue
        stack = []
        while frame is not None:
            stack.append(frame)
            frame = frame.f_back
        yield from reversed(stack)


def interrupted_stage(exc: BaseException) -> str:
    """The innermost Prefect task run the interrupt went through (``train[r=0]``), else the task runs still
    running in other threads (feature shards), else where it landed."""
    tasks, flows = _run_names(_traceback_frames(exc))
    if tasks:
        return tasks[-1]
    running = sorted(set(_run_names(_thread_frames())[0]))
    if running:
        return ", ".join(running[:3]) + (f" and {len(running) - 3} more" if len(running) > 3 else "")
    if flows:
        return f"flow run {flows[-1]} (between stages)"
    return "start-up (before the flow ran)"


def _is_termination(exc: BaseException) -> bool:
    return any(type(link).__name__ in ("Terminated", "TerminationSignal") for link in exception_chain(exc))


@contextlib.contextmanager
def interrupts_fail_loudly() -> Iterator[None]:
    """Turn SIGINT and SIGTERM inside the block into :class:`RunInterrupted` (exit 130 / 143)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main else None
    try:
        yield
    except BaseException as exc:
        if not isinstance(exc, (KeyboardInterrupt, Terminated)) and type(exc).__name__ != "TerminationSignal":
            raise
        code = EXIT_CODES[signal.SIGTERM if _is_termination(exc) else signal.SIGINT]
        raise RunInterrupted(
            f"interrupted during {interrupted_stage(exc)}; re-run the same command to resume", code
        ) from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
