"""Which stages an edit of each project module re-keys (docs/architecture.md#what-a-key-covers).

For every module of ``progress_core`` and every stage's task module, one line of code is added to the text
of that module (in memory), and every stage's code version (``tasks.stage.code_version`` over
``StageSpec.modules``) is computed with the edited module's source hash and compared with the unedited
one's. The printed Markdown table lists, per edited module, the stages whose key changed. Nothing in the
working tree is modified.

    python scripts/cache_scope.py
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import tasks.stage as stage_mod  # noqa: E402

TASK_MODULES = (
    "tasks.pool",
    "tasks.manifest",
    "tasks.feature_shard",
    "tasks.feature_combine",
    "tasks.feature_import",
    "tasks.clustering",
    "tasks.warmup",
    "tasks.selection",
    "tasks.model_init",
    "tasks.training",
    "tasks.probe",
    "tasks.export",
    "tasks.evaluation",
    "tasks.holdout",
)
EDIT = "\n_CACHE_SCOPE_EDIT = 1\n"


def stage_specs() -> dict[str, object]:
    """Stage label -> spec, one per stage function (the import stage labelled ``features (import)``)."""
    specs = {}
    for name in TASK_MODULES:
        module = importlib.import_module(name)
        for obj in vars(module).values():
            fn = getattr(obj, "fn", obj)
            spec = getattr(fn, "stage_spec", None)
            if spec is not None and fn.__module__ == name:
                label = f"{spec.name} (import)" if name == "tasks.feature_import" else spec.name
                specs[label] = spec
    return specs


def code_versions(specs: dict, hashes: dict[str, str]) -> dict[str, str]:
    """Every stage's code version with each module's source hash taken from ``hashes``."""
    original = stage_mod._source_hash
    stage_mod._source_hash = hashes.__getitem__
    try:
        return {label: stage_mod.code_version(spec.modules) for label, spec in specs.items()}
    finally:
        stage_mod._source_hash = original


def edited_modules(root: Path) -> list[str]:
    """Every module of progress_core (not empty package files) and every stage's task module."""
    core = sorted(
        p for p in (root / "progress_core").rglob("*.py") if p.stat().st_size and "__pycache__" not in p.parts
    )
    names = [".".join(p.relative_to(root).with_suffix("").parts) for p in core]
    return [n for n in names if not n.endswith("__init__")] + list(TASK_MODULES)


def measure() -> list[tuple[str, list[str]]]:
    """(module, stages re-keyed by a one-line code edit in it) for every module."""
    specs = stage_specs()
    hashes = {m: stage_mod._source_hash(m) for spec in specs.values() for m in spec.modules}
    before = code_versions(specs, hashes)
    rows = []
    for module in edited_modules(REPO):
        path = REPO.joinpath(*module.split(".")).with_suffix(".py")
        edited = stage_mod.source_fingerprint(path.read_text(encoding="utf-8") + EDIT)
        after = code_versions(specs, {**hashes, module: edited})
        rows.append((module, [label for label in specs if after[label] != before[label]]))
    return rows


def table(rows: list[tuple[str, list[str]]]) -> str:
    lines = ["| module edited | stages re-keyed |", "|---|---|"]
    lines += [f"| `{module}` | {', '.join(stages) or '—'} |" for module, stages in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    print(table(measure()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
