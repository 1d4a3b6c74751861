"""Helpers of the orchestration tests: a small run config, running the CLI in a subprocess against a
temporary Prefect server, and reading task runs and artifacts back through the Prefect client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def small_config(run_dir: Path, **overrides) -> dict:
    """A run that exercises every stage and three selection rounds in well under a minute.

    The tiny model barely learns in 33 steps, so most clusters show no progress; ``explore`` (the default)
    spends the whole budget then, which keeps the number of rounds fixed.
    """
    cfg = {
        "run_dir": str(run_dir),
        "data": {"synthetic_n": 400, "synthetic_n_eval": 0},
        "clustering": {"annotation_k": 8, "selection_k": 20},
        "warmup": {"fractions": [0.2, 0.3]},
        "selection": {"selection_num": 48, "fallback_when_no_progress": "explore"},
        "schedule": {"final_step": 33},
        "training": {"global_batch_size": 8, "num_threads": 2},
        "probe": {"samples_per_cluster": 10},
    }
    for key, value in overrides.items():
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return cfg


def env_for(api_url: str, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_API_URL": api_url,
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
    )
    return env


def write_config(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(config_path: Path, api_url: str, home: Path, log: Path, fault: str | None = None) -> subprocess.Popen:
    """Start ``progress run --config`` in a subprocess (so a test can signal or SIGKILL it), with
    ``PROGRESS_FAULT=fault`` when given (tasks/stage.py's fault injection)."""
    env = env_for(api_url, home)
    env["PYTHONPATH"] = str(REPO)
    if fault:
        env["PROGRESS_FAULT"] = fault
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "progress_cli", "run", "--config", str(config_path)],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def run_to_end(config_path: Path, api_url: str, home: Path, log: Path, timeout: float = 400) -> dict:
    proc = run_cli(config_path, api_url, home, log)
    rc = proc.wait(timeout=timeout)
    assert rc == 0, f"run failed ({rc}):\n{log.read_text()[-4000:]}"
    cfg = yaml.safe_load(config_path.read_text())
    return json.loads((Path(cfg["run_dir"]) / "summary.json").read_text())


def client_call(api_url: str, fn):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            return fn(client)


def task_runs(api_url: str, flow_run_id: str) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    def fn(client):
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200)

    return client_call(api_url, fn)


def artifacts(api_url: str, flow_run_id: str) -> list:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    def fn(client):
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])), limit=200
        )

    return client_call(api_url, fn)


def states_by_stage(runs: list) -> dict[str, list[str]]:
    """``{'train': ['Cached', ...], ...}`` from task-run names like ``train[r=3]``."""
    import re

    def order(r):
        m = re.search(r"r=(\d+)", r.name)
        return (int(m.group(1)) if m else -1, r.name)

    out: dict[str, list[str]] = {}
    for r in sorted(runs, key=order):
        stage = r.name.split("[")[0]
        out.setdefault(stage, []).append(r.state.name if r.state else "?")
    return out


def png_bytes(value: int, size: int = 2) -> bytes:
    """A real ``size`` x ``size`` PNG whose colour follows ``value`` (distinct bytes per value)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), (value % 256, (value * 7) % 256, (value * 13) % 256)).save(out, format="PNG")
    return out.getvalue()
