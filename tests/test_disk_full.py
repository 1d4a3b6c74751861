"""A full disk while a round writes its checkpoint: one line naming the path, no retry storm, and the same command
resumes once space is freed (README "Reliability under faults").

The run directory lives on a real tmpfs of its own, and ``PROGRESS_FAULT=train@1:start:fill`` takes its last free
byte when the first round's training starts, so the checkpoint write fails as on a real full disk (safetensors'
``SafetensorError``, os error 28).
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest
import yaml

from progress_core.errors import DiskFullError, is_disk_full
from tasks.stage import disk_full_named
from tests.faultkit import tiny_config
from tests.flowkit import client_call, run_cli, task_runs


@pytest.fixture
def small_disk(tmp_path):
    """A 256 MB tmpfs mounted for the test (needs root, as on CI and the development machine)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _run(config: Path, api, log: Path, fault: str | None) -> int:
    return run_cli(config, *api, log, fault).wait(timeout=600)


def _train_run_counts(api_url: str) -> list[int]:
    """Run counts of the train task runs of the server's latest flow run (this test's, which just ended)."""
    from prefect.client.schemas.sorting import FlowRunSort

    runs = client_call(api_url, lambda c: c.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1))
    return [t.run_count for t in task_runs(api_url, str(runs[0].id)) if t.name.startswith("train[")]


def test_full_disk_during_a_checkpoint_write_fails_once_naming_the_path_and_resumes(tmp_path, small_disk, prefect_api):
    run = small_disk / "run"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_config(run).model_dump(mode="json")))
    log = tmp_path / "full.log"
    assert _run(config, prefect_api, log, "train@1:start:fill") == 1, log.read_text()[-3000:]
    errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    assert len(errors) == 1, log.read_text()[-3000:]
    assert "no space left on the disk while writing" in errors[0] and str(run / "rounds") in errors[0], errors
    assert errors[0].endswith("free space there and re-run the same command to resume")
    assert _train_run_counts(prefect_api[0]) == [1], "a full disk is not retried"
    assert not (run / "summary.json").exists()

    fillers = list(run.rglob("*.disk-filler"))
    assert len(fillers) == 1
    fillers[0].unlink()
    again = tmp_path / "again.log"
    assert _run(config, prefect_api, again, None) == 0, again.read_text()[-3000:]
    assert (run / "summary.json").is_file()
    assert "recomputing" in again.read_text() or "train" in again.read_text()


def test_full_disk_is_recognised_however_the_writer_reports_it(tmp_path):
    import errno

    from safetensors import SafetensorError

    relayed = RuntimeError("rank 1 failed:\nOSError: [Errno 28] No space left on device")
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device", "/data/x"))
    assert is_disk_full(
        SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )
    )
    assert is_disk_full(relayed)
    wrapped = ValueError("save failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert is_disk_full(wrapped)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied", "/data/x"))
    assert not is_disk_full(ValueError("28 rows"))

    with pytest.raises(DiskFullError, match=r"^train: no space left on the disk while writing /data/x; free"):
        with disk_full_named("train", tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device", "/data/x")
    with pytest.raises(DiskFullError, match=f"while writing {tmp_path};"):
        with disk_full_named("train", tmp_path):
            raise SafetensorError("Error while serializing: I/O error (os error 28)")
    with pytest.raises(PermissionError), contextlib.suppress(DiskFullError):
        with disk_full_named("train", tmp_path):
            raise PermissionError(errno.EACCES, "Permission denied")


def test_a_full_disk_is_not_retried_and_other_failures_are():
    import errno

    from prefect.states import Failed

    from tasks.stage import retry_unless_disk_full

    assert retry_unless_disk_full(None, None, Failed(data=DiskFullError("train: no space left"))) is False
    assert retry_unless_disk_full(None, None, Failed(data=OSError(errno.ENOSPC, "No space left on device"))) is False
    assert retry_unless_disk_full(None, None, Failed(data=RuntimeError("CUDA error: an illegal memory access"))) is True
