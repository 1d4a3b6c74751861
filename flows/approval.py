"""An optional human approval between the warm-up and the selection rounds (docs/architecture.md#orchestration).

The two warm-up rounds (docs/algorithm.md#warm-up-pools) are cheap next to the selection rounds that follow
on a GPU pool. With ``orchestration.approve_after_warmup: true`` the flow run pauses after them, publishes
the warm-up report and the rounds it plans, and waits for someone to press Resume in the Prefect UI and
approve. Approval is remembered in the run directory, so a Retry or a re-run of an approved run does not
ask again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from progress_core.errors import ProgressError
from progress_core.io import write_json
from progress_core.reporting.summary import format_accuracy
from progress_core.run.config import RunConfig
from progress_core.selection.schedule import ScheduleState, plan_from
from tasks.artifacts import artifact_key

APPROVAL_TIMEOUT_S = 7 * 24 * 3600
APPROVAL_FILE = "approval.json"


class ApprovalDeclined(ProgressError):
    """Someone declined the planned rounds after the warm-up."""


class Approval(RunInput):
    """Continue with the planned selection rounds?"""

    approve: bool = False
    comment: str = ""


def planned_rounds(state: ScheduleState) -> dict:
    """The selection rounds the run will execute from ``state`` (``docs/algorithm.md#round-schedule``).

    The plan is :func:`~progress_core.selection.schedule.plan_from` of the flow's own schedule state, the same rules the
    flow applies round by round, so the card shows the rounds, budgets and steps the run executes while each
    round selects its budget (a round that selects less re-plans the rest).
    """
    plans = plan_from(state)
    return {
        "rounds": len(plans),
        "from_step": state.step,
        "to_step": plans[-1].to_step if plans else state.step,
        "samples": sum(p.budget for p in plans),
        "per_round": [
            {"round": p.index, "samples": p.budget, "from_step": p.from_step, "to_step": p.to_step} for p in plans
        ],
    }


def _fingerprint(cfg: RunConfig) -> str:
    return hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16]


def report(cfg: RunConfig, rows: list[dict], plan: dict) -> str:
    """Markdown shown while the run waits: the warm-up rounds and the planned selection rounds."""
    lines = [
        f"# Approve the selection rounds of `{cfg.run_dir}`?",
        "",
        "## Warm-up",
        "",
        "| round | steps | samples | probe accuracy | s |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['round']} | {r['from_step']}→{r['to_step']} | {r['new']} | {format_accuracy(r['probe_accuracy'])} "
        f"| {r['seconds']} |"
        for r in rows
    ]
    lines += [
        "",
        "## Planned",
        "",
        f"- strategy `{cfg.selection.strategy}`, **{plan['rounds']} selection rounds** at global batch "
        f"{cfg.training.global_batch_size}",
        f"- steps {plan['from_step']} → {plan['to_step']}, {plan['samples']} more samples trained",
        f"- model `{cfg.training.model.mode}`, judge `{cfg.probe.judge.kind}`",
        "",
        "| round | steps | samples |",
        "|---|---|---|",
    ]
    lines += [f"| {r['round']} | {r['from_step']}→{r['to_step']} | {r['samples']} |" for r in plan["per_round"]]
    lines += [
        "",
        "A round that selects fewer samples than planned (a pool running dry) re-plans the rounds after it.",
        "Resume the flow run and tick **approve** to continue; leave it unticked to stop the run here.",
    ]
    return "\n".join(lines)


def approve_after_warmup(cfg: RunConfig, run: Path, state: ScheduleState, rows: list[dict]):
    """Before the first selection round (``state.round_index == 2``), wait for approval when the config asks.

    Raises :class:`ApprovalDeclined` when the approver unticks *approve*; the flow run then fails with the
    approver's comment and can be re-run (the warm-up is reused) once the settings are right.
    """
    if state.round_index != 2 or not cfg.orchestration.approve_after_warmup:
        return
    log = get_run_logger()
    marker = Path(run) / APPROVAL_FILE
    fingerprint = _fingerprint(cfg)
    if marker.exists() and json.loads(marker.read_text()).get("config") == fingerprint:
        log.info("selection rounds approved earlier (%s)", marker)
        return
    plan = planned_rounds(state)
    create_markdown_artifact(
        key=artifact_key(run, "approval"), markdown=report(cfg, rows, plan), description="Waiting for approval"
    )
    log.info(
        "warm-up done; waiting for approval of %d selection rounds (Resume the flow run in the UI)", plan["rounds"]
    )
    answer = pause_flow_run(wait_for_input=Approval, timeout=APPROVAL_TIMEOUT_S, key="approve-after-warmup")
    if not answer.approve:
        raise ApprovalDeclined(f"selection rounds not approved: {answer.comment or 'no comment'}")
    write_json({"config": fingerprint, "comment": answer.comment, "plan": plan}, marker)
    log.info("approved%s", f": {answer.comment}" if answer.comment else "")
