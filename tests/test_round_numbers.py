"""Every number of a finished run means what its header says: a round's seconds leave out the wait for
approval, an unprobed round has no probe accuracy, and the final set is named by the step it was trained to."""

from __future__ import annotations

import time
from types import SimpleNamespace

from progress_core.id_sets import read_ids
from tests.faultkit import tiny_config

APPROVAL_WAIT = 1000.0


def test_round_seconds_unprobed_accuracy_and_final_set_name(tmp_path, prefect_api, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import flows.progress_selection as flow_mod

    offset = [0.0]
    monkeypatch.setattr(flow_mod, "time", SimpleNamespace(monotonic=lambda: time.monotonic() + offset[0]))

    def approval_that_waits(cfg, run, state, rows):
        offset[0] += APPROVAL_WAIT

    monkeypatch.setattr(flow_mod, "approve_after_warmup", approval_that_waits)
    cfg = tiny_config(tmp_path / "run", **{"selection.strategy": "random"})
    with temporary_settings(updates={PREFECT_API_URL: prefect_api[0]}):
        summary = flow_mod.progress_selection(config=cfg)

    rounds = summary["rounds"]
    assert len(rounds) >= 3
    assert all(0 <= r["seconds"] < APPROVAL_WAIT for r in rounds), [r["seconds"] for r in rounds]
    assert all(r["probe_n"] == 0 and r["probe_accuracy"] is None for r in rounds)
    final = summary["final_selection"]
    assert final.endswith(f"/final/selected_until_{rounds[-1]['to_step']}.parquet")
    assert rounds[-1]["to_step"] == summary["step"] and rounds[-1]["from_step"] < summary["step"]
    assert len(read_ids(final)) == rounds[-1]["selected"]
