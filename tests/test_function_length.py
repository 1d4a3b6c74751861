"""House rule of CONTRIBUTING.md#function-length: no function over 60 lines unless its docstring says why.

A function's length runs from its ``def`` line to its last line, docstring included (what ``ast`` reports).
A function that reads best as one piece states it in its docstring with a sentence starting "Long because".
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCANNED = ("progress_core", "tasks", "flows", "progress_cli", "deployments", "scripts", "benchmarks", "tests")
MAX_LINES = 60
REASON = "Long because"


def long_functions(root: Path, folders=SCANNED, max_lines: int = MAX_LINES) -> list[str]:
    """``path:line name (N lines)`` for every function longer than ``max_lines`` without a stated reason."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                length = node.end_lineno - node.lineno + 1
                if length > max_lines and REASON not in (ast.get_docstring(node) or ""):
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_long_without_a_reason():
    found = long_functions(REPO)
    assert not found, (
        f"functions over {MAX_LINES} lines; split them or say '{REASON} ...' in the docstring "
        "(CONTRIBUTING.md#function-length):\n" + "\n".join(found)
    )


def test_checker_counts_lines_and_honours_a_stated_reason(tmp_path: Path):
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        f"def long_one():\n{body}\n\n\n"
        f'def explained():\n    """Long because it is one table."""\n{body}\n\n\n'
        "def short():\n    return 1\n\n\n"
        "class C:\n    async def method(self):\n" + "\n".join("    " + line for line in body.splitlines()) + "\n"
    )
    assert long_functions(tmp_path, folders=("pkg",)) == [
        "pkg/m.py:1 long_one (61 lines)",
        "pkg/m.py:133 method (61 lines)",
    ]
    assert long_functions(tmp_path, folders=("pkg",), max_lines=62) == []
