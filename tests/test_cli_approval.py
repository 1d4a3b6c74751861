"""``progress run`` answers the approval pause after the warm-up on standard input (progress_cli/approval.py)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from progress_cli.approval import NO_ANSWER, answer_from
from tests.flowkit import REPO, small_config, write_config


@pytest.mark.parametrize(
    ("typed", "answer"),
    [
        ("y\n", (True, "")),
        ("YES\n", (True, "")),
        ("n\nbudget too small\n", (False, "budget too small")),
        ("\n\n", (False, "")),
        ("", (False, NO_ANSWER)),
    ],
)
def test_answer_read_from_the_stream(typed, answer):
    out = io.StringIO()
    assert answer_from(io.StringIO(typed), out, "# Approve?") == answer
    assert out.getvalue().startswith("\n# Approve?\n") and "[y/N]" in out.getvalue()


def _run(config, home, typed: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update({"PYTHONPATH": str(REPO), "PREFECT_HOME": str(home), "PREFECT_LOGGING_LEVEL": "WARNING"})
    return subprocess.run(
        [sys.executable, "-m", "progress_cli", "run", "--config", str(config)],
        cwd=REPO,
        env=env,
        input=typed,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_run_waits_for_the_answer_typed_on_the_terminal_and_runs_the_rounds_on_its_card(tmp_path):
    run_dir = tmp_path / "run"
    cfg = small_config(run_dir, **{"orchestration.approve_after_warmup": True, "schedule.final_step": 29})
    config = write_config(cfg, tmp_path / "run.yaml")

    approved = _run(config, tmp_path / "home", "y\n")
    assert approved.returncode == 0, approved.stderr[-3000:]
    card = approved.stderr
    assert "Approve the planned selection rounds" in card and "## Planned" in card
    # W1 = 80 and W2 = 40 of 400 samples train 10 + 5 steps at batch 8; FINAL_STEP 29 leaves 14 steps = 112
    # samples: a round of 48, then 64, the tail of 16 (< 0.5 * 48) merged into it.
    assert "| 2 | 15→21 | 48 |" in card and "| 3 | 21→29 | 64 |" in card
    summary = json.loads((run_dir / "summary.json").read_text())
    executed = [
        {"round": r["round"], "samples": r["new"], "from_step": r["from_step"], "to_step": r["to_step"]}
        for r in summary["rounds"][2:]
    ]
    plan = json.loads((run_dir / "approval.json").read_text())["plan"]
    assert (
        plan["per_round"]
        == executed
        == [
            {"round": 2, "samples": 48, "from_step": 15, "to_step": 21},
            {"round": 3, "samples": 64, "from_step": 21, "to_step": 29},
        ]
    )
