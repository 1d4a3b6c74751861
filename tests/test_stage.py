"""The stage contract (tasks/stage.py) without a server: keys follow inputs, markers make stages idempotent,
reuse is verified, leftovers go to stale/, and the process hygiene around it."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from pydantic import BaseModel

from progress_core.io import write_json
from tasks.stage import (
    EVENTS,
    FAULT_ENV,
    MARKER,
    RUN_MANIFEST,
    InjectedFault,
    StageRecord,
    finish_run,
    needs_refresh,
    outputs_hash,
    stage,
    stage_cache_key,
    verify_marker,
)

REPO = Path(__file__).resolve().parent.parent

CALLS: list[int] = []


class Knobs(BaseModel):
    scale: int = 2
    label: str = "x"


@stage("double")
def double(source: StageRecord, knobs: Knobs, out_dir: str) -> StageRecord:
    CALLS.append(knobs.scale)
    value = int(Path(source.files["value"]).read_text()) * knobs.scale
    out = Path(out_dir) / "value.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(str(value))
    return StageRecord(stage="double", out_dir=out_dir, files={"value": str(out)})


class _Task:  # what needs_refresh reads from a Prefect task: its wrapped function
    fn = double


def _source(tmp_path: Path, value: int) -> StageRecord:
    p = tmp_path / "src.txt"
    p.write_text(str(value))
    return StageRecord(
        stage="src", out_dir=str(tmp_path), files={"value": str(p)}, content_hash=outputs_hash({"value": str(p)})
    )


def test_outputs_are_reused_until_an_input_or_knob_changes(tmp_path):
    CALLS.clear()
    out = str(tmp_path / "double")
    src = _source(tmp_path, 21)
    first = double(src, Knobs(), out)
    assert Path(first.files["value"]).read_text() == "42" and CALLS == [2]
    assert not needs_refresh(_Task, {"source": src, "knobs": Knobs(), "out_dir": out})
    again = double(src, Knobs(), out)
    assert again.key == first.key and again.content_hash == first.content_hash and CALLS == [2]
    third = double(src, Knobs(scale=3), out)
    assert third.key != first.key and Path(third.files["value"]).read_text() == "63" and CALLS == [2, 3]
    changed = _source(tmp_path, 5)
    assert needs_refresh(_Task, {"source": changed, "knobs": Knobs(scale=3), "out_dir": out})
    assert Path(double(changed, Knobs(scale=3), out).files["value"]).read_text() == "15" and CALLS == [2, 3, 3]


def test_missing_outputs_or_marker_mean_recompute(tmp_path):
    CALLS.clear()
    out = tmp_path / "double"
    src = _source(tmp_path, 1)
    rec = double(src, Knobs(), str(out))
    Path(rec.files["value"]).unlink()
    assert needs_refresh(_Task, {"source": src, "knobs": Knobs(), "out_dir": str(out)})
    double(src, Knobs(), str(out))
    (out / MARKER).unlink()  # a run killed before its marker was written
    double(src, Knobs(), str(out))
    assert CALLS == [2, 2, 2]
    write_json({"garbage": True}, out / MARKER)
    double(src, Knobs(), str(out))
    assert CALLS == [2, 2, 2, 2]


def _events(out: str) -> list[str]:
    return [e.action for e in EVENTS if e.out_dir == out]


def test_a_crash_after_writing_never_leaves_the_old_marker(tmp_path, monkeypatch):
    """Hole 1: a re-run with a new key that dies after writing must not leave the old key's marker."""
    CALLS.clear()
    out = str(tmp_path / "double")
    src = _source(tmp_path, 21)
    assert Path(double(src, Knobs(), out).files["value"]).read_text() == "42"
    monkeypatch.setenv(FAULT_ENV, "double:after_outputs")
    with pytest.raises(InjectedFault):
        double(src, Knobs(scale=3), out)
    assert Path(out, "value.txt").read_text() == "63" and not (Path(out) / MARKER).exists()
    monkeypatch.delenv(FAULT_ENV)
    assert Path(double(src, Knobs(), out).files["value"]).read_text() == "42"
    assert CALLS == [2, 3, 2]


@pytest.mark.parametrize("damage", ["truncate", "flip", "remove"])
def test_damaged_outputs_are_recomputed_not_reused(tmp_path, damage):
    """Hole 2: reuse verifies size and content hash; the Prefect cache key changes over damaged files."""
    CALLS.clear()
    out = str(tmp_path / "double")
    src = _source(tmp_path, 123)
    rec = double(src, Knobs(), out)
    params = {"source": src, "knobs": Knobs(), "out_dir": out}
    ctx = SimpleNamespace(task=SimpleNamespace(fn=double, refresh_cache=False))
    intact = stage_cache_key(ctx, params)
    assert stage_cache_key(ctx, params) == intact and "unverified" not in intact
    value = Path(rec.files["value"])
    if damage == "truncate":
        value.write_text("24")
    elif damage == "flip":
        value.write_text("247")
    else:
        value.unlink()
    marker, reason = verify_marker(out, rec.key)
    assert marker is None and reason
    assert needs_refresh(_Task, params)
    assert stage_cache_key(ctx, params) != intact
    again = double(src, Knobs(), out)
    assert value.read_text() == "246" and CALLS == [2, 2] and again.content_hash == rec.content_hash
    assert EVENTS[-1].action == "computed" and EVENTS[-1].reason == reason
    assert stage_cache_key(ctx, params) == intact


def test_code_version_follows_the_import_graph():
    """Hole 3: the probe's key covers accuracy_table (reached only through accuracy), with no hand list."""
    from tasks.probe import probe_stage
    from tasks.selection import select_stage

    assert "progress_core.probe.accuracy_table" in probe_stage.fn.stage_spec.modules
    assert {"progress_core.selection.strategies", "progress_core.selection.rounds", "tasks.stage"} <= set(
        select_stage.fn.stage_spec.modules
    )
    assert "flows.progress_selection" not in probe_stage.fn.stage_spec.modules


def test_code_version_ignores_prose_but_not_code():
    from tasks.stage import source_fingerprint

    base = 'def f(x):\n    """Why."""\n    return x * 2  # double\n\nLIMIT = 3\n"""The limit."""\n'
    prose = '# new header\n\n\ndef f(x):\n    """Why, said better."""\n    return (x * 2)\n\nLIMIT = 3\n'
    assert source_fingerprint(prose) == source_fingerprint(base)
    for code in (base.replace("x * 2", "x * 3"), base.replace("LIMIT = 3", "LIMIT = 4"), base + "g = f\n"):
        assert source_fingerprint(code) != source_fingerprint(base)


def test_image_fingerprint_sees_changed_images(tmp_path):
    """Hole 3: a fixed or replaced image changes the manifest's fingerprint (size+mtime, or content)."""
    import json
    import os

    from tasks.manifest import image_fingerprint

    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "img" / name).write_bytes(b"\x89PNG" + name.encode())
    pool_json = tmp_path / "pool.json"
    pool_json.write_text(json.dumps([{"id": n, "image": f"{n}.png", "conversations": []} for n in "ab"]))
    pool = StageRecord(stage="pool", out_dir=str(tmp_path), files={"pool_json": str(pool_json)})
    pool.meta["image_root"] = str(tmp_path / "img")
    stat_fp, content_fp = image_fingerprint(pool), image_fingerprint(pool, contents=True)
    target = tmp_path / "img" / "b.png"
    st = target.stat()
    target.write_bytes(b"\x89PNGxxxxx")
    assert image_fingerprint(pool) != stat_fp
    target.write_bytes(b"\x89PNGc.png")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert image_fingerprint(pool) == stat_fp, "size and mtime kept: only content hashing can see it"
    assert image_fingerprint(pool, contents=True) != content_fp


def test_finish_run_lists_current_outputs_and_moves_the_rest_to_stale(tmp_path):
    """Hole 4: run_manifest.json names every current output; leftovers are moved (never deleted)."""
    run = tmp_path / "run"
    src = _source(tmp_path, 2)
    current = double(src, Knobs(), str(run / "rounds" / "r00" / "double"))
    old = double(src, Knobs(scale=5), str(run / "rounds" / "r07" / "double"))
    leftover = run / "rounds" / "r00" / "double" / "Selected_until_99.json"
    leftover.write_text("{}")
    (run / "config.json").write_text("{}")
    result = finish_run(run, [current], keep=[run / "config.json"])
    manifest = json.loads((run / RUN_MANIFEST).read_text())
    assert [s["key"] for s in manifest["stages"]] == [current.key]
    assert Path(current.files["value"]).read_text() == "4" and (run / "config.json").exists()
    assert not leftover.exists() and not Path(old.out_dir).exists()
    stale = Path(result["stale_dir"])
    assert (stale / "rounds" / "r07" / "double" / "value.txt").read_text() == "10"
    assert (stale / "rounds" / "r00" / "double" / "Selected_until_99.json").exists()
    assert result["stale_moved"] == 3


def test_outputs_get_the_umask_mode(tmp_path):
    """Hole 9: atomically written files are readable by the group/others the umask allows, not 0600."""
    old = os.umask(0o022)
    try:
        write_json({"a": 1}, tmp_path / "x.json")
        assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_environment_defaults_live_in_one_place(monkeypatch):
    """Hole 9: CLI, deployments and tests share the defaults, including a start-up timeout for loaded hosts."""
    from deployments.setup import prefect_env
    from progress_core.environment import DEFAULTS, apply_defaults

    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", raising=False)
    env = apply_defaults({})
    assert int(env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]) >= 60
    assert env["HF_HUB_OFFLINE"] == "1" and env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert all(prefect_env()[k] == os.environ.get(k, v) for k, v in DEFAULTS.items())


_SERVER_SCRIPT = """
import sys, time
from deployments.setup import temporary_server
with temporary_server(sys.argv[1]) as url:
    print(url, flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_killed_runs_leave_no_server_behind(tmp_path):
    """Hole 9: two servers start side by side; after SIGKILL of their owners the next start cleans them."""
    from deployments.setup import clean_stale_servers, server_pid_dir

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SERVER_SCRIPT, str(tmp_path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    urls = [p.stdout.readline().strip() for p in procs]
    assert all(u.startswith("http://127.0.0.1:") for u in urls), [
        u + (p.stdout.read() if p.poll() is not None else "") for u, p in zip(urls, procs)
    ]
    pids = [int(f.stem) for f in server_pid_dir(tmp_path).glob("*.json")]
    assert len(pids) == 2
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert all(_alive(pid) for pid in pids), "the servers outlive their SIGKILLed owner"
    assert sorted(clean_stale_servers(tmp_path)) == sorted(pids)
    assert not any(_alive(pid) for pid in pids) and not list(server_pid_dir(tmp_path).glob("*.json"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "progress_cli", *args], cwd=REPO, env=env, capture_output=True, text=True
    )


def test_strategy_typo_fails_first_with_one_line():
    """Holes 6/7: a typo is one line naming the field and the allowed values, before any stage runs."""
    proc = _cli("run", "--set", "selection.strategy=progres", "--run-dir", "/nonexistent-never-created")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "selection.strategy" in lines[0] and "'coincide'" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_validation_lists_every_problem_at_once(tmp_path):
    """Hole 6: missing files and impossible sizes are all reported, one line each, naming field and fix."""
    from progress_core.run.config import load_config
    from progress_core.run.validation import RunValidationError, check_run, validate_run

    cfg = load_config(
        None,
        {
            "run_dir": str(tmp_path / "run"),
            "data": {"synthetic_n": 60},
            "clustering": {"annotation_k": 100},
            "selection": {"selection_num": 500},
            "warmup": {"fractions": [0.001, 0.002]},
        },
    )
    problems = check_run(cfg)
    fields = [p.split(":")[0] for p in problems]
    assert fields == [
        "clustering.annotation_k",
        "selection.selection_num",
        "warmup.fractions",
    ], problems
    missing = load_config(None, {"data": {"pool_json": str(tmp_path / "none.json"), "image_root": str(tmp_path / "x")}})
    with pytest.raises(RunValidationError) as err:
        validate_run(missing)
    lines = str(err.value).splitlines()
    assert [line.split(":")[0] for line in lines] == ["data.pool_json", "data.image_root"]


def test_run_errors_are_one_line_each_without_traceback(tmp_path):
    """Hole 7: `progress run` with bad inputs prints one line per problem and exits 1; --debug adds the trace."""
    args = ("run", "--run-dir", str(tmp_path / "r"), "--set", f"data.pool_json={tmp_path / 'none.json'}")
    proc = _cli(*args, "--set", "clustering.annotation_k=0")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert [line.startswith("error: ") for line in proc.stderr.strip().splitlines()] == [True], proc.stderr
    proc = _cli(*args)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f"error: data.pool_json: file not found: {str(tmp_path / 'none.json')!r}; fix the path, or leave it empty "
        "for the bundled synthetic pool"
    ]
    assert "Traceback" in _cli(*args, "--debug").stderr


def test_empty_pool_is_a_named_error_and_skip_is_the_default(tmp_path, capsys):
    """Hole 7: every image missing in skip mode (the default of `progress manifest`) is EmptyPoolError."""
    from progress_cli.main import main

    pool = tmp_path / "pool.json"
    turns = [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]
    pool.write_text(json.dumps([{"id": str(i), "image": f"{i}.png", "conversations": turns} for i in range(3)]))
    (tmp_path / "img").mkdir()
    assert main(["manifest", str(pool), "--images", str(tmp_path / "img"), "--out", str(tmp_path / "m.parquet")]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "no usable rows" in err[0] and "MissingImageError 3" in err[0]


def test_skip_counts_by_reason():
    """Hole 7: the run summary gets skip counts by reason (manifest rejects and unreadable images)."""
    from tasks.stage import skip_counts

    manifest = StageRecord(stage="manifest", out_dir="m", meta={"report": {"rejected_by_error": {"TurnOrderError": 2}}})
    features = StageRecord(stage="features", out_dir="f", meta={"n_image_failures": 3})
    assert skip_counts(manifest, features) == {
        "manifest: TurnOrderError": 2,
        "features: unreadable image (zero image part)": 3,
    }


def test_select_rejects_accuracy_tables_of_another_clustering(tmp_path, capsys):
    """Hole 8: cluster ids unknown to the annotation (or missing for selected samples) are a named error."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from progress_cli.main import main
    from progress_core.id_sets import write_ids

    cids = np.repeat(np.arange(3), 10)
    pq.write_table(pa.table({"sample_id": np.arange(30), "cluster_id": cids}), tmp_path / "clusters.parquet")
    write_ids(np.arange(10, 30), tmp_path / "remaining.parquet")
    write_ids(np.arange(0, 10), tmp_path / "selected.parquet")
    table = {"cluster_id": [0, 7, 9], "n": [4] * 3, "correct": [2] * 3, "unjudged": [0] * 3, "accuracy": [0.5] * 3}
    pd.DataFrame(table).to_parquet(tmp_path / "other.parquet")
    base = [
        "select",
        "--clusters",
        str(tmp_path / "clusters.parquet"),
        "--remaining",
        str(tmp_path / "remaining.parquet"),
    ]
    base += ["--set", "selection.selection_num=5", "--out", str(tmp_path / "new.parquet")]
    base += ["--acc-prev", str(tmp_path / "other.parquet")]
    assert main([*base, "--acc-now", str(tmp_path / "other.parquet")]) == 1
    err = capsys.readouterr().err
    assert "unknown cluster ids 7, 9" in err and not (tmp_path / "new.parquet").exists()
    pd.DataFrame({k: v[:2] for k, v in table.items()} | {"cluster_id": [1, 2]}).to_parquet(tmp_path / "mine.parquet")
    now = ["--acc-now", str(tmp_path / "mine.parquet"), "--selected", str(tmp_path / "selected.parquet")]
    assert main([*base[:-2], "--acc-prev", str(tmp_path / "mine.parquet"), *now]) == 1
    assert "missing cluster ids of selected samples 0" in capsys.readouterr().err


def _flow_coincide_selection(cfg, run: Path, budget: int) -> tuple[StageRecord, StageRecord]:
    """The flow's stages up to the first coincide round (warm-up W1, W2, then ``budget`` picked): the pool and
    that round's commit. The order's size follows the flow's rule (``progress_core.selection.schedule.coincide_budget``)."""
    from faultkit import data_stages

    from progress_core.selection.schedule import coincide_budget, planned_final_step
    from tasks.selection import commit_warmup_stage, select_stage
    from tasks.warmup import coincide_order_stage

    data = data_stages(cfg, run)
    n = data["manifest"].rows["manifest"]
    pools = data["warmup_pools"]
    warmup = (pools.rows["w1"], pools.rows["w2"])
    order = coincide_order_stage.fn(
        features=data["features"],
        selection_clusters=data["selection"],
        budget=coincide_budget(planned_final_step(cfg, n, warmup), cfg.training.global_batch_size, n, warmup),
        settings=cfg.warmup,
        out_dir=str(run / "c"),
    )
    commit = None
    for r, name in enumerate(("w1", "w2")):
        commit = commit_warmup_stage.fn(
            pools=data["warmup_pools"],
            pool_name=name,
            selected_before=commit,
            remaining_before=commit,
            n_samples=n,
            round_index=r,
            step=r,
            out_dir=str(run / f"r{r}"),
        )
    flow_new = select_stage.fn(
        settings=cfg.selection,
        budget=budget,
        seed=cfg.seed,
        annotation=data["annotation"],
        selected_before=commit,
        remaining_before=commit,
        acc_prev=None,
        acc_now=None,
        coincide_order=order,
        n_samples=n,
        round_index=2,
        step=2,
        out_dir=str(run / "r2"),
    )
    return data["pool"], flow_new


def _stage_commands(pool: StageRecord, config: Path, hand: Path, budget: int) -> list[list[str]]:
    """``progress manifest``, ``features``, ``cluster`` ×2, ``warmup``, ``select`` in the documented order."""
    use = ["--config", str(config)]
    return [
        ["manifest", pool.files["pool_json"], "--images", pool.meta["image_root"], "--out", str(hand / "m.parquet")],
        ["features", "--manifest", str(hand / "m.parquet"), "--images", pool.meta["image_root"]]
        + ["--out", str(hand / "features.npy"), *use],
        ["cluster", "--features", str(hand / "features.npy"), "--out", str(hand / "c"), "--name", "annotation", *use],
        ["cluster", "--features", str(hand / "features.npy"), "--out", str(hand / "c"), "--name", "selection", *use],
        ["warmup", "--features", str(hand / "features.npy"), "--clusters", str(hand / "c"), "--out", str(hand / "w")]
        + use,
        ["select", "--set", "selection.strategy=coincide", "--set", f"selection.selection_num={budget}"]
        + ["--clusters", str(hand / "c" / "annotation_assignment.parquet")]
        + ["--remaining", str(hand / "w" / "remaining.parquet"), "--coincide-order"]
        + [str(hand / "w" / "coincide_order.parquet"), "--out", str(hand / "new.parquet"), *use],
    ]


@pytest.mark.slow
def test_stage_commands_by_hand_give_the_flows_selection(tmp_path):
    """Hole 5: manifest → features → cluster ×2 → warmup → select, run by hand in the documented order, give
    the flow stages' coincide selection (the warm-up's order.parquet and coincide_order.parquet mean one
    thing each, whoever writes them)."""
    import numpy as np
    from faultkit import tiny_config

    from progress_cli.main import main
    from progress_core.id_sets import read_ids

    cfg = tiny_config(tmp_path / "flow", **{"selection.strategy": "coincide"})
    budget = 16
    pool, flow_new = _flow_coincide_selection(cfg, tmp_path / "flow", budget=budget)

    hand = tmp_path / "hand"
    hand.mkdir()
    config = hand / "run.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    for argv in _stage_commands(pool, config, hand, budget):
        assert main(argv) == 0, argv
    hand_new = read_ids(hand / "new.parquet")
    assert hand_new.size == budget
    np.testing.assert_array_equal(np.sort(hand_new), np.sort(read_ids(flow_new.files["new"])))


@pytest.mark.slow
def test_run_over_a_pool_without_images_is_one_named_error(prefect_api, tmp_path):
    """Hole 7: a pool whose every image is missing (skip mode) ends in EmptyPoolError's line, no traceback."""
    api_url, home = prefect_api
    turns = [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]
    pool = tmp_path / "pool.json"
    pool.write_text(json.dumps([{"id": str(i), "image": f"{i}.png", "conversations": turns} for i in range(80)]))
    (tmp_path / "img").mkdir()
    sets = [f"data.pool_json={pool}", f"data.image_root={tmp_path / 'img'}", "clustering.annotation_k=4"]
    sets += ["clustering.selection_k=8", "selection.selection_num=8", "warmup.fractions=[0.2,0.3]"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home)}
    args = [sys.executable, "-m", "progress_cli", "run", "--run-dir", str(tmp_path / "run")]
    for item in sets:
        args += ["--set", item]
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no usable rows" in errors[0] and "MissingImageError 80" in errors[0]
    assert "Traceback" not in proc.stderr and "ValueError" not in proc.stderr
