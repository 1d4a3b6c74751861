"""Training over two "nodes" on one CPU machine (torchrun c10d rendezvous on 127.0.0.1, gloo): the same numbers
as one node with two processes, a resume that continues them, and a dead node that fails node 0's piece with
its last lines while the retry trains from the last checkpoint (README: Training on two or more nodes)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_model import make_pool, pool_texts

from progress_core.errors import ConfigError
from progress_core.model.config import ModelConfig
from progress_core.model.tiny import build_tiny_model
from progress_core.probe.config import ProbeConfig
from progress_core.run.config import load_config
from progress_core.training.config import TrainingConfig
from progress_core.training.launch import LaunchError, Nodes, _kill_tree, free_port, launch_command
from progress_core.training.loop import train_launched
from progress_core.training.node import NODES_ENV, follow, nodes_from_env


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnodes")
    pool = make_pool(root, n=16)
    cfg = TrainingConfig(
        model=ModelConfig(patch_size=8),
        global_batch_size=4,
        per_device_batch_size=2,
        final_step=10,
        shuffle=False,
        learning_rate=3e-3,
        num_threads=1,
        nproc_per_node=2,
        dist_backend="gloo",
    )
    init = build_tiny_model(pool_texts(pool), cfg.model, root / "init")
    return root, pool, cfg, init


def two_nodes(cfg: TrainingConfig, jobs: Path) -> TrainingConfig:
    return cfg.model_copy(
        update={
            "nnodes": 2,
            "nproc_per_node": 1,
            "rdzv_endpoint": f"127.0.0.1:{free_port()}",
            "rdzv_id": "test",
            "node_jobs_dir": str(jobs),
        }
    )


@pytest.fixture(scope="module")
def one_node(setup, tmp_path_factory):
    """The reference: 1 node x 2 processes, 0 -> 2 on the first 8 rows, then resumed 2 -> 4 on the next 8."""
    root, pool, cfg, init = setup
    out = tmp_path_factory.mktemp("one_node")
    first = train_launched(init, pool.iloc[:8], root / "images", 2, cfg, out / "a", progress=False)
    second = train_launched(first.checkpoint, pool.iloc[8:16], root / "images", 4, cfg, out / "b", progress=False)
    return first, second


def assert_same_run(a, b) -> None:
    assert a.step == b.step and a.samples_seen == b.samples_seen
    np.testing.assert_array_equal(a.losses, b.losses)
    wa, wb = load_file(a.checkpoint / "model.safetensors"), load_file(b.checkpoint / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0)


def test_nnodes_settings_are_refused_in_one_line():
    with pytest.raises(
        ConfigError, match=r"training.nnodes 2 needs training.rdzv_endpoint, training.node_jobs_dir set"
    ) as exc:
        load_config(None, {"training": {"nnodes": 2, "nproc_per_node": 1, "global_batch_size": 8}})
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="training.node_rank 2 is not below training.nnodes 2"):
        load_config(None, {"training": {"nnodes": 2, "node_rank": 2}})
    with pytest.raises(ConfigError, match="rdzv_endpoint must be host:port, got 'trainer-0'"):
        load_config(
            None, {"training": {"nnodes": 2, "nproc_per_node": 1, "rdzv_endpoint": "trainer-0", "node_jobs_dir": "/j"}}
        )
    with pytest.raises(ConfigError, match=r"!= per_device_batch_size 2 x gradient_accumulation_steps 1 x world size 4"):
        ok = {"nnodes": 2, "nproc_per_node": 2, "rdzv_endpoint": "h:1", "node_jobs_dir": "/j"}
        load_config(None, {"training": {**ok, "global_batch_size": 4, "per_device_batch_size": 2,
                                        "gradient_accumulation_steps": 1}})  # fmt: skip
    cfg = load_config(None, {"training": {**ok, "global_batch_size": 8}})
    assert cfg.training_config(5).world_size() == 4


def test_nnodes_launch_command_meets_at_a_c10d_rendezvous_hosted_by_node_0():
    nodes = Nodes(nnodes=2, node_rank=1, endpoint="trainer-0.trainers:29400", rdzv_id="run-step3-ab")
    cmd = launch_command("m:f", "/j/job.json", 8, 1234, "127.0.0.1", nodes)
    assert "--nnodes=2" in cmd and "--rdzv-backend=c10d" in cmd
    assert "--rdzv-endpoint=trainer-0.trainers:29400" in cmd and "--rdzv-id=run-step3-ab" in cmd
    assert "--rdzv-conf=is_host=0" in cmd and not any(a.startswith("--master") for a in cmd)
    host = launch_command("m:f", "/j/job.json", 8, 1234, "127.0.0.1", Nodes(2, 0, "h:1", "x"))
    assert "--rdzv-conf=is_host=1" in host and "--nproc-per-node=8" in host


def _follower(jobs: Path, pieces: int, lines: list[str]) -> threading.Thread:
    thread = threading.Thread(target=follow, args=(jobs, 1), kwargs={"pieces": pieces, "log_line": lines.append})
    thread.start()
    _wait_for(lambda: any("following" in line for line in lines), 30)
    return thread


def _wait_for(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


@pytest.mark.slow
def test_nnodes_two_nodes_train_and_resume_like_one_node_with_two_processes(setup, one_node, tmp_path):
    root, pool, cfg, init = setup
    multi = two_nodes(cfg, tmp_path / "jobs")
    node1: list[str] = []
    node0: list[str] = []
    follower = _follower(tmp_path / "jobs", 2, node1)
    first = train_launched(init, pool.iloc[:8], root / "images", 2, multi, tmp_path / "a", node0.append, False, 120)
    second = train_launched(
        first.checkpoint, pool.iloc[8:16], root / "images", 4, multi, tmp_path / "b", node0.append, False, 120
    )
    follower.join(60)
    assert not follower.is_alive()
    assert_same_run(first, one_node[0])
    assert_same_run(second, one_node[1])
    assert sum("node 0 of 2, 127.0.0.1:" in line for line in node0) == 2
    assert sum("node 1 of 2" in line for line in node1) == 2
    assert any("joined the process group of 2 ranks" in line for line in node1)
    assert not any("failed" in line for line in node1)
    assert not list((tmp_path / "jobs").iterdir())


@pytest.mark.slow
def test_nnodes_a_dead_node_fails_the_piece_with_its_last_lines_and_the_retry_resumes(setup, one_node, tmp_path):
    """Node 1 (its own process tree, as on another machine) is killed once its rank has joined the group;
    node 0's piece fails within its timeout naming node 1's last lines; a retry with a replacement node
    trains from the same checkpoint to the same weights as the uninterrupted run."""
    root, pool, cfg, init = setup
    jobs = tmp_path / "jobs"
    multi = two_nodes(cfg, jobs)
    node1 = subprocess.Popen(
        [sys.executable, "-m", "progress_core.training.node", str(jobs), "--node-rank", "1", "--pieces", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert "following" in node1.stdout.readline()
        errors: list[BaseException] = []

        def node0() -> None:
            try:
                train_launched(one_node[0].checkpoint, pool.iloc[8:16], root / "images", 4, multi, tmp_path / "x",
                               progress=False, timeout_s=90)  # fmt: skip
            except BaseException as exc:  # noqa: BLE001  (the thread hands the error to the test)
                errors.append(exc)

        started = time.monotonic()
        thread = threading.Thread(target=node0)
        thread.start()
        _wait_for(lambda: list(jobs.glob("*/node1.log")), 30)
        log1 = next(jobs.glob("*/node1.log"))
        _wait_for(lambda: "joined the process group" in log1.read_text(), 60)
        _kill_tree(node1.pid)
        thread.join(120)
    finally:
        _kill_tree(node1.pid)
        node1.wait(10)
    assert not thread.is_alive() and time.monotonic() - started < 100
    assert len(errors) == 1 and isinstance(errors[0], LaunchError), errors
    message = str(errors[0])
    assert "run_train_job" in message and "last lines of node 1:" in message
    assert "node 1 of 2" in message.split("last lines of node 1:")[1]
    assert not (tmp_path / "x").exists() and not list(jobs.iterdir())

    lines: list[str] = []
    follower = _follower(jobs, 1, lines)
    retry = train_launched(
        one_node[0].checkpoint,
        pool.iloc[8:16],
        root / "images",
        4,
        multi,
        tmp_path / "x",
        progress=False,
        timeout_s=120,
    )
    follower.join(60)
    assert_same_run(retry, one_node[1])


REPO = Path(__file__).resolve().parent.parent


def _rendered_job(nodes: int) -> dict:
    """The GPU pool's Job for one flow run, as Prefect's kubernetes worker renders the job template."""
    from prefect.utilities.templating import apply_values

    template = json.loads((REPO / "deployments" / "gpu-job-template.json").read_text())
    values = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
    values.update(nodes=nodes, command="prefect flow-run execute", name="progress", labels={}, env={})
    return apply_values(template["job_configuration"]["job_manifest"], values)


def test_nnodes_job_template_starts_an_indexed_job_whose_pods_find_node_0(tmp_path):
    """Two pods of one indexed Job: pod 0 runs the flow (the worker's command), pod 1 the node follower;
    both read the same node settings, which give the trainer the c10d endpoint <job>-0.<service>."""
    job = _rendered_job(2)
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 2
    assert spec["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    pod = spec["template"]["spec"]
    service = json.loads((REPO / "deployments" / "trainer-service.json").read_text())
    assert pod["subdomain"] == service["metadata"]["name"] == "progress-trainers"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    resolved = env["PROGRESS_NODES"].replace("$(JOB_NAME)", "progress-abc12")
    cfg = nodes_from_env(
        TrainingConfig(nproc_per_node=4, global_batch_size=128, per_device_batch_size=16), {NODES_ENV: resolved}
    )
    assert (cfg.nnodes, cfg.rdzv_endpoint) == (2, "progress-abc12-0.progress-trainers:29400")
    assert cfg.node_jobs_dir == env["PROGRESS_NODE_JOBS_DIR"].replace("$(JOB_NAME)", "progress-abc12")
    assert cfg.micro_batches(cfg.world_size()) == (16, 1)
    single = nodes_from_env(TrainingConfig(), {NODES_ENV: json.dumps({"nnodes": 1})})
    assert single.nnodes == 1 and _rendered_job(1)["spec"]["completions"] == 1

    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python").write_text('#!/bin/sh\necho "python $*"\n')
    (shim / "python").chmod(0o755)
    assert container["args"] == "prefect flow-run execute"  # the worker splits it into the container's args

    def pod(index: str, args: list[str]) -> str:
        env = {"PATH": f"{shim}:/usr/bin:/bin", "JOB_COMPLETION_INDEX": index, "PROGRESS_NODE_JOBS_DIR": "/d/j"}
        return subprocess.run([*container["command"], *args], env=env, capture_output=True, text=True).stdout.strip()

    assert pod("0", ["echo", "the", "flow"]) == "the flow"
    assert pod("1", shlex.split(container["args"])) == "python -m progress_core.training.node /d/j --node-rank 1"


def test_nnodes_come_from_the_job_and_bad_settings_are_one_line():
    env = {NODES_ENV: json.dumps({"nnodes": 2, "rdzv_endpoint": "j-0.s:29400", "node_jobs_dir": "/data/nj/j"})}
    with pytest.raises(ConfigError, match=r"^PROGRESS_NODES: training.nnodes 2 needs training.nproc_per_node set$"):
        nodes_from_env(TrainingConfig(), env)
    with pytest.raises(ConfigError, match="PROGRESS_NODES must be a JSON object"):
        nodes_from_env(TrainingConfig(), {NODES_ENV: "two"})
    own = TrainingConfig(nnodes=3, nproc_per_node=1, rdzv_endpoint="h:1", node_jobs_dir="/x", global_batch_size=6)
    assert nodes_from_env(own, env) is own
    probe = nodes_from_env(ProbeConfig(nproc_per_node=2), env)
    assert (probe.world_size(), probe.rdzv_endpoint, probe.node_jobs_dir) == (4, "j-0.s:29400", "/data/nj/j")
