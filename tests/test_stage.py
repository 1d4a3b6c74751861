"""The stage contract (tasks/stage.py) without a server: keys follow inputs, markers make stages idempotent."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from progress_core.io import write_json
from tasks.stage import MARKER, StageRecord, needs_refresh, outputs_hash, stage

CALLS: list[int] = []


class Knobs(BaseModel):
    scale: int = 2
    label: str = "x"


@stage("double", modules=["progress_core.io"])
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
