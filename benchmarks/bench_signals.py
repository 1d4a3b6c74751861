"""Ctrl-C and SIGTERM in every stage of ``progress run``: exit code, the one error line, and the resume.

For each stage of a tiny run, in the order the run reaches them, ``progress run`` is started held at the
stage's start (``PROGRESS_FAULT=<stage>:start:wait``) and stopped with SIGINT, then again with SIGTERM; each
must exit 130 / 143 with exactly ``error: interrupted during <task>; re-run the same command to resume``.
The next stage's start resumes the run through the interrupted stage, and a last run without a fault must
finish with the same final selection as an uninterrupted run (README "Reliability under faults").

    python benchmarks/bench_signals.py
"""

from __future__ import annotations

import filecmp
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from faultkit import tiny_config  # noqa: E402
from flowkit import run_cli  # noqa: E402

from deployments.setup import temporary_server  # noqa: E402
from tasks.stage import MARKER, read_marker_file  # noqa: E402

SIGNALS = ((signal.SIGINT, "SIGINT", 130), (signal.SIGTERM, "SIGTERM", 143))


def _held(proc: subprocess.Popen, log: Path, stage: str, timeout: float = 300) -> bool:
    """True once the run waits at ``stage``; False when it finished without reaching it."""
    deadline = time.monotonic() + timeout
    while f"fault: waiting at {stage}:start" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            return False
        time.sleep(0.2)
    return True


def interrupt_cell(config: Path, api: tuple[str, Path], logs: Path, stage: str, signum, name: str, code: int) -> dict:
    """One stage x signal: held at the stage's start, signalled, judged by exit code and error lines."""
    log = logs / f"{stage}-{name}.log"
    proc = run_cli(config, *api, log, f"{stage}:start:wait")
    if not _held(proc, log, stage):
        return {"stage": stage, "signal": name, "outcome": "not reached"}
    proc.send_signal(signum)
    try:
        got = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        return {"stage": stage, "signal": name, "outcome": "hung"}
    errors = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    one_line = len(errors) == 1 and errors[0].startswith("error: interrupted during ") and "resume" in errors[0]
    ok = got == code and one_line
    detail = errors[0].removeprefix("error: interrupted during ").split(";")[0] if one_line else f"{got} {errors}"
    return {"stage": stage, "signal": name, "outcome": "loud" if ok else "WRONG", "detail": detail}


def stages_in_run_order(run_dir: Path) -> list[str]:
    """The stages an uninterrupted run computed, in the order it finished them (from their markers)."""
    markers = sorted(run_dir.rglob(MARKER), key=lambda p: p.stat().st_mtime_ns)
    names = [m.record.stage for m in map(read_marker_file, (p.parent for p in markers)) if m is not None]
    return list(dict.fromkeys(names))


def _same_selection(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in (a / "rounds").rglob("*.parquet") if "select" in p.parts)
    return bool(files) and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, temporary_server(home=Path(tmp) / "prefect") as api_url:
        tmp = Path(tmp)
        api = (api_url, tmp / "prefect")
        configs = {}
        for name in ("interrupted", "baseline"):
            configs[name] = tmp / f"{name}.yaml"
            configs[name].write_text(yaml.safe_dump(tiny_config(tmp / name).model_dump(mode="json")))
        assert run_cli(configs["baseline"], *api, tmp / "baseline.log").wait(timeout=600) == 0
        stages = stages_in_run_order(tmp / "baseline")
        cells = [
            interrupt_cell(configs["interrupted"], api, tmp, stage, signum, name, code)
            for stage in stages
            for signum, name, code in SIGNALS
        ]
        final = run_cli(configs["interrupted"], *api, tmp / "final.log").wait(timeout=600)
        resumed = final == 0 and _same_selection(tmp / "interrupted", tmp / "baseline")
    print(f"{'stage':<16}{'SIGINT (130)':>16}{'SIGTERM (143)':>16}  task named")
    for stage in stages:
        row = [c for c in cells if c["stage"] == stage]
        print(f"{stage:<16}" + "".join(f"{c['outcome']:>16}" for c in row) + f"  {row[0].get('detail', '')}")
    wrong = sum(c["outcome"] in ("WRONG", "hung") for c in cells)
    reached = sum(c["outcome"] != "not reached" for c in cells)
    print(
        f"\n{reached} interrupts: {reached - wrong} exited with their code and one line, {wrong} wrong; "
        f"the re-run {'finished with the uninterrupted selection' if resumed else 'DID NOT resume correctly'} "
        f"({time.monotonic() - started:.0f} s)"
    )
    print(f"SUMMARY: bench_signals | interrupts loud | {reached - wrong} of {reached}")
    print(f"SUMMARY: bench_signals | resumed to the same selection | {resumed}")
    return 1 if wrong or not resumed else 0


if __name__ == "__main__":
    sys.exit(main())
