"""``make ui``'s own bookkeeping without a server: one per PREFECT_HOME, appended logs, a supervised worker."""

from __future__ import annotations

import subprocess
import sys

import deployments.ui as ui


def _exits(code: int, after_s: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", f"import sys, time; time.sleep({after_s}); sys.exit({code})"])


def test_one_make_ui_per_prefect_home(tmp_path, capsys):
    first = ui._lock(tmp_path, "http://127.0.0.1:4200")
    assert first is not None
    assert ui._lock(tmp_path, "http://127.0.0.1:4300") is None
    err = capsys.readouterr().err
    assert "already running" in err and "UI http://127.0.0.1:4200" in err
    first.close()
    again = ui._lock(tmp_path, "http://127.0.0.1:4300")
    assert again is not None
    again.close()


def test_logs_are_appended_with_a_header_per_start(tmp_path):
    log = tmp_path / "logs" / "worker.log"
    for what in ("first", "second"):
        out = ui.open_log(log, what)
        out.write(f"{what} output\n".encode())
        out.close()
    text = log.read_text()
    assert text.count("===== ") == 2 and text.index("first output") < text.index("second")
    assert "\x00" not in text


def test_a_dead_worker_is_restarted_once_then_reported(tmp_path, monkeypatch, capsys):
    started: list[subprocess.Popen] = []

    def fake_start(args, log, env):
        started.append(_exits(4))
        return started[-1]

    monkeypatch.setattr(ui, "start", fake_start)
    procs = {"server": _exits(0, after_s=4.0), "worker": _exits(3)}
    code = ui.supervise(procs, ["worker", "start"], {}, tmp_path, poll_s=0.2)
    out, err = capsys.readouterr()
    assert code == 1, "returns when the server exits"
    assert len(started) == 1 and procs["worker"] is started[0], "restarted exactly once; the live one is tracked"
    assert "exited (code 3); restarting it once" in out
    assert "exited again (code 4) and is not restarted" in err and "the Prefect server exited" in err


def test_a_busy_port_is_refused_with_a_clear_message(capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert ui.port_in_use(port)
        ui._refuse_port(port, f"http://127.0.0.1:{port}/api")
    assert f"port {port} on 127.0.0.1 is used by another program" in capsys.readouterr().err
