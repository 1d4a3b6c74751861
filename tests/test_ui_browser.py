"""``make ui`` driven as a user would, in headless Chromium: the short form, a run's artifacts in order with
an embedded plot, Retry reusing every round, and a second ``make ui`` refused with a clear message.

Set ``PROGRESS_UI_SCREENSHOTS=docs`` to refresh docs/ui-form.png and docs/ui-run.png.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flowkit import REPO, artifacts, client_call, small_config, task_runs

from deployments.setup import free_port

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUN = "ui-run"


def _ui_env(home: Path, runs: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PROGRESS_RUNS_DIR": str(runs),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    env.pop("PREFECT_API_URL", None)
    return env


def _wait_banner(proc: subprocess.Popen, log: Path, timeout: float = 400) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if "Prefect UI:" in text:
            return text
        assert proc.poll() is None, f"make ui exited early ({proc.returncode}):\n{text[-3000:]}"
        time.sleep(1)
    raise TimeoutError(f"make ui printed no banner after {timeout}s:\n{log.read_text()[-3000:]}")


def _wait_final(api_url: str, flow_run_id, runs: int = 1, timeout: float = 400):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client_call(api_url, lambda c: c.read_flow_run(flow_run_id))
        if run.state and run.state.is_final() and run.run_count >= runs:
            return run
        time.sleep(1)
    raise TimeoutError(f"flow run {flow_run_id} not finished after {timeout}s")


@pytest.fixture(scope="module")
def make_ui(tmp_path_factory):
    """``make ui`` (python -m deployments.ui) in a temporary PREFECT_HOME and runs directory."""
    base = tmp_path_factory.mktemp("make-ui")
    home, runs, log = base / "prefect-home", base / "runs", base / "ui.log"
    port = free_port()
    out = open(log, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments.ui", "--port", str(port)],
        cwd=REPO,
        env=_ui_env(home, runs),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        banner = _wait_banner(proc, log)
        yield {"api_url": f"http://127.0.0.1:{port}/api", "port": port, "home": home, "runs": runs, "base": base}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        out.close()
    assert str(runs) in banner and str(home) in banner, banner
    assert proc.returncode == 0, log.read_text()[-3000:]
    with open(home / "logs" / "worker.log", "rb") as f:
        worker_log = f.read()
    assert b"\x00" not in worker_log and worker_log.count(b"===== ") >= 1


def _advanced() -> dict:
    cfg = small_config(Path("unused"), **{"schedule.final_step": 20})
    cfg.pop("run_dir")
    return cfg


def _demo_deployment(api_url: str):
    """The demo deployment ``make ui`` registers, with the short form's parameters only."""
    dep = client_call(api_url, lambda c: c.read_deployment_by_name("progress-selection/progress-demo"))
    assert dep.parameters["preset"] == "demo" and dep.parameters["strategy"] == "progress"
    assert set(dep.parameter_openapi_schema["properties"]) == {
        "preset",
        "pool_json",
        "image_root",
        "run_dir",
        "strategy",
        "budget",
        "seed",
        "advanced",
    }
    return dep


def _submit_custom_run(page, ui: str, api_url: str, dep, shots: Path) -> None:
    """Fill the deployment's Custom run form (run_dir, strategy ``random``, the advanced JSON) and submit it."""
    page.goto(f"{ui}/deployments/deployment/{dep.id}", wait_until="networkidle")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run").first.click()
    page.get_by_text("strategy (Optional)").wait_for(timeout=30000)

    def field(label: str):
        return page.locator(".schema-form-property", has=page.get_by_text(f"{label} (Optional)", exact=True))

    field("run_dir").locator("textarea, input").first.fill(RUN)
    chosen = field("strategy").locator(".p-select-button__value")
    for _ in range(3):
        field("strategy").locator(".p-select-button__control").focus()
        page.keyboard.press("ArrowDown")
        page.get_by_role("option", name="random", exact=True).click()
        if chosen.inner_text() == "random":
            break
        page.keyboard.press("Escape")
    assert chosen.inner_text() == "random"
    for number, default in (("budget", "0"), ("seed", "42")):
        box = field(number)
        assert box.locator("input").first.input_value() == default, f"{number} is a plain integer field"
        assert "type None" not in box.inner_text(), f"{number} shows no int/None toggle"
    field("advanced").locator("textarea").fill(json.dumps(_advanced()))
    page.get_by_text("Run Name").first.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "ui-form.png"))
    _click_until_created(page, api_url, dep)


def _created(api_url: str, dep) -> list:
    return [r for r in client_call(api_url, lambda c: c.read_flow_runs(limit=20)) if r.deployment_id == dep.id]


def _click_until_created(page, api_url: str, dep, attempts: int = 3) -> None:
    """Submit the form; a click lost on a loaded machine (no flow run after 20 s) is repeated, never a second
    click once the deployment has a run."""
    for _ in range(attempts):
        if _created(api_url, dep):
            return
        page.get_by_role("button", name="Submit").click()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if _created(api_url, dep):
                return
            time.sleep(0.5)


def _flow_run_from_form(api_url: str, dep):
    """The flow run the form created (waits up to a minute), with the form's parameters."""
    deadline = time.monotonic() + 60
    created = []
    while not created and time.monotonic() < deadline:
        created = _created(api_url, dep)
        time.sleep(0.5)
    assert created, "the form created no flow run"
    run = created[0]
    assert run.parameters["strategy"] == "random" and run.parameters["run_dir"] == RUN
    return run


def _check_artifact_pages(page, ui: str, final, arts: dict, rounds: list[int], shots: Path) -> None:
    """The run's Artifacts tab, the summary with its embedded plot and rounds in order, and a round's clusters."""
    page.goto(f"{ui}/runs/flow-run/{final.id}", wait_until="networkidle")
    page.get_by_role("tab", name="Artifacts").or_(page.get_by_text("Artifacts", exact=True)).first.click()
    page.get_by_text(f"{RUN}-summary", exact=True).first.wait_for(timeout=30000)
    page.screenshot(path=str(shots / "ui-run-artifacts.png"), full_page=True)
    page.get_by_text("Task runs", exact=True).first.wait_for(timeout=30000)
    listed = page.locator("body").inner_text()
    run_section = listed[listed.index("\nFlow run\n") : listed.index("\nTask runs")]
    run_level = {f"{RUN}-{kind}" for kind in ("summary", "rounds", "report", "progress")}
    assert all(key + "\n" in run_section for key in run_level), "the run's own artifacts together on top"
    others = [run_section.index(key + "\n") for key in run_level - {f"{RUN}-summary"}]
    assert run_section.index(f"{RUN}-summary\n") < min(others), "the summary is the first card"
    assert f"{RUN}-round-" not in run_section
    assert all(arts[key].task_run_id for key in arts if key not in run_level), "round tables under their task runs"

    page.goto(f"{ui}/artifacts/artifact/{arts[f'{RUN}-summary'].id}", wait_until="networkidle")
    plot = page.locator("img[src^='data:image/png']").first
    plot.wait_for(timeout=30000)
    assert plot.evaluate("img => img.complete && img.naturalWidth > 200")
    page.screenshot(path=str(shots / "ui-run.png"))
    cells = page.locator("table").first.locator("tbody tr td:first-child").all_inner_texts()
    assert [int(c) for c in cells] == rounds, "the run report lists the rounds in order"
    href = page.get_by_role("link", name="clusters").last.get_attribute("href")
    assert href == f"/artifacts/artifact/{arts[f'{RUN}-round-{rounds[-1]:02d}-clusters'].id}", href
    page.goto(ui + href, wait_until="networkidle")
    page.get_by_text("accuracy prev → now").first.wait_for(timeout=30000)
    assert f"{RUN}-round-{rounds[-1]:02d}-clusters" in page.locator("body").inner_text()
    for header in ("what it is", "selected", "probability", "relative change"):
        box = page.locator("th", has_text=header).first.bounding_box()
        assert box and box["x"] + box["width"] <= 1400, f"{header!r} column is off-screen at 1400 px: {box}"
    rows = json.loads(arts[f"{RUN}-round-02-clusters"].data)
    assert {"what it is", "accuracy prev → now", "relative change", "selected", "pool left"} <= set(rows[0])
    assert [r["selected"] for r in rows] == sorted((r["selected"] for r in rows), reverse=True)


def _click_retry(page, ui: str, final) -> None:
    page.goto(f"{ui}/runs/flow-run/{final.id}", wait_until="networkidle")
    page.get_by_role("button", name="Retry").first.click()
    confirm = page.locator(".p-modal").get_by_role("button", name="Retry")
    if confirm.count():
        confirm.first.click()


def _second_make_ui(make_ui: dict, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deployments.ui", "--port", str(make_ui["port"])],
        cwd=REPO,
        env=_ui_env(home, make_ui["runs"]),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
def test_form_run_artifacts_retry_and_second_make_ui(make_ui):
    from playwright.sync_api import sync_playwright

    api_url, runs = make_ui["api_url"], make_ui["runs"]
    ui = api_url.removesuffix("/api")
    dep = _demo_deployment(api_url)
    shots = make_ui["base"] / "screenshots"
    shots.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        _submit_custom_run(page, ui, api_url, dep, shots)
        final = _wait_final(api_url, _flow_run_from_form(api_url, dep).id)
        assert final.state.is_completed(), final.state
        assert final.name.startswith(f"random · {RUN} · budget preset · seed 42 · "), final.name
        summary = json.loads((runs / RUN / "summary.json").read_text())
        assert {r["strategy"] for r in summary["rounds"][2:]} == {"random"}
        rounds = [r["round"] for r in summary["rounds"]]

        expected = {f"{RUN}-summary", f"{RUN}-rounds", f"{RUN}-progress", f"{RUN}-report"}
        expected |= {f"{RUN}-round-{r:02d}-{kind}" for r in rounds for kind in ("summary", "clusters")}
        arts = {a.key: a for a in artifacts(api_url, str(final.id))}
        assert set(arts) == expected
        _check_artifact_pages(page, ui, final, arts, rounds, shots)

        retried_at = client_call(api_url, lambda c: c.read_flow_run(final.id)).state.timestamp
        _click_retry(page, ui, final)
        browser.close()

    again = _wait_final(api_url, final.id, runs=2)
    assert again.state.is_completed(), again.state
    newer = [t for t in task_runs(api_url, str(final.id)) if t.created and t.created > retried_at]
    trains = [t.state.name for t in newer if t.name.startswith("train[")]
    assert len(trains) == len(rounds) and set(trains) == {"Cached"}, trains
    keys = [a.key for a in artifacts(api_url, str(final.id))]
    assert len(keys) == len(set(keys)) and set(keys) == expected, sorted(keys)

    log = next(line for line in _flow_logs(api_url, final.id) if "run directory" in line)
    assert str(runs / RUN) in log

    second = _second_make_ui(make_ui, make_ui["home"])
    assert second.returncode == 2 and "already running" in second.stderr, second.stderr
    other_home = _second_make_ui(make_ui, make_ui["base"] / "other-home")
    assert other_home.returncode == 2 and f"already running on 127.0.0.1:{make_ui['port']}" in other_home.stderr

    target = os.environ.get("PROGRESS_UI_SCREENSHOTS")
    if target:
        for name in ("ui-form.png", "ui-run.png"):
            shutil.copy(shots / name, REPO / target / name)


def _flow_logs(api_url: str, flow_run_id) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    logs = client_call(
        api_url,
        lambda c: c.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
            sort=LogSort.TIMESTAMP_ASC,
            limit=200,
        ),
    )
    return [entry.message for entry in logs]
