"""Work pools, concurrency limits, deployments and workers for progress-flows.

docs/architecture.md#orchestration: the flow itself stays on CPU; a ``cpu`` process pool runs the demo, a ``gpu`` kubernetes pool
(job template ``deployments/gpu-job-template.json``, image from ``deployments/Dockerfile``) runs real
runs, and the tag concurrency limit ``gpu`` keeps GPU stages to the number of GPUs in that pool.

Usable as a script::

    python -m deployments.setup pools [--gpus N]      # create/update the pools and the gpu limit
    python -m deployments.setup deploy [NAME ...]     # deploy from prefect.yaml (default: progress-demo)

and as a library by ``deployments/ui.py``, ``progress run`` and the tests (server, worker and deploy helpers).

Every temporary server is started in its own process group and noted in a pid file under
``$PREFECT_HOME/progress-servers/``; the next start stops the servers whose owner died (a SIGKILLed run), so
none is left behind (docs/architecture.md#orchestration).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from progress_core.environment import apply_defaults, server_startup_timeout
from progress_core.run.lock import pid_alive

REPO_ROOT = Path(__file__).resolve().parent.parent
GPU_TEMPLATE = REPO_ROOT / "deployments" / "gpu-job-template.json"


def _prefect_bin() -> str:
    candidate = Path(sys.executable).with_name("prefect")
    return str(candidate) if candidate.exists() else "prefect"


def prefect_env(api_url: str | None = None, home: str | Path | None = None) -> dict[str, str]:
    """Environment for prefect subprocesses: analytics off, optional API URL and PREFECT_HOME."""
    env = dict(apply_defaults(dict(os.environ)))
    if api_url:
        env["PREFECT_API_URL"] = api_url
    if home:
        env["PREFECT_HOME"] = str(home)
    return env


def prefect(
    *args: str, api_url: str | None = None, home: str | Path | None = None, check: bool = True, cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess:
    """Run one ``prefect`` CLI command against ``api_url``."""
    env = prefect_env(api_url, home)
    env["PWD"] = str(cwd)
    proc = subprocess.run([_prefect_bin(), "--no-prompt", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(api_url: str, timeout: float | None = None, proc: subprocess.Popen | None = None) -> None:
    """Block until the server answers ``/health`` (``timeout``: the configured start-up timeout)."""
    timeout = server_startup_timeout() if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"Prefect server for {api_url} exited with status {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"Prefect server at {api_url} not healthy after {timeout:.0f}s")


def stop_process_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGINT to ``proc``'s process group, SIGKILL after ``timeout``; nothing when it already ended."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def server_pid_dir(home: str | Path | None = None) -> Path:
    """Folder of the pid files of temporary servers started from ``home`` (default: ``$PREFECT_HOME``)."""
    base = Path(home or os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    return base / "progress-servers"


def _is_server(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return pid_alive(pid)
    return b"prefect" in cmdline or b"uvicorn" in cmdline


def clean_stale_servers(home: str | Path | None = None) -> list[int]:
    """Stop temporary servers whose owning process is gone; returns the pids stopped."""
    stopped = []
    folder = server_pid_dir(home)
    for note in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            info = json.loads(note.read_text())
            pid, owner = int(info["pid"]), int(info["owner"])
        except (OSError, ValueError, KeyError, TypeError):
            note.unlink(missing_ok=True)
            continue
        if pid_alive(owner):
            continue
        if pid_alive(pid) and _is_server(pid):
            _kill_group(pid)
            stopped.append(pid)
        note.unlink(missing_ok=True)
    return stopped


def _kill_group(pgid: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pgid):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pgid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@contextlib.contextmanager
def _server_process(
    make_args,
    env: dict[str, str],
    home: str | Path | None,
    log: Path | None,
    port: int | None = None,
    while_starting: Callable[[], object] | None = None,
) -> Iterator[str]:
    """Start a server in its own process group with a pid file; yield its API URL once it is healthy.

    ``while_starting`` runs once the first server process is spawned, before waiting for it to answer (the
    caller's own imports overlap the server's start-up instead of adding to it).

    A server that exits while starting (another one starting beside it holding the database or the port)
    is started again on a fresh port until the start-up timeout is spent.
    """
    clean_stale_servers(home)
    folder = server_pid_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    out = open(log, "w") if log else subprocess.DEVNULL
    deadline = time.monotonic() + server_startup_timeout()
    proc = note = None
    try:
        while True:
            chosen = port or free_port()
            api_url = f"http://127.0.0.1:{chosen}/api"
            env = {**env, "PREFECT_UI_API_URL": api_url}
            proc = subprocess.Popen(
                make_args(chosen), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            note = folder / f"{proc.pid}.json"
            note.write_text(json.dumps({"pid": proc.pid, "owner": os.getpid(), "api_url": api_url}))
            if while_starting is not None:
                while_starting()
                while_starting = None
            try:
                wait_healthy(api_url, timeout=max(deadline - time.monotonic(), 1.0), proc=proc)
                break
            except RuntimeError:
                note.unlink(missing_ok=True)
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1.0)
        yield api_url
    finally:
        if proc is not None:
            stop_process_group(proc)
        if note is not None:
            note.unlink(missing_ok=True)
        if log:
            out.close()


@contextlib.contextmanager
def prefect_server(home: str | Path, port: int | None = None, log: Path | None = None) -> Iterator[str]:
    """Start ``prefect server start`` on 127.0.0.1 with its own PREFECT_HOME; yield the API URL."""

    def args(chosen: int) -> list[str]:
        return [_prefect_bin(), "server", "start", "--host", "127.0.0.1", "--port", str(chosen)]

    with _server_process(args, prefect_env(None, home), home, log, port) as url:
        yield url


@contextlib.contextmanager
def temporary_server(
    home: str | Path | None = None, log: Path | None = None, while_starting: Callable[[], object] | None = None
) -> Iterator[str]:
    """The API alone (no UI, no background services) for one ``progress run``, as Prefect's ephemeral server.

    Unlike Prefect's own ephemeral server it runs in its own process group with a pid file, so a run killed
    with SIGKILL leaves nothing behind after the next start, and it waits the configured start-up timeout.
    """
    import prefect

    env = prefect_env(None, home)
    env.update({"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"})
    env.pop("PREFECT_API_URL", None)
    app_dir = str(Path(prefect.__file__).parent.parent)

    def args(chosen: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            app_dir,
            "--factory",
            "prefect.server.api.server:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(chosen),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ]

    with _server_process(args, env, home, log, while_starting=while_starting) as url:
        yield url


@contextlib.contextmanager
def prefect_worker(
    pool: str,
    api_url: str,
    home: str | Path | None = None,
    log: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen]:
    """Start ``prefect worker start --pool POOL`` in the repository root; stop it on exit."""
    env = prefect_env(api_url, home)
    env.update(extra_env or {})
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        [_prefect_bin(), "worker", "start", "--pool", pool, "--type", "process"],
        cwd=REPO_ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        stop_process_group(proc)
        if log:
            out.close()


def create_pools(
    api_url: str | None = None, gpus: int = 1, with_gpu_pool: bool = True, home: str | Path | None = None
) -> None:
    """Create (or update) the ``cpu`` process pool, the ``gpu`` kubernetes pool and the ``gpu`` tag limit."""
    prefect("work-pool", "create", "cpu", "--type", "process", "--overwrite", api_url=api_url, home=home)
    if with_gpu_pool:
        prefect(
            "work-pool",
            "create",
            "gpu",
            "--type",
            "kubernetes",
            "--base-job-template",
            str(GPU_TEMPLATE),
            "--overwrite",
            api_url=api_url,
            home=home,
        )
    prefect("concurrency-limit", "delete", "gpu", api_url=api_url, home=home, check=False)
    prefect("concurrency-limit", "create", "gpu", str(gpus), api_url=api_url, home=home)


def deploy(
    names: list[str] | None = None,
    api_url: str | None = None,
    home: str | Path | None = None,
    params: dict | None = None,
) -> None:
    """Deploy from ``prefect.yaml`` in the repository root (default: ``progress-demo``).

    ``params`` overrides the deployment's parameter defaults (what the UI's Quick run uses).
    """
    extra = ["--params", json.dumps(params)] if params else []
    for name in names or ["progress-demo"]:
        prefect("deploy", "--name", name, *extra, api_url=api_url, home=home)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.setup", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    pools = sub.add_parser("pools", help="create the cpu and gpu work pools and the gpu concurrency limit")
    pools.add_argument("--gpus", type=int, default=1, help="GPUs in the gpu pool (= tag concurrency limit 'gpu')")
    pools.add_argument("--no-gpu-pool", action="store_true", help="only the cpu pool")
    dep = sub.add_parser("deploy", help="deploy from prefect.yaml")
    dep.add_argument("names", nargs="*", help="deployment names (default: progress-demo)")
    args = parser.parse_args(argv)
    api_url = os.environ.get("PREFECT_API_URL")
    if args.command == "pools":
        create_pools(api_url, gpus=args.gpus, with_gpu_pool=not args.no_gpu_pool)
    else:
        deploy(args.names, api_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
