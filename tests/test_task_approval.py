"""The approval between warm-up and selection (flows/approval.py) without a server: the plan's arithmetic at
the edges, the report's content, and when the flow pauses, stops or goes on (Prefect's pause, logger and
artifact calls replaced by recorders) (docs/architecture.md#orchestration)."""

from __future__ import annotations

import json
import logging

import pytest

import flows.approval as approval_mod
from flows.approval import APPROVAL_FILE, Approval, ApprovalDeclined, approve_after_warmup, planned_rounds, report
from progress_core.config import load_config

ROWS = [
    {"round": 0, "from_step": 0, "to_step": 2, "new": 16, "probe_accuracy": 0.25, "seconds": 1.5},
    {"round": 1, "from_step": 2, "to_step": 3, "new": 8, "probe_accuracy": 0.5, "seconds": 0.7},
]


def _cfg(tmp_path, **sections):
    base = {"run_dir": str(tmp_path), "orchestration": {"approve_after_warmup": True}}
    base.update(sections)
    return load_config(overrides=base)


def test_plan_at_the_edges(tmp_path):
    cfg = _cfg(tmp_path, selection={"selection_num": 5}, training={"global_batch_size": 8})
    small = planned_rounds(cfg, step=3, final_step=6)
    assert small["steps_per_round"] == 1 and small["rounds"] == 3 and small["samples"] == 15
    assert planned_rounds(cfg, step=6, final_step=6)["rounds"] == 0
    done = planned_rounds(cfg, step=9, final_step=6)
    assert done["rounds"] == 0 and done["samples"] == 0
    big = _cfg(tmp_path, selection={"selection_num": 20}, training={"global_batch_size": 8})
    plan = planned_rounds(big, step=3, final_step=6)
    assert plan["steps_per_round"] == 2 and plan["rounds"] == 2 and plan["samples"] == 24, "capped by the steps left"
    stopped = _cfg(tmp_path, schedule={"max_rounds": 0})
    assert planned_rounds(stopped, 3, 60)["rounds"] == 0


def test_report_shows_the_warmup_and_the_plan(tmp_path):
    cfg = _cfg(tmp_path, selection={"selection_num": 16, "strategy": "random"}, training={"global_batch_size": 8})
    text = report(cfg, ROWS, planned_rounds(cfg, 3, 9))
    lines = text.splitlines()
    assert lines[0] == f"# Approve the selection rounds of `{tmp_path}`?"
    assert "| 0 | 0→2 | 16 | 0.250 | 1.5 |" in lines and "| 1 | 2→3 | 8 | 0.500 | 0.7 |" in lines
    assert "- strategy `random`, up to **3 rounds** of up to 16 samples (2 steps each at global batch 8)" in lines
    assert "- steps 3 → 9, about 48 more samples trained" in lines


@pytest.fixture
def prefect_calls(monkeypatch):
    """Replaces the pause, the artifact and the run logger; ``answers`` are the approver's replies in turn."""
    seen = {"pauses": [], "artifacts": [], "answers": []}

    def pause(wait_for_input, timeout, key):
        seen["pauses"].append({"input": wait_for_input, "timeout": timeout, "key": key})
        return seen["answers"].pop(0)

    monkeypatch.setattr(approval_mod, "pause_flow_run", pause)
    monkeypatch.setattr(approval_mod, "create_markdown_artifact", lambda **kw: seen["artifacts"].append(kw))
    monkeypatch.setattr(approval_mod, "get_run_logger", lambda: logging.getLogger("test-approval"))
    return seen


def test_only_the_first_selection_round_of_a_run_that_asks_waits(tmp_path, prefect_calls):
    cfg = _cfg(tmp_path)
    for r in (0, 1, 3):
        approve_after_warmup(cfg, tmp_path, r, ROWS, 3, 9)
    off = cfg.model_copy(update={"orchestration": cfg.orchestration.model_copy(update={"approve_after_warmup": False})})
    approve_after_warmup(off, tmp_path, 2, ROWS, 3, 9)
    assert prefect_calls["pauses"] == [] and not (tmp_path / APPROVAL_FILE).exists()


def test_approval_is_remembered_for_the_same_config_only(tmp_path, prefect_calls):
    cfg = _cfg(tmp_path, selection={"selection_num": 16}, training={"global_batch_size": 8})
    prefect_calls["answers"] += [Approval(approve=True, comment="looks fine")]
    approve_after_warmup(cfg, tmp_path, 2, ROWS, 3, 9)
    assert [p["key"] for p in prefect_calls["pauses"]] == ["approve-after-warmup"]
    assert prefect_calls["pauses"][0]["input"] is Approval
    artifact = prefect_calls["artifacts"][0]
    assert artifact["key"] == f"{tmp_path.name.lower().replace('_', '-')}-approval"
    assert artifact["markdown"] == report(cfg, ROWS, planned_rounds(cfg, 3, 9))
    saved = json.loads((tmp_path / APPROVAL_FILE).read_text())
    assert saved["comment"] == "looks fine" and saved["plan"] == planned_rounds(cfg, 3, 9)
    approve_after_warmup(cfg, tmp_path, 2, ROWS, 3, 9)
    assert len(prefect_calls["pauses"]) == 1, "a Retry of an approved run does not ask again"
    changed = _cfg(tmp_path, selection={"selection_num": 24}, training={"global_batch_size": 8})
    prefect_calls["answers"] += [Approval(approve=True)]
    approve_after_warmup(changed, tmp_path, 2, ROWS, 3, 9)
    assert len(prefect_calls["pauses"]) == 2, "other settings need their own approval"


def test_a_declined_plan_stops_the_run_with_the_comment(tmp_path, prefect_calls):
    cfg = _cfg(tmp_path)
    prefect_calls["answers"] += [Approval(approve=False, comment="budget too small"), Approval(approve=False)]
    with pytest.raises(ApprovalDeclined, match="budget too small"):
        approve_after_warmup(cfg, tmp_path, 2, ROWS, 3, 9)
    assert not (tmp_path / APPROVAL_FILE).exists()
    with pytest.raises(ApprovalDeclined, match="no comment"):
        approve_after_warmup(cfg, tmp_path, 2, ROWS, 3, 9)
