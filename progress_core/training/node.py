"""A node other than node 0 of a multi-node training run (README: Training on two or more nodes).

Node 0 runs the flow; each training piece it starts is published as ``<node_jobs_dir>/<rdzv id>/`` with the
job file and ``ready.json`` (the launch settings: processes per node, backend, node count, c10d endpoint,
rendezvous id). Every other node runs ``python -m progress_core.training.node <node_jobs_dir> --node-rank K``,
which joins each published piece with the same ``torch.distributed.run`` rendezvous; the c10d store forms the
group, Kubernetes (an indexed Job) keeps the nodes alive, so nothing here tracks which nodes exist.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import BaseModel, ValidationError

from progress_core.errors import ConfigError
from progress_core.training.launch import LaunchError, Nodes, launch

log = logging.getLogger(__name__)

NODES_ENV = "PROGRESS_NODES"
"""The node settings the Kubernetes Job gives its pods (``deployments/gpu-job-template.json``), as JSON:
``{"nnodes": 2, "rdzv_endpoint": "<job>-0.<service>:29400", "node_jobs_dir": "/data/node-jobs/<job>"}``."""

NODE_FIELDS = ("nnodes", "rdzv_endpoint", "node_jobs_dir")


def nodes_from_env(cfg: BaseModel, env: dict[str, str] | None = None) -> BaseModel:
    """``cfg`` (training or probe settings) on the nodes the engine started: with :data:`NODES_ENV` naming
    more than one node and ``cfg`` on one node, its node count, endpoint and jobs dir come from there (the
    pods' count and addresses are the Job's, known only once it runs); node settings in ``cfg`` win."""
    raw = (os.environ if env is None else env).get(NODES_ENV, "").strip()
    if not raw or getattr(cfg, "nnodes", 1) > 1:
        return cfg
    try:
        given = json.loads(raw)
        nnodes = int(given.get("nnodes", 1))
    except (ValueError, TypeError, AttributeError):
        raise ConfigError(f"{NODES_ENV} must be a JSON object of {', '.join(NODE_FIELDS)}, got {raw!r}") from None
    if nnodes <= 1:
        return cfg
    update = {key: given[key] for key in NODE_FIELDS if key in given and getattr(cfg, key) in (None, 1)}
    try:
        return type(cfg).model_validate({**cfg.model_dump(), **update, "nnodes": nnodes})
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{NODES_ENV}: {reason}") from None


def piece_nodes(nnodes: int, endpoint: str | None, rdzv_prefix: str | None, label: str) -> Nodes:
    """Node 0's place in a piece's job; over several nodes a rendezvous id no earlier attempt used (the
    ``rdzv_prefix``, e.g. the flow run id and round, the piece's ``label``, a fresh suffix), so a retried piece
    never joins a stale group."""
    if nnodes == 1:
        return Nodes()
    rdzv_id = f"{rdzv_prefix or 'progress'}-{label}-{uuid.uuid4().hex[:8]}"
    return Nodes(nnodes=nnodes, node_rank=0, endpoint=endpoint, rdzv_id=rdzv_id)


@contextlib.contextmanager
def piece_dir(nodes: Nodes, jobs_dir: str | os.PathLike | None, scratch: str | os.PathLike | None) -> Iterator[Path]:
    """The job directory of one piece, removed afterwards: ``<jobs_dir>/<rdzv id>`` over several nodes (where
    the other nodes find it), else a fresh directory under ``scratch`` (None = the system's temp dir)."""
    if nodes.nnodes > 1:
        Path(jobs_dir).mkdir(parents=True, exist_ok=True)
        job_dir = Path(jobs_dir) / nodes.rdzv_id
        job_dir.mkdir()
    else:
        job_dir = Path(tempfile.mkdtemp(prefix=".job.", dir=scratch))
    try:
        yield job_dir
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def start_piece(
    target: str,
    job: Path,
    nproc_per_node: int,
    backend: str,
    nodes: Nodes,
    log_line: Callable[[str], None] | None,
    timeout_s: float | None,
) -> None:
    """Node 0's share of ``target(job)``; over several nodes ``ready.json`` is published first, so the other
    nodes' :func:`follow` start the same launch."""
    if nodes.nnodes > 1:
        spec = {"target": target, "nproc_per_node": nproc_per_node, "backend": backend}
        write_atomic(job.parent / "ready.json", json.dumps({**spec, **dataclasses.asdict(nodes)}))
    launch(target, job, nproc_per_node, backend, log_line, timeout_s=timeout_s, nodes=nodes)


def join_piece(job_dir: Path, node_rank: int, log_line: Callable[[str], None], timeout_s: float | None) -> bool:
    """Run this node's share of the piece in ``job_dir``; False (logged, not raised) when it failed, since
    node 0's task reports the failure and its retry publishes a new piece."""
    try:
        spec = json.loads((job_dir / "ready.json").read_text())
        nodes = Nodes(nnodes=spec["nnodes"], node_rank=node_rank, endpoint=spec["endpoint"], rdzv_id=spec["rdzv_id"])
        launch(
            spec["target"],
            job_dir / "job.json",
            spec["nproc_per_node"],
            spec["backend"],
            log_line,
            timeout_s=timeout_s,
            nodes=nodes,
        )
    except (LaunchError, OSError, ValueError, KeyError) as exc:  # a piece node 0 already removed, or that failed
        log_line(f"piece {job_dir.name} failed on this node: {exc}")
        return False
    return True


def follow(
    jobs_dir: str | Path,
    node_rank: int,
    pieces: int | None = None,
    poll_s: float = 0.5,
    log_line: Callable[[str], None] | None = None,
    timeout_s: float | None = None,
) -> int:
    """Join the pieces published in ``jobs_dir`` from now on, oldest first; stop after ``pieces`` of them
    (None = until the process is stopped: the Job ends when node 0's pod succeeds). Returns how many joined
    and finished."""
    emit = log_line or log.info
    jobs = Path(jobs_dir)
    jobs.mkdir(parents=True, exist_ok=True)
    seen = {p.parent.name for p in jobs.glob("*/ready.json")}
    emit(f"node {node_rank} following {jobs} ({len(seen)} earlier piece(s) skipped)")
    done = tried = 0
    while pieces is None or tried < pieces:
        fresh = sorted(
            (t, p.parent)
            for p in jobs.glob("*/ready.json")
            if p.parent.name not in seen and (t := _mtime(p)) is not None
        )
        if not fresh:
            time.sleep(poll_s)
            continue
        job_dir = fresh[0][1]
        seen.add(job_dir.name)
        tried += 1
        done += join_piece(job_dir, node_rank, emit, timeout_s)
    return done


def _mtime(path: Path) -> int | None:
    """When ``path`` was written; None once node 0 has removed its piece."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m progress_core.training.node", description=__doc__.split("\n")[0])
    parser.add_argument("jobs_dir", help="training.node_jobs_dir of the run (a directory every node reads)")
    parser.add_argument("--node-rank", type=int, required=True, help="this node's rank, 1 .. nnodes-1")
    parser.add_argument("--pieces", type=int, default=None, help="stop after this many pieces (default: never)")
    args = parser.parse_args(argv)
    if args.node_rank < 1:
        parser.error(f"--node-rank must be >= 1 (node 0 runs the flow), got {args.node_rank}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    follow(args.jobs_dir, args.node_rank, pieces=args.pieces, log_line=print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
