"""The layers of docs/architecture.md#layers, checked on the import graph (AST), not by grep.

Every import counts: module level, inside functions, ``if TYPE_CHECKING`` blocks, relative imports, and
``importlib.import_module("...")`` / ``__import__("...")`` calls with a literal name.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("progress_core", "tasks", "flows", "progress_cli", "deployments")

FORBIDDEN: dict[str, frozenset[str]] = {
    "progress_core": frozenset({"flows", "tasks", "progress_cli", "deployments", "prefect"}),
    "tasks": frozenset({"flows", "progress_cli"}),
    "flows": frozenset({"progress_cli"}),
}
"""Top-level package → top-level names its modules must not import."""


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str

    @property
    def top(self) -> str:
        return self.module.split(".")[0]


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve_relative(current: str, is_package: bool, level: int, module: str | None) -> str:
    base = current.split(".") if is_package else current.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _dynamic_target(node: ast.Call) -> str | None:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def imports_of(path: Path, root: Path) -> list[Import]:
    """Every module ``path`` imports, with the line of the import statement."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    current = _module_name(path, root)
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(Import(path, node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append(Import(path, node.lineno, _resolve_relative(current, is_package, node.level, node.module)))
            elif node.module:
                found.append(Import(path, node.lineno, node.module))
        elif isinstance(node, ast.Call):
            target = _dynamic_target(node)
            if target:
                found.append(Import(path, node.lineno, target))
    return found


def python_files(root: Path, package: str) -> list[Path]:
    return sorted(p for p in (root / package).rglob("*.py") if "__pycache__" not in p.parts)


def layering_violations(root: Path, rules: dict[str, frozenset[str]] = FORBIDDEN) -> list[str]:
    """``file:line: package imports module`` for every import that crosses a layer the wrong way."""
    out = []
    for package, forbidden in rules.items():
        for path in python_files(root, package):
            for imp in imports_of(path, root):
                if imp.top in forbidden:
                    rel = path.relative_to(root)
                    out.append(f"{rel}:{imp.line}: {package} must not import {imp.module!r}")
    return out


def test_packages_exist_and_are_scanned():
    for package in PACKAGES:
        files = python_files(REPO, package)
        assert files, f"no Python files found in {package}/"
        assert any(imports_of(p, REPO) for p in files), f"no imports found in {package}/"


def test_layers_are_respected():
    violations = layering_violations(REPO)
    assert not violations, "imports against the layers (docs/architecture.md#layers):\n" + "\n".join(violations)


def test_core_does_not_import_prefect_even_lazily():
    bad = [
        f"{p.relative_to(REPO)}:{i.line}"
        for p in python_files(REPO, "progress_core")
        for i in imports_of(p, REPO)
        if i.top == "prefect"
    ]
    assert bad == []


@pytest.fixture
def tree_with_violations(tmp_path: Path) -> Path:
    files = {
        "progress_core/__init__.py": "",
        "progress_core/ok.py": "import numpy as np\nfrom progress_core.io import write_json\n",
        "progress_core/lazy.py": "def f():\n    from flows.progress_selection import progress_selection\n",
        "progress_core/typed.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import prefect.artifacts\n"
        ),
        "progress_core/dynamic.py": "import importlib\nmod = importlib.import_module('tasks.stage')\n",
        "tasks/__init__.py": "",
        "tasks/rel.py": "from ..progress_cli import main\n",
        "tasks/fine.py": "from . import stage\nfrom progress_core import io\n",
        "flows/__init__.py": "",
        "flows/up.py": "x = 1\nimport progress_cli.run as r\n",
        "flows/fine.py": "from tasks.stage import stage\n",
    }
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_checker_finds_every_kind_of_violation(tree_with_violations: Path):
    found = layering_violations(tree_with_violations)
    assert sorted(found) == sorted(
        [
            "progress_core/lazy.py:2: progress_core must not import 'flows.progress_selection'",
            "progress_core/typed.py:3: progress_core must not import 'prefect.artifacts'",
            "progress_core/dynamic.py:2: progress_core must not import 'tasks.stage'",
            "tasks/rel.py:1: tasks must not import 'progress_cli'",
            "flows/up.py:2: flows must not import 'progress_cli.run'",
        ]
    )


def test_relative_imports_resolve_to_absolute_modules(tree_with_violations: Path):
    path = tree_with_violations / "tasks" / "fine.py"
    assert [i.module for i in imports_of(path, tree_with_violations)] == ["tasks", "progress_core"]


def _project_graph(root: Path) -> dict[str, set[str]]:
    """Module -> project modules it imports (every import, in functions too), by module name."""
    modules = {_module_name(p, root): p for pkg in PACKAGES for p in python_files(root, pkg)}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imp in imports_of(path, root):
            targets |= {m for m in (imp.module, imp.module.rpartition(".")[0]) if m in modules}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets |= {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
        graph[name] = {m for m in targets if m != name and not modules[m].name == "__init__.py"}
    return graph


def import_cycles(root: Path) -> list[list[str]]:
    """Every import cycle between project modules (in-function imports included), each as a path."""
    graph = _project_graph(root)
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return cycles


def test_no_import_cycle_even_through_function_level_imports():
    cycles = import_cycles(REPO)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_cycle_checker_sees_a_cycle_hidden_in_a_function(tmp_path: Path):
    files = {
        "progress_core/__init__.py": "",
        "progress_core/a.py": "from progress_core.b import g\n",
        "progress_core/b.py": "def g():\n    from progress_core import a\n",
        "progress_core/c.py": "import progress_core.a\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    for pkg in PACKAGES[1:]:
        (tmp_path / pkg).mkdir(exist_ok=True)
    assert import_cycles(tmp_path) == [["progress_core.a", "progress_core.b", "progress_core.a"]]


CONFIG_LEAF_MAY_IMPORT = ("progress_core.errors", "progress_core.base")


def test_config_leaves_import_no_algorithm_module():
    """A stage's config leaf (``*/config.py``) imports pydantic, the errors, the strict base and other leaves
    only, so a stage that reads a config is not keyed by algorithm code (docs/architecture.md#layers)."""
    bad = []
    for path in sorted((REPO / "progress_core").glob("*/config.py")):
        if path.parent.name == "run":
            continue
        for imp in imports_of(path, REPO):
            ok = imp.module in CONFIG_LEAF_MAY_IMPORT or imp.module.endswith(".config")
            if imp.top == "progress_core" and not ok:
                bad.append(f"{path.relative_to(REPO)}:{imp.line}: {imp.module}")
    assert not bad, "\n".join(bad)


def test_the_run_config_imports_only_config_leaves():
    """Besides the leaves, only its error formatting (``run/config_errors.py``, which imports no project module)."""
    path = REPO / "progress_core" / "run" / "config.py"
    allowed = (*CONFIG_LEAF_MAY_IMPORT, "progress_core.run.config_errors")
    core = [i.module for i in imports_of(path, REPO) if i.top == "progress_core"]
    assert core and all(m in allowed or m.endswith(".config") for m in core), core
    errors = REPO / "progress_core" / "run" / "config_errors.py"
    assert not [i.module for i in imports_of(errors, REPO) if i.top == "progress_core"]
