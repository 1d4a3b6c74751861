"""``prefect.yaml``'s progress-demo deployment on a temporary server, run by a real process worker: once
triggered through the API as the UI's Run button does, once from the UI itself in headless Chromium."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from flowkit import artifacts, client_call, small_config

from deployments.setup import create_pools, deploy, prefect_worker

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _deployment(api_url: str):
    return client_call(api_url, lambda c: c.read_deployment_by_name("progress-selection/progress-demo"))


def _wait_final(api_url: str, flow_run_id, timeout: float = 400):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client_call(api_url, lambda c: c.read_flow_run(flow_run_id))
        if run.state and run.state.is_final():
            return run
        time.sleep(1)
    raise TimeoutError(f"flow run {flow_run_id} not finished after {timeout}s")


@pytest.fixture(scope="module")
def deployed(prefect_api, tmp_path_factory):
    """progress-demo deployed from prefect.yaml with a small run as its default parameters, and a worker."""
    api_url, home = prefect_api
    base = tmp_path_factory.mktemp("deployed")
    create_pools(api_url, gpus=1, home=home)
    deploy(
        ["progress-demo"],
        api_url,
        home=home,
        params={"config": small_config(base / "ui-run", **{"schedule.final_step": 20})},
    )
    with prefect_worker(
        "cpu",
        api_url,
        home=home,
        log=base / "worker.log",
        extra_env={"PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "WARNING"},
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


def test_deployment_run_through_api_completes(deployed, tmp_path):
    api_url, _ = deployed
    dep = _deployment(api_url)
    assert dep.entrypoint == "flows/progress_selection.py:progress_selection"
    params = {"config": small_config(tmp_path / "api-run", **{"schedule.final_step": 20})}
    run = client_call(api_url, lambda c: c.create_flow_run_from_deployment(dep.id, parameters=params))
    final = _wait_final(api_url, run.id)
    assert final.state.is_completed(), final.state
    summary = json.loads((tmp_path / "api-run" / "summary.json").read_text())
    assert summary["flow_run_id"] == str(run.id) and summary["rounds"][-1]["to_step"] == 20


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_quick_run_from_the_ui(deployed, tmp_path):
    from playwright.sync_api import sync_playwright

    api_url, base = deployed
    ui = api_url.removesuffix("/api")
    dep = _deployment(api_url)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{ui}/deployments/deployment/{dep.id}", wait_until="networkidle")
        page.get_by_role("button", name="Run", exact=True).click()
        page.locator("button:has-text('Quick run'), [role=menuitem]:has-text('Quick run')").first.click()
        deadline = time.monotonic() + 30
        runs = []
        while not runs and time.monotonic() < deadline:
            runs = client_call(api_url, lambda c: c.read_flow_runs(limit=50))
            runs = [
                r for r in runs if r.deployment_id == dep.id and r.parameters["config"]["run_dir"].endswith("ui-run")
            ]
            time.sleep(0.5)
        assert runs, "Quick run created no flow run"
        final = _wait_final(api_url, runs[0].id)
        assert final.state.is_completed(), final.state
        page.goto(f"{ui}/runs/flow-run/{final.id}", wait_until="networkidle")
        page.get_by_role("tab", name="Artifacts").or_(page.get_by_text("Artifacts", exact=True)).first.click()
        page.get_by_text("ui-run-round-0-clusters").first.wait_for(timeout=30000)
        page.screenshot(path=str(shots / "flow-run-artifacts.png"), full_page=True)
        browser.close()
    keys = {a.key for a in artifacts(api_url, str(final.id))}
    assert {"ui-run-round-0-clusters", "ui-run-round-2-summary", "ui-run-summary"} <= keys
    assert (shots / "flow-run-artifacts.png").stat().st_size > 10_000
