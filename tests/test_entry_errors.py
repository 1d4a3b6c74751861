"""A bad value in a UI run's form fails the run with the error's one line as its state message and log, not
under the engine's traceback (the deployments' entry flow, on a real Prefect server)."""

from __future__ import annotations

import time

import pytest

from progress_core.errors import ConfigError


@pytest.fixture
def api(prefect_api):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_api[0]}):
        yield prefect_api[0]


def _logs(api_url: str, flow_run_id) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from tests.flowkit import client_call

    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    return [entry.message for entry in client_call(api_url, lambda c: c.read_logs(log_filter=flt, limit=200))]


def test_bad_form_value_fails_the_ui_run_in_one_line(tmp_path, api):
    from flows.entry import run_selection

    bad = {"training": {"learning_rate": -1}}
    state = run_selection(preset="demo", run_dir=str(tmp_path / "run"), advanced=bad, return_state=True)
    assert state.is_failed()
    assert "training.learning_rate" in state.message and "\n" not in state.message, state.message
    logs: list[str] = []
    deadline = time.monotonic() + 30
    while not any(m.startswith("Finished in state") for m in logs) and time.monotonic() < deadline:
        time.sleep(0.5)
        logs = _logs(api, state.state_details.flow_run_id)
    errors = [m for m in logs if m.startswith("error:")]
    assert errors == [f"error: {state.message}"], logs
    assert not any("Traceback" in m for m in logs), logs
    with pytest.raises(ConfigError, match="training.learning_rate"):
        run_selection(preset="demo", run_dir=str(tmp_path / "run"), advanced=bad)
    assert not (tmp_path / "run" / "config.json").exists()
