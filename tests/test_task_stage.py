"""The stage helper's reuse rules (tasks/stage.py) beyond tests/test_stage.py: ignored parameters, input records
keyed by content, checkpoint-like stages, fingerprints, the refresh decision handed to Prefect, the files a
marker records, counted fault injection and nested stages in finish_run
(docs/architecture.md#stage-contract)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

import tasks.stage as stage_mod
from tasks.stage import (
    EVENTS,
    FAULT_ENV,
    MARKER,
    RUN_MANIFEST,
    InjectedFault,
    StageRecord,
    finish_run,
    inject_fault,
    read_marker_file,
    run_stage,
    stage,
    stage_cache_key,
    submit_stage,
    verify_marker,
)

CALLS: list[str] = []


@stage("echo")
def echo(source: StageRecord, text: str, out_dir: str, progress: bool = False, note: str = "") -> StageRecord:
    CALLS.append(text)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "echo.txt").write_text(text + source.content_hash)
    (out / "log.txt").write_text("side file")
    return StageRecord(stage="echo", out_dir=out_dir, files={"echo": str(out / "echo.txt")}, fingerprint=note)


@stage("blob", hash_outputs=False, ignore=("verbose",))
def blob(text: str, out_dir: str, verbose: bool = False) -> StageRecord:
    CALLS.append(text)
    out = Path(out_dir) / "ckpt.bin"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(f"{text}-{len(CALLS)}".encode())
    return StageRecord(stage="blob", out_dir=out_dir, files={"ckpt": str(out)})


def _src(content_hash: str = "c1", out_dir: str = "/a") -> StageRecord:
    return StageRecord(stage="src", out_dir=out_dir, content_hash=content_hash, meta={"anything": 1})


@pytest.fixture(autouse=True)
def _calls():
    CALLS.clear()


def test_ignored_parameters_do_not_change_the_key_others_do(tmp_path):
    out = str(tmp_path / "echo")
    first = echo(_src(), "hi", out)
    assert echo(_src(), "hi", out, progress=True).key == first.key and CALLS == ["hi"], "progress is ignored"
    assert echo(_src(), "hi", out, note="n").key != first.key and CALLS == ["hi", "hi"]
    assert blob("x", str(tmp_path / "b")).key == blob("x", str(tmp_path / "b"), verbose=True).key
    assert CALLS == ["hi", "hi", "x"]


def test_input_records_are_keyed_by_their_content_hash_only(tmp_path):
    out = str(tmp_path / "echo")
    first = echo(_src("c1", "/a"), "hi", out)
    moved = _src("c1", "/b").model_copy(update={"meta": {"other": 2}, "files": {"x": "/y"}})
    assert echo(moved, "hi", out).key == first.key and CALLS == ["hi"]
    assert echo(_src("c2"), "hi", out).key != first.key and CALLS == ["hi", "hi"]


def test_out_dir_is_part_of_the_key(tmp_path):
    a = echo(_src(), "hi", str(tmp_path / "a"))
    b = echo(_src(), "hi", str(tmp_path / "b"))
    assert a.key != b.key and a.content_hash == b.content_hash and CALLS == ["hi", "hi"]


def test_fingerprint_reaches_the_content_hash(tmp_path):
    plain = echo(_src(), "hi", str(tmp_path / "a"))
    noted = echo(_src(), "hi", str(tmp_path / "b"), note="images-v2")
    assert noted.content_hash != plain.content_hash and noted.fingerprint == "images-v2"


def test_checkpoint_stages_hand_their_key_downstream_and_still_verify_files(tmp_path):
    out = str(tmp_path / "b")
    first = blob("x", out)
    assert first.content_hash == first.key
    ckpt = first.path("ckpt")
    ckpt.write_bytes(ckpt.read_bytes().replace(b"x", b"y"))
    assert verify_marker(out, first.key)[0] is None
    assert verify_marker(out, first.key, hashes=False)[0] is not None, "sizes alone cannot see an edit"
    again = blob("x", out)
    assert CALLS == ["x", "x"] and again.content_hash == first.content_hash


def test_a_marker_hashed_with_another_algorithm_still_verifies_and_still_sees_edits(tmp_path):
    from progress_core.io import stream_hash

    out = tmp_path / "e"
    rec = echo(_src(), "x", str(out))
    marker = json.loads((out / MARKER).read_text())
    path = str(out / "echo.txt")
    assert marker["outputs"][path]["hash"].startswith("xxh3_128:")
    marker["outputs"][path]["hash"] = stream_hash(path, algorithm="blake2b-128")
    (out / MARKER).write_text(json.dumps(marker))
    assert verify_marker(out, rec.key)[0] is not None
    echo(_src(), "x", str(out))
    assert CALLS == ["x"], "reused, not recomputed"
    Path(path).write_text("y" + Path(path).read_text()[1:])
    assert "content hash differs" in verify_marker(out, rec.key)[1]
    marker["outputs"][path]["hash"] = "md5:0123"
    (out / MARKER).write_text(json.dumps(marker))
    assert "content hash differs" in verify_marker(out, rec.key)[1]


def test_marker_records_outputs_and_every_file_written_but_not_nested_stages(tmp_path):
    out = tmp_path / "echo"
    nested = out / "inner"
    echo(_src(), "inner", str(nested))
    rec = echo(_src(), "outer", str(out))
    marker = read_marker_file(out)
    assert marker.record.key == rec.key and list(marker.outputs) == [str(out / "echo.txt")]
    assert marker.outputs[str(out / "echo.txt")].size == len("outerc1")
    assert marker.written == sorted([str(out / "echo.txt"), str(out / "log.txt")])


class _FakeTask:
    """What run_stage and submit_stage use of a Prefect task: fn, with_options, call and submit."""

    def __init__(self, fn):
        self.fn, self.options, self.calls = fn, [], []

    def with_options(self, **options):
        self.options.append(options)
        return self

    def __call__(self, **params):
        self.calls.append(("call", params))
        return self.fn(**params)

    def submit(self, **params):
        self.calls.append(("submit", params))
        return "future"


def test_run_stage_refreshes_the_cache_exactly_when_outputs_do_not_verify(tmp_path):
    task = _FakeTask(echo)
    out = tmp_path / "echo"
    run_stage(task, source=_src(), text="hi", out_dir=out)
    run_stage(task, source=_src(), text="hi", out_dir=out)
    assert task.options == [{"refresh_cache": True}, {"refresh_cache": False}]
    assert task.calls[0][1]["out_dir"] == str(out), "paths are passed as strings (stable Prefect parameters)"
    (out / "echo.txt").write_text("damaged")
    assert submit_stage(task, source=_src(), text="hi", out_dir=out) == "future"
    assert task.options[-1] == {"refresh_cache": True} and task.calls[-1][0] == "submit"


def test_cache_key_with_refresh_is_the_plain_stage_key(tmp_path):
    params = {"source": _src(), "text": "hi", "out_dir": str(tmp_path / "never-run")}
    refreshing = SimpleNamespace(task=SimpleNamespace(fn=echo, refresh_cache=True))
    plain = SimpleNamespace(task=SimpleNamespace(fn=echo, refresh_cache=False))
    key = stage_cache_key(refreshing, params)
    assert "unverified" not in key and key.startswith("echo-")
    one_off = stage_cache_key(plain, params)
    assert one_off.startswith(key + "-unverified-") and stage_cache_key(plain, params) != one_off
    assert echo(**params).key == key


def test_counted_fault_fires_only_on_the_named_call_and_point(monkeypatch):
    monkeypatch.setattr(stage_mod, "_FAULT_COUNTS", Counter())
    monkeypatch.setenv(FAULT_ENV, "probe@2:after_outputs, train:start")
    inject_fault("probe", "start")
    inject_fault("probe", "after_outputs")
    with pytest.raises(InjectedFault, match="probe:after_outputs"):
        inject_fault("probe", "after_outputs")
    inject_fault("probe", "after_outputs")
    inject_fault("select", "start")
    with pytest.raises(InjectedFault, match="train:start"):
        inject_fault("train", "start")


def test_a_fault_at_start_leaves_no_marker_and_no_recorded_reuse(tmp_path, monkeypatch):
    out = str(tmp_path / "echo")
    echo(_src(), "hi", out)
    monkeypatch.setenv(FAULT_ENV, "echo:start")
    with pytest.raises(InjectedFault):
        echo(_src(), "changed", out)
    assert not (Path(out) / MARKER).exists() and EVENTS[-1].action == "computed"
    monkeypatch.delenv(FAULT_ENV)
    echo(_src(), "hi", out)
    assert CALLS == ["hi", "hi"], "the old outputs are not trusted once their marker is gone"


def test_finish_run_keeps_nested_stage_outputs_and_skips_missing_records(tmp_path):
    run = tmp_path / "run"
    shard = echo(_src(), "shard", str(run / "features" / "shards" / "0"))
    outer = echo(_src(), "features", str(run / "features"))
    stray = run / "features" / "shards" / "1" / "echo.txt"
    stray.parent.mkdir(parents=True)
    stray.write_text("from an older, longer run")
    result = finish_run(run, [outer, None, str(tmp_path / "no-such-stage"), outer])
    stages = json.loads((run / RUN_MANIFEST).read_text())["stages"]
    assert [s["key"] for s in stages] == [outer.key], "each stage once; records without a marker are skipped"
    assert Path(shard.files["echo"]).exists() and (run / "features" / "shards" / "0" / "log.txt").exists()
    assert (run / "features" / "shards" / "0" / MARKER).exists()
    assert not stray.exists() and result["stale_moved"] == 1
    assert (Path(result["stale_dir"]) / "features" / "shards" / "1" / "echo.txt").exists()
