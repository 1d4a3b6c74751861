"""``make ui``: a local Prefect server, the work pools, the deployments and one supervised ``cpu`` worker.

Open the printed URL, go to Deployments → progress-demo → Run, and watch the rounds and their artifacts.

- The server's database and results live in ``$PREFECT_HOME`` (default ``./.prefect``); runs started from
  the UI write under ``$PROGRESS_RUNS_DIR`` (default ``./runs``, as for the ``progress`` command line).
- A second ``make ui`` for the same PREFECT_HOME, or with a Prefect server already on the port, stops with a
  message saying where the running UI is; ``--use-running`` deploys to that server instead and starts a
  worker only when its ``cpu`` pool has none online.
- Logs are appended to ``$PREFECT_HOME/logs/{server,worker}.log``, one timestamped header per start.
- A worker that exits is restarted once; if it exits again the command says so loudly and keeps the server
  up so finished runs stay inspectable.
- Ctrl-C (or SIGTERM) stops only the worker and the server this command started.
- While it runs, ``progress run`` / ``demo`` / ``prepare-run`` for the same PREFECT_HOME use its server
  (no temporary server to start; the runs show in this UI).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import IO

from deployments.setup import REPO_ROOT, create_pools, prefect, prefect_env, stop_process_group, wait_healthy

DEPLOYMENTS = ("progress-demo", "compare-strategies", "progress-paper")
POOL = "cpu"
EXIT_IN_USE = 2


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _prefect_bin() -> str:
    candidate = Path(sys.executable).with_name("prefect")
    return str(candidate) if candidate.exists() else "prefect"


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def is_prefect(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


def open_log(path: Path, what: str) -> IO[bytes]:
    """``path`` opened for appending, with a header saying who starts what when."""
    path.parent.mkdir(parents=True, exist_ok=True)
    out = open(path, "ab")
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    out.write(f"\n===== {stamp} make ui (pid {os.getpid()}): {what} =====\n".encode())
    out.flush()
    return out


def start(args: list[str], log: IO[bytes], env: dict[str, str]) -> subprocess.Popen:
    """A prefect subprocess in its own session, so a terminal's Ctrl-C reaches only this command."""
    return subprocess.Popen(
        [_prefect_bin(), *args], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """SIGINT to the process group this command started, SIGKILL after ``timeout``."""
    if proc is not None:
        stop_process_group(proc, timeout)


def online_workers(api_url: str, pool: str) -> list[str]:
    """Names of the workers of ``pool`` the server sees online."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            workers = client.read_workers_for_work_pool(work_pool_name=pool)
    return [w.name for w in workers if str(getattr(w.status, "value", w.status)).upper() == "ONLINE"]


def _loud(message: str) -> None:
    bar = "!" * 78
    print(f"\n{bar}\n{message}\n{bar}\n", file=sys.stderr, flush=True)


def _lock(home: Path, ui_url: str) -> IO[str] | None:
    """An exclusive lock on ``$PREFECT_HOME/ui.lock`` held while this command runs (None: someone holds it)."""
    handle = open(home / "ui.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        print(
            f"make ui: another `make ui` ({holder or 'unknown pid'}) is already running with PREFECT_HOME={home}.\n"
            "  Use its UI, stop it with Ctrl-C in its terminal, or start this one with another PREFECT_HOME.",
            file=sys.stderr,
            flush=True,
        )
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}, UI {ui_url}\n")
    handle.flush()
    return handle


def running_ui_api(home: str | Path | None = None) -> str | None:
    """The API of the server a running ``make ui`` started for ``home`` (default as ``make ui``'s), else None.

    ``make ui`` holds ``ui.lock`` while it runs and writes its UI address there; a lock nobody holds or a
    server that does not answer its health check counts as none.
    """
    path = Path(home or os.environ.get("PREFECT_HOME") or REPO_ROOT / ".prefect").expanduser() / "ui.lock"
    if not path.is_file():
        return None
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = handle.read()
        else:
            return None
    ui_url = text.rsplit("UI ", 1)[-1].strip() if "UI " in text else ""
    api_url = f"{ui_url}/api"
    return api_url if ui_url and is_prefect(api_url) else None


def _refuse_port(port: int, api_url: str) -> None:
    ui_url = api_url.removesuffix("/api")
    if is_prefect(api_url):
        message = (
            f"make ui: a Prefect server is already running on 127.0.0.1:{port} (UI: {ui_url}).\n"
            "  Use that UI, stop it first, pick another port (PROGRESS_UI_PORT=4300 make ui), or deploy to it\n"
            "  and add a worker with `python -m deployments.ui --use-running`."
        )
    else:
        message = (
            f"make ui: port {port} on 127.0.0.1 is used by another program (not a Prefect server).\n"
            "  Pick another port: PROGRESS_UI_PORT=4300 make ui"
        )
    print(message, file=sys.stderr, flush=True)


def _banner(ui_url: str, home: Path, runs: Path, logs: Path, worker: bool) -> str:
    worker_line = "a cpu worker started by this command" if worker else "the cpu worker already online"
    return (
        f"\nPrefect UI: {ui_url}\n"
        f"  trigger a run:  {ui_url}/deployments → progress-demo → Run → Quick run (or Custom run)\n"
        f"  deployments:    progress-demo, compare-strategies (pool cpu: {worker_line});\n"
        "                  progress-paper (pool gpu: needs a kubernetes worker, see README)\n"
        f"  PREFECT_HOME:   {home}\n"
        f"  runs go to:     {runs}  (PROGRESS_RUNS_DIR; the command line also defaults to ./runs)\n"
        f"  logs:           {logs}/server.log, {logs}/worker.log (appended)\n"
        "Ctrl-C stops the worker and the server this command started.\n"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="make ui", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get("PROGRESS_UI_PORT", "4200")))
    parser.add_argument(
        "--home",
        default=os.environ.get("PREFECT_HOME") or str(REPO_ROOT / ".prefect"),
        help="PREFECT_HOME of the server (database, results, logs); default $PREFECT_HOME, else ./.prefect",
    )
    parser.add_argument(
        "--runs-dir",
        default=os.environ.get("PROGRESS_RUNS_DIR") or "runs",
        help="where runs from the UI write (relative run_dir values go under it); default $PROGRESS_RUNS_DIR, "
        "else ./runs",
    )
    parser.add_argument(
        "--use-running",
        action="store_true",
        help="a Prefect server already on the port: deploy to it (and start a worker if its pool has none)",
    )
    return parser


def _serve(
    port: int, use_running: bool, home: Path, api_url: str, logs: Path, procs: dict[str, subprocess.Popen | None]
) -> int | None:
    """Start the server (recorded in ``procs``) or, with ``use_running``, take the one on the port; an exit
    code when neither works out."""
    ui_url = api_url.removesuffix("/api")
    if port_in_use(port):
        if not (use_running and is_prefect(api_url)):
            _refuse_port(port, api_url)
            return EXIT_IN_USE
        print(f"using the Prefect server already running at {ui_url}", flush=True)
        return None
    print(f"starting prefect server on 127.0.0.1:{port} (PREFECT_HOME={home}) ...", flush=True)
    env = prefect_env(None, home)
    env["PREFECT_UI_API_URL"] = api_url
    server_log = open_log(logs / "server.log", f"prefect server on 127.0.0.1:{port}")
    procs["server"] = start(["server", "start", "--host", "127.0.0.1", "--port", str(port)], server_log, env)
    try:
        wait_healthy(api_url)
    except TimeoutError:
        code = procs["server"].poll()
        _loud(f"the Prefect server did not come up (exit code {code}); see {logs / 'server.log'}")
        return 1
    return None


def _deploy_and_start_worker(
    api_url: str, home: Path, runs: Path, logs: Path, procs: dict[str, subprocess.Popen | None]
) -> tuple[list[str], dict[str, str]]:
    """Pools and deployments on the server, and a ``cpu`` worker (recorded in ``procs``) unless the pool of a
    server this command did not start has one online; returns the worker's arguments and environment."""
    create_pools(api_url, gpus=1, with_gpu_pool=True, home=home)
    print("deploying " + ", ".join(DEPLOYMENTS) + " ...", flush=True)
    names = [arg for name in DEPLOYMENTS for arg in ("--name", name)]
    prefect("deploy", *names, api_url=api_url, home=home)
    worker_env = prefect_env(api_url, home)
    worker_env["PROGRESS_RUNS_DIR"] = str(runs)
    worker_args = ["worker", "start", "--pool", POOL, "--type", "process"]
    already = online_workers(api_url, POOL) if procs["server"] is None else []
    if not already:
        procs["worker"] = start(worker_args, open_log(logs / "worker.log", f"worker for pool {POOL}"), worker_env)
    else:
        print(f"pool {POOL} already has a worker online ({', '.join(already)}); not starting another", flush=True)
    return worker_args, worker_env


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    home = Path(args.home).expanduser().resolve()
    runs = Path(args.runs_dir).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    logs = home / "logs"
    api_url = f"http://127.0.0.1:{args.port}/api"
    ui_url = api_url.removesuffix("/api")

    lock = _lock(home, ui_url)
    if lock is None:
        return EXIT_IN_USE
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    procs: dict[str, subprocess.Popen | None] = {"server": None, "worker": None}
    try:
        code = _serve(args.port, args.use_running, home, api_url, logs, procs)
        if code is not None:
            return code
        worker_args, worker_env = _deploy_and_start_worker(api_url, home, runs, logs, procs)
        print(_banner(ui_url, home, runs, logs, procs["worker"] is not None), flush=True)
        return supervise(procs, worker_args, worker_env, logs)
    except KeyboardInterrupt:
        return 0
    finally:
        if any(p is not None and p.poll() is None for p in procs.values()):
            print("\nstopping what this command started ...", flush=True)
        stop(procs["worker"])
        stop(procs["server"])
        lock.close()


def supervise(
    procs: dict[str, subprocess.Popen | None],
    worker_args: list[str],
    worker_env: dict[str, str],
    logs: Path,
    poll_s: float = 1.0,
) -> int:
    """Wait for Ctrl-C; restart a worker that exits once, then say loudly that runs will not start.

    ``procs`` holds what this command started (``server``/``worker``, None when not ours); a restarted
    worker replaces the old one there, so stopping stops the live one.
    """
    restarts = 0
    gave_up = False
    while True:
        time.sleep(poll_s)
        server, worker = procs["server"], procs["worker"]
        if server is not None and server.poll() is not None:
            _loud(f"the Prefect server exited (code {server.returncode}); see {logs / 'server.log'}")
            return 1
        if worker is None or gave_up or worker.poll() is None:
            continue
        code = worker.returncode
        if restarts == 0:
            restarts += 1
            print(f"the {POOL} worker exited (code {code}); restarting it once (see {logs / 'worker.log'})", flush=True)
            log = open_log(logs / "worker.log", f"worker for pool {POOL} (restart)")
            procs["worker"] = start(worker_args, log, worker_env)
            continue
        gave_up = True
        _loud(
            f"the {POOL} worker exited again (code {code}) and is not restarted: runs of progress-demo and\n"
            f"compare-strategies will stay Scheduled/Late. See {logs / 'worker.log'}; the UI stays up for\n"
            "inspecting finished runs. Ctrl-C and `make ui` again once the cause is fixed."
        )


if __name__ == "__main__":
    sys.exit(main())
