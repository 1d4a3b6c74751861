"""Which Prefect server ``progress run`` uses, said in its first line: PREFECT_API_URL, else the server of a
running ``make ui`` (found through the lock it holds), else a temporary one."""

from __future__ import annotations

import fcntl

import pytest

from deployments.ui import running_ui_api
from progress_cli.run import prefect_api as command_api


@pytest.fixture
def make_ui_lock(tmp_path, monkeypatch):
    """``write(text, held)``: a ``ui.lock`` in a PREFECT_HOME of the test, held as a running ``make ui`` holds it."""
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    handles = []

    def write(text: str, held: bool) -> None:
        handle = open(tmp_path / "ui.lock", "a+")
        handle.write(text)
        handle.flush()
        if held:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handles.append(handle)

    yield write
    for handle in handles:
        handle.close()


def test_a_running_make_ui_server_is_used_and_named_first(prefect_api, make_ui_lock, capsys):
    from prefect.settings import PREFECT_API_URL

    api_url = prefect_api[0]
    make_ui_lock(f"pid 1, UI {api_url.removesuffix('/api')}\n", held=True)
    assert running_ui_api() == api_url
    with command_api():
        assert PREFECT_API_URL.value() == api_url
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("prefect: the server of `make ui` (UI ") and api_url.removesuffix("/api") in first


def test_a_lock_nobody_holds_or_a_dead_server_is_no_make_ui(make_ui_lock):
    make_ui_lock("pid 1, UI http://127.0.0.1:9\n", held=False)
    assert running_ui_api() is None
    make_ui_lock("", held=True)
    assert running_ui_api() is None


def test_prefect_api_url_wins_and_is_named_first(monkeypatch, capsys):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    with command_api():
        pass
    assert capsys.readouterr().err.splitlines()[0] == "prefect: the server at PREFECT_API_URL=http://127.0.0.1:9/api"


_HEALTHY_SERVER = """
import http.server, sys
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
"""


def test_work_given_to_a_starting_server_runs_once_after_the_spawn_and_before_the_body(tmp_path):
    """``progress run`` imports its flow while the temporary server starts (docs/architecture.md#orchestration)."""
    import sys

    from deployments.setup import _server_process, server_pid_dir

    events = []

    def while_starting() -> None:
        events.append(("starting", len(list(server_pid_dir(tmp_path).glob("*.json")))))

    args = lambda port: [sys.executable, "-c", _HEALTHY_SERVER, str(port)]  # noqa: E731
    with _server_process(args, {}, tmp_path, None, while_starting=while_starting) as api_url:
        events.append(("body", api_url.startswith("http://127.0.0.1:")))
    assert events == [("starting", 1), ("body", True)]


def test_work_given_to_an_existing_server_runs_at_once(monkeypatch, capsys):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    ran = []
    with command_api(while_starting=lambda: ran.append(True)):
        assert ran == [True]
