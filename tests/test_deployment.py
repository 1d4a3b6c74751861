"""``prefect.yaml``'s deployments on a temporary server, run by a real process worker: the short form's
parameters as the UI's Run button sends them, and the optional approval pause after the warm-up.
The UI itself in a browser: tests/test_ui_browser.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from flowkit import artifacts, client_call, small_config

from deployments.setup import create_pools, deploy, prefect_worker

pytestmark = pytest.mark.slow


def _advanced(**overrides) -> dict:
    cfg = small_config(Path("unused"), **{"schedule.final_step": 20, **overrides})
    cfg.pop("run_dir")
    return cfg


def _deployment(api_url: str, name: str = "progress-selection/progress-demo"):
    return client_call(api_url, lambda c: c.read_deployment_by_name(name))


def _wait(api_url: str, flow_run_id, done, timeout: float = 400):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client_call(api_url, lambda c: c.read_flow_run(flow_run_id))
        if run.state and done(run.state):
            return run
        time.sleep(1)
    raise TimeoutError(f"flow run {flow_run_id} not in the expected state after {timeout}s")


def _wait_final(api_url: str, flow_run_id, timeout: float = 400):
    return _wait(api_url, flow_run_id, lambda s: s.is_final(), timeout)


@pytest.fixture(scope="module")
def deployed(prefect_api, tmp_path_factory):
    """The deployments of prefect.yaml and a cpu worker whose relative run directories go under a temp dir."""
    api_url, home = prefect_api
    base = tmp_path_factory.mktemp("deployed")
    create_pools(api_url, gpus=1, home=home)
    deploy(["progress-demo", "compare-strategies", "progress-paper"], api_url, home=home)
    with prefect_worker(
        "cpu",
        api_url,
        home=home,
        log=base / "worker.log",
        extra_env={
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PROGRESS_RUNS_DIR": str(base / "runs"),
        },
    ):
        yield api_url, base


def test_pools_and_gpu_limit(prefect_api, deployed):
    api_url, _ = prefect_api
    pools = client_call(api_url, lambda c: c.read_work_pools())
    by_name = {p.name: p for p in pools}
    assert by_name["cpu"].type == "process"
    gpu_template = json.dumps(by_name["gpu"].base_job_template)
    assert "nvidia.com/gpu" in gpu_template and "{{ gpu_count }}" in gpu_template
    limit = client_call(api_url, lambda c: c.read_concurrency_limit_by_tag("gpu"))
    assert limit.concurrency_limit == 1


def test_deployments_show_a_short_form_with_their_presets(deployed):
    api_url, _ = deployed
    demo, paper = _deployment(api_url), _deployment(api_url, "progress-selection/progress-paper")
    compare = _deployment(api_url, "compare-strategies/compare-strategies")
    assert demo.entrypoint == paper.entrypoint == "flows/entry.py:run_selection"
    props = demo.parameter_openapi_schema["properties"]
    assert list(props) == ["preset", "pool_json", "image_root", "run_dir", "strategy", "budget", "seed", "advanced"]
    assert set(props["strategy"]["enum"]) >= {"progress", "random", "coincide", "tfs"}
    assert "SELECTION_NUM" in props["budget"]["description"] and "paper 7500" in props["budget"]["description"]
    assert demo.parameters == {"preset": "demo", "strategy": "progress", "advanced": {}}
    assert paper.parameters["preset"] == "paper" and paper.work_pool_name == "gpu"
    assert paper.parameters["pool_json"].endswith(".json")
    assert compare.parameters["strategies"] == ["progress", "random", "tfs", "coincide"]


def test_form_parameters_run_under_the_runs_dir(deployed):
    api_url, base = deployed
    dep = _deployment(api_url)
    params = {"preset": "demo", "strategy": "tfs", "run_dir": "api-run", "budget": 32, "advanced": _advanced()}
    run = client_call(api_url, lambda c: c.create_flow_run_from_deployment(dep.id, parameters=params))
    final = _wait_final(api_url, run.id)
    assert final.state.is_completed(), final.state
    run_dir = base / "runs" / "api-run"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["flow_run_id"] == str(run.id) and summary["rounds"][-1]["to_step"] == 20
    assert {r["strategy"] for r in summary["rounds"][2:]} == {"tfs"}
    assert all(r["new"] <= r["budget"] for r in summary["rounds"][2:])
    assert all(r["budget"] < 32 * 1.5 for r in summary["rounds"][2:]), "a short tail merges into the round before"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["selection"]["selection_num"] == 32 and config["data"]["synthetic_n"] == 400
    assert config["training"]["global_batch_size"] == 8, "unset fields keep the preset's/advanced values"


def test_approval_after_warmup_pauses_until_approved(deployed):
    from prefect.flow_runs import resume_flow_run

    api_url, base = deployed
    dep = _deployment(api_url)
    advanced = _advanced(**{"orchestration.approve_after_warmup": True})
    params = {"run_dir": "approval", "advanced": advanced}
    run = client_call(api_url, lambda c: c.create_flow_run_from_deployment(dep.id, parameters=params))
    paused = _wait(api_url, run.id, lambda s: s.is_paused() or s.is_final())
    assert paused.state.is_paused(), paused.state
    run_dir = base / "runs" / "approval"
    assert sorted(p.name for p in (run_dir / "rounds").iterdir()) == ["r00", "r01"], "paused after the warm-up"
    report = {a.key: a for a in artifacts(api_url, str(run.id))}["approval-approval"]
    assert "Planned" in report.data and "Warm-up" in report.data
    schema_key = paused.state.state_details.run_input_keyset["schema"]
    schema = json.loads(client_call(api_url, lambda c: c.read_flow_run_input(run.id, schema_key)))
    assert schema["properties"]["approve"]["default"] is False, "the Resume dialog's Approve toggle starts off"

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        resume_flow_run(run.id, run_input={"approve": True, "comment": "go"})
    final = _wait_final(api_url, run.id)
    assert final.state.is_completed(), final.state
    assert json.loads((run_dir / "approval.json").read_text())["comment"] == "go"
    assert (run_dir / "rounds" / "r02").exists()
