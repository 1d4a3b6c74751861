"""Answering the approval pause of a run started from the terminal (docs/architecture.md#orchestration).

With ``orchestration.approve_after_warmup: true`` the flow pauses after the warm-up and waits for someone to
resume it with an answer. In the Prefect UI that is the Resume button; ``progress run`` on its temporary
server has no UI, so it asks on standard input instead: it shows the warm-up report and the planned rounds
and reads ``y`` to go on or anything else to stop (then a comment). At the end of input (a script or CI
with nothing to answer) it declines with a comment saying why, so the run stops with one clear error instead
of waiting a week; the warm-up stays on disk and a re-run reuses it. A run against a real server
(``PREFECT_API_URL``) is approved in its UI as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
from collections.abc import Callable, Iterator
from typing import TextIO
from uuid import UUID

FLOW_NAME = "progress-selection"
POLL_SECONDS = 1.0
NO_ANSWER = (
    "no answer on standard input; approve in a terminal, or run against a Prefect server (make ui) and "
    "press Resume in its UI"
)

Answer = tuple[bool, str]
Ask = Callable[[str], Answer]


def answer_from(stream: TextIO, out: TextIO, report: str) -> Answer:
    """Show ``report`` and read the answer: ``y``/``yes`` approves; anything else declines, with a comment
    read from the next line; the end of input declines with :data:`NO_ANSWER`."""
    out.write(f"\n{report}\n\nApprove the planned selection rounds and continue? [y/N] ")
    out.flush()
    line = stream.readline()
    if not line:
        out.write("\n")
        return False, NO_ANSWER
    if line.strip().lower() in ("y", "yes"):
        return True, ""
    out.write("Comment (why not, optional): ")
    out.flush()
    return False, stream.readline().strip()


def ask_on_terminal(report: str) -> Answer:
    return answer_from(sys.stdin, sys.stderr, report)


def _paused_run(client) -> UUID | None:
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    runs = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
        limit=1,
    )
    return runs[0].id if runs else None


def _approval_report(client, flow_run_id: UUID) -> str:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    reports = sorted((a for a in artifacts if a.key and a.key.endswith("-approval")), key=lambda a: a.created)
    return str(reports[-1].data) if reports else "The warm-up is done; the selection rounds are planned."


def answer_pauses(stop: threading.Event, ask: Ask) -> None:
    """Until ``stop``: answer every paused ``progress-selection`` run of this server with ``ask``."""
    from prefect import get_client
    from prefect.flow_runs import resume_flow_run

    with get_client(sync_client=True) as client:
        while not stop.wait(POLL_SECONDS):
            flow_run_id = _paused_run(client)
            if flow_run_id is None:
                continue
            approve, comment = ask(_approval_report(client, flow_run_id))
            resume_flow_run(flow_run_id, run_input={"approve": approve, "comment": comment})


@contextlib.contextmanager
def terminal_approval(enabled: bool, ask: Ask = ask_on_terminal) -> Iterator[None]:
    """Answer approval pauses from the terminal while the body runs (only when ``enabled``)."""
    if not enabled:
        yield
        return
    stop = threading.Event()
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(answer_pauses, stop, ask), name="terminal-approval", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
