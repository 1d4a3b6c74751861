"""The wheel installs project-named top-level packages, and a site with foreign ``cli`` or ``tasks``
packages keeps a working ``progress`` command (docs/architecture.md#layers)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOP_LEVEL = {"deployments", "flows", "progress_cli", "progress_core", "tasks"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of the sources (the build leaves nothing in the checkout)."""
    out = tmp_path_factory.mktemp("wheel")
    src = out / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for package in TOP_LEVEL:
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        cwd=out,
    )
    (path,) = out.glob("progress_flows-*.whl")
    return path


def test_wheel_holds_only_the_project_packages_and_names_the_cli_package(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        tops = {n.split("/")[0] for n in names if "/" in n and ".dist-info" not in n.split("/")[0]}
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert tops == TOP_LEVEL
    assert "progress = progress_cli.main:main" in entry_points


def test_foreign_cli_and_tasks_packages_do_not_break_progress(wheel, tmp_path):
    site = tmp_path / "site"
    for package in ("cli", "tasks"):
        (site / package).mkdir(parents=True)
        (site / package / "__init__.py").write_text(f"raise ImportError('the foreign {package} package')\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = "from progress_cli.main import main; raise SystemExit(main(['--help']))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "progress" in proc.stdout
    assert "foreign cli" in (site / "cli" / "__init__.py").read_text()
