"""Start a job as one process per device with ``torch.distributed.run`` (``docs/architecture.md#orchestration``).

A Prefect task (or the CLI) calls :func:`launch` with a ``module:function`` target and a job file; the
launcher starts ``nproc_per_node`` ranks on this node with a free ``MASTER_ADDR``/``MASTER_PORT``, every
rank joins the process group (``nccl`` on GPUs, ``gloo`` on CPU) before the target runs, and the ranks'
output is streamed line by line to the caller's log. DeepSpeed and the trainer then find the launcher's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) instead of falling back to MPI discovery.

A rank that fails writes its traceback to ``rank<N>.error`` beside the job file; a non-zero exit of the
job raises :class:`LaunchError` carrying the first failing rank's last error lines.

Over several nodes (:class:`Nodes`; README: Training on two or more nodes) every node's launcher is started
with the same node count, c10d rendezvous endpoint and rendezvous id, and the job file lies in a directory all
nodes read; each node also writes its output to ``node<K>.log`` there, so a node that dies without an error
file still shows its last lines in node 0's :class:`LaunchError`.

Run as ``python -m progress_core.training.launch <module:function> <job file>`` this module is the rank's entry point.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from progress_core.errors import ConfigError, ProgressError

log = logging.getLogger(__name__)

BACKEND_ENV = "PROGRESS_DIST_BACKEND"
ERROR_LINES = 25


class LaunchError(ProgressError):
    """A launched multi-process job exited non-zero; the message holds the failing rank's last error lines."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def resolve_backend(backend: Literal["auto", "nccl", "gloo"] = "auto") -> str:
    """``nccl`` when CUDA devices are visible, ``gloo`` otherwise (unless named explicitly)."""
    if backend != "auto":
        return backend
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


@dataclasses.dataclass(frozen=True)
class Nodes:
    """Where this launcher sits in a job over several nodes (README: Training on two or more nodes).

    Every node runs ``torch.distributed.run`` with the same ``nnodes``, ``endpoint`` and ``rdzv_id``; the c10d
    rendezvous (hosted by node 0's launcher at ``endpoint``) forms the group, so no node list is kept here.
    """

    nnodes: int = 1
    node_rank: int = 0
    endpoint: str | None = None
    rdzv_id: str | None = None


def launch_command(
    target: str, job: str | os.PathLike, nproc_per_node: int, port: int, host: str, nodes: Nodes | None = None
) -> list[str]:
    """The ``torch.distributed.run`` command line: one node with a free master port, or this node's share of a
    job over ``nodes.nnodes`` nodes that meet at a c10d rendezvous (which numbers the ranks itself: torchrun
    ignores ``--node-rank`` there, so only node 0's ``is_host`` is passed)."""
    if nodes is None or nodes.nnodes == 1:
        where = ["--nnodes=1", f"--master-addr={host}", f"--master-port={port}"]
    else:
        where = [
            f"--nnodes={nodes.nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={nodes.endpoint}",
            f"--rdzv-id={nodes.rdzv_id}",
            f"--rdzv-conf=is_host={int(nodes.node_rank == 0)}",
        ]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *where,
        f"--nproc-per-node={nproc_per_node}",
        "--max-restarts=0",
        "-m",
        "progress_core.training.launch",
        target,
        str(job),
    ]


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant (ranks may sit in process groups of their own)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _error_report(job_dir: Path, tail: collections.deque) -> tuple[str, str]:
    """(which rank, its last error lines): the first rank to fail, else the output's tail.

    The first error file written is the cause; ranks failing after it usually report a lost peer.
    """

    def order(path: Path) -> tuple[int, int]:
        rank = path.stem[4:]
        return path.stat().st_mtime_ns, int(rank) if rank.isdigit() else 1 << 30

    files = sorted(job_dir.glob("rank*.error"), key=order)
    if files:
        lines = files[0].read_text(errors="replace").splitlines()
        return f"rank {files[0].stem[4:]}", "\n".join(lines[-ERROR_LINES:])
    return "the launcher", "\n".join(list(tail)[-ERROR_LINES:])


def _other_nodes_report(job_dir: Path, node_rank: int) -> str:
    """The last lines every other node's launcher wrote to ``node<K>.log`` beside the job (a shared directory):
    a node that died leaves no error file, only the output it had printed."""
    parts = []
    for path in sorted(job_dir.glob("node*.log")):
        rank = path.stem[4:]
        if rank.isdigit() and int(rank) != node_rank:
            with contextlib.suppress(OSError):
                lines = path.read_text(errors="replace").splitlines()[-ERROR_LINES:]
                parts.append(f"\nlast lines of node {rank}:\n" + "\n".join(lines))
    return "".join(parts)


def launch(
    target: str,
    job: str | os.PathLike,
    nproc_per_node: int,
    backend: Literal["auto", "nccl", "gloo"] = "auto",
    log_line: Callable[[str], None] | None = None,
    env: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    timeout_s: float | None = None,
    nodes: Nodes | None = None,
) -> None:
    """Run ``target(job)`` on ``nproc_per_node`` ranks; return when all exited 0, else raise :class:`LaunchError`.

    With ``nodes`` this is one node's share of a job over several nodes: every node calls this with the same
    job file (in a directory all of them read), its output also goes to ``node<K>.log`` there, and a failure
    reports the first failing rank and the other nodes' last lines. With ``timeout_s`` the whole job (launcher
    and ranks) is killed after that many seconds, e.g. when a collective or the rendezvous waits forever.
    """
    if nproc_per_node < 1:
        raise ConfigError(f"nproc_per_node must be >= 1, got {nproc_per_node}")
    nodes = nodes or Nodes()
    job = Path(job)
    if nodes.node_rank == 0:
        for stale in job.parent.glob("rank*.error"):
            stale.unlink()
    port = free_port(host)
    cmd = launch_command(target, job, nproc_per_node, port, host, nodes)
    child_env = _rank_env(env, backend, nproc_per_node)
    where = f"{host}:{port}" if nodes.nnodes == 1 else f"node {nodes.node_rank} of {nodes.nnodes}, {nodes.endpoint}"
    emit = _node_log(log_line or log.info, job.parent / f"node{nodes.node_rank}.log" if nodes.nnodes > 1 else None)
    emit(f"launching {target} on {nproc_per_node} process(es), {child_env[BACKEND_ENV]}, {where}")
    tail: collections.deque = collections.deque(maxlen=200)
    code, timed_out = _run_streaming(cmd, child_env, emit, tail, timeout_s)
    others = _other_nodes_report(job.parent, nodes.node_rank) if nodes.nnodes > 1 else ""
    if timed_out:
        lines = "\n".join(list(tail)[-ERROR_LINES:])
        raise LaunchError(f"{target} did not finish within {timeout_s:g} s and was stopped:\n{lines}{others}")
    if code != 0:
        where, lines = _error_report(job.parent, tail)
        raise LaunchError(f"{target} failed on {where} (exit code {code}):\n{lines}{others}")


def _node_log(emit: Callable[[str], None], path: Path | None) -> Callable[[str], None]:
    """``emit`` that also appends each line to ``path`` (flushed, so the other nodes see it if this one dies)."""
    if path is None:
        return emit
    path.write_text("")

    def both(line: str) -> None:
        emit(line)
        with contextlib.suppress(OSError), path.open("a") as f:  # node 0 removes the piece's folder when it ends
            f.write(line + "\n")

    return both


def _rank_env(env: dict[str, str] | None, backend: Literal["auto", "nccl", "gloo"], nproc_per_node: int) -> dict:
    """The ranks' environment: ours plus ``env``, the resolved backend, unbuffered output and a fair share of
    the CPU threads per rank (unless ``OMP_NUM_THREADS`` is set)."""
    child_env = {**os.environ, **(env or {}), BACKEND_ENV: resolve_backend(backend), "PYTHONUNBUFFERED": "1"}
    child_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc_per_node)))
    return child_env


def _run_streaming(
    cmd: list[str], child_env: dict, emit: Callable[[str], None], tail: collections.deque, timeout_s: float | None
) -> tuple[int, bool]:
    """(exit code, whether it was killed for ``timeout_s``) of ``cmd``, its output lines sent to ``emit``
    and kept in ``tail`` as they arrive.

    The job runs in a session of its own so that a timeout kills the launcher and every rank it started.
    """
    timed_out = threading.Event()
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=child_env,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
    ) as proc:

        def kill() -> None:
            timed_out.set()
            _kill_tree(proc.pid)

        timer = threading.Timer(timeout_s, kill) if timeout_s else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                emit(line)
            code = proc.wait()
        finally:
            if timer is not None:
                timer.cancel()
    return code, timed_out.is_set()


def _worker(target: str, job: str) -> int:
    """One rank: join the process group, run ``target(job)``, record a failure for the launcher. A rank that
    finished waits for the others before the group is torn down: gloo aborts (SIGABRT) a rank whose peer has
    already closed its connections, which would fail a piece whose checkpoint is complete."""
    import torch
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    error_file = Path(job).parent / f"rank{rank}.error"
    try:
        backend = os.environ.get(BACKEND_ENV) or resolve_backend("auto")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
        # One write per line: the ranks share the launcher's pipe, so two ranks' lines never interleave.
        sys.stdout.write(f"[rank {rank}] joined the process group of {dist.get_world_size()} ranks\n")
        sys.stdout.flush()
        module_name, _, func_name = target.partition(":")
        getattr(importlib.import_module(module_name), func_name)(job)
        dist.barrier()
        return 0
    except BaseException:  # noqa: BLE001  (every failure must reach the launcher's report)
        text = traceback.format_exc()
        error_file.write_text(text)
        print(f"[rank {rank}] {text}", file=sys.stderr, flush=True)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python -m progress_core.training.launch <module:function> <job file>", file=sys.stderr)
        sys.exit(2)
    sys.exit(_worker(sys.argv[1], sys.argv[2]))
