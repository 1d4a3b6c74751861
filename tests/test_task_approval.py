"""The approval between warm-up and selection (flows/approval.py): the planned rounds at the edges of the
schedule, the report's content, and when the flow pauses, stops or goes on (Prefect's pause, logger and artifact
calls replaced by recorders). A real paused run, answered on the terminal, is in tests/test_cli_approval.py
(docs/architecture.md#orchestration, docs/algorithm.md#round-schedule)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

import flows.approval as approval_mod
from flows.approval import APPROVAL_FILE, Approval, ApprovalDeclined, approve_after_warmup, planned_rounds, report
from progress_core.run.config import load_config
from progress_core.selection.schedule import initial_state

ROWS = [
    {"round": 0, "from_step": 0, "to_step": 2, "new": 16, "probe_accuracy": 0.25, "seconds": 1.5},
    {"round": 1, "from_step": 2, "to_step": 3, "new": 8, "probe_accuracy": 0.5, "seconds": 0.7},
]


def _cfg(tmp_path, **sections):
    base = {"run_dir": str(tmp_path), "orchestration": {"approve_after_warmup": True}}
    base.update(sections)
    return load_config(overrides=base)


def _after_warmup(cfg, step: int, final_step: int, remaining: int = 1000):
    """The flow's schedule state before round 2 of ``cfg``."""
    return replace(initial_state(cfg, 1000), round_index=2, step=step, final_step=final_step, remaining=remaining)


def _rounds(plan: dict) -> list[tuple[int, int, int, int]]:
    return [(r["round"], r["from_step"], r["to_step"], r["samples"]) for r in plan["per_round"]]


def test_plan_at_the_edges(tmp_path):
    cfg = _cfg(tmp_path, selection={"selection_num": 5}, training={"global_batch_size": 8})
    small = planned_rounds(_after_warmup(cfg, step=3, final_step=6))
    assert _rounds(small) == [(2, 3, 4, 8), (3, 4, 5, 8), (4, 5, 6, 8)], "5 per round is less than a batch: one batch"
    assert small["rounds"] == 3 and small["samples"] == 24 and small["to_step"] == 6
    assert planned_rounds(_after_warmup(cfg, step=6, final_step=6)) == {
        "rounds": 0,
        "from_step": 6,
        "to_step": 6,
        "samples": 0,
        "per_round": [],
    }
    done = planned_rounds(_after_warmup(cfg, step=9, final_step=6))
    assert done["rounds"] == 0 and done["samples"] == 0
    big = _cfg(tmp_path, selection={"selection_num": 20}, training={"global_batch_size": 8})
    kept = planned_rounds(_after_warmup(big, step=3, final_step=6))
    assert _rounds(kept) == [(2, 3, 5, 16), (3, 5, 6, 8)], "20 → 16 per round; a tail of 8 is not under 0.5 * 16"
    merging = _cfg(
        tmp_path,
        selection={"selection_num": 20},
        training={"global_batch_size": 8},
        schedule={"min_round_fraction": 0.6},
    )
    assert _rounds(planned_rounds(_after_warmup(merging, 3, 6))) == [(2, 3, 6, 24)], "a tail of 8 < 9.6 merges"
    dry = planned_rounds(_after_warmup(big, step=3, final_step=60, remaining=20))
    assert _rounds(dry) == [(2, 3, 5, 16), (3, 5, 6, 4)], "the pool's last 4 samples take one step"
    full = _cfg(tmp_path, selection={"strategy": "full"}, training={"global_batch_size": 8})
    assert _rounds(planned_rounds(_after_warmup(full, 3, 60, remaining=100))) == [(2, 3, 16, 100)]
    stopped = _cfg(tmp_path, schedule={"max_rounds": 0})
    assert planned_rounds(_after_warmup(stopped, 3, 60))["rounds"] == 0


def test_report_shows_the_warmup_and_the_plan(tmp_path):
    cfg = _cfg(tmp_path, selection={"selection_num": 16, "strategy": "random"}, training={"global_batch_size": 8})
    text = report(cfg, ROWS, planned_rounds(_after_warmup(cfg, 3, 9)))
    lines = text.splitlines()
    assert lines[0] == f"# Approve the selection rounds of `{tmp_path}`?"
    assert "| 0 | 0→2 | 16 | 0.250 | 1.5 |" in lines and "| 1 | 2→3 | 8 | 0.500 | 0.7 |" in lines
    assert "- strategy `random`, **3 selection rounds** at global batch 8" in lines
    assert "- steps 3 → 9, 48 more samples trained" in lines
    planned = lines[lines.index("| round | steps | samples |") + 2 :][:4]
    assert planned == ["| 2 | 3→5 | 16 |", "| 3 | 5→7 | 16 |", "| 4 | 7→9 | 16 |", ""]


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
        approve_after_warmup(cfg, tmp_path, replace(_after_warmup(cfg, 3, 9), round_index=r), ROWS)
    off = cfg.model_copy(update={"orchestration": cfg.orchestration.model_copy(update={"approve_after_warmup": False})})
    approve_after_warmup(off, tmp_path, _after_warmup(off, 3, 9), ROWS)
    assert prefect_calls["pauses"] == [] and not (tmp_path / APPROVAL_FILE).exists()


def test_approval_is_remembered_for_the_same_config_only(tmp_path, prefect_calls):
    cfg = _cfg(tmp_path, selection={"selection_num": 16}, training={"global_batch_size": 8})
    prefect_calls["answers"] += [Approval(approve=True, comment="looks fine")]
    approve_after_warmup(cfg, tmp_path, _after_warmup(cfg, 3, 9), ROWS)
    assert [p["key"] for p in prefect_calls["pauses"]] == ["approve-after-warmup"]
    assert prefect_calls["pauses"][0]["input"] is Approval
    artifact = prefect_calls["artifacts"][0]
    assert artifact["key"] == f"{tmp_path.name.lower().replace('_', '-')}-approval"
    assert artifact["markdown"] == report(cfg, ROWS, planned_rounds(_after_warmup(cfg, 3, 9)))
    saved = json.loads((tmp_path / APPROVAL_FILE).read_text())
    assert saved["comment"] == "looks fine" and saved["plan"] == planned_rounds(_after_warmup(cfg, 3, 9))
    approve_after_warmup(cfg, tmp_path, _after_warmup(cfg, 3, 9), ROWS)
    assert len(prefect_calls["pauses"]) == 1, "a Retry of an approved run does not ask again"
    changed = _cfg(tmp_path, selection={"selection_num": 24}, training={"global_batch_size": 8})
    prefect_calls["answers"] += [Approval(approve=True)]
    approve_after_warmup(changed, tmp_path, _after_warmup(changed, 3, 9), ROWS)
    assert len(prefect_calls["pauses"]) == 2, "other settings need their own approval"


def test_a_declined_plan_stops_the_run_with_the_comment(tmp_path, prefect_calls):
    cfg = _cfg(tmp_path)
    prefect_calls["answers"] += [Approval(approve=False, comment="budget too small"), Approval(approve=False)]
    with pytest.raises(ApprovalDeclined, match="budget too small"):
        approve_after_warmup(cfg, tmp_path, _after_warmup(cfg, 3, 9), ROWS)
    assert not (tmp_path / APPROVAL_FILE).exists()
    with pytest.raises(ApprovalDeclined, match="no comment"):
        approve_after_warmup(cfg, tmp_path, _after_warmup(cfg, 3, 9), ROWS)
