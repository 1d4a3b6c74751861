"""The stage contract shared by every Prefect task of progress-flows (docs/architecture.md#stage-contract).

A stage is a function over explicit inputs that writes its outputs under one directory of the run and
returns a small :class:`StageRecord` (paths, row counts, content hash) instead of big arrays. Its cache
key is the content hashes of its input records, the configuration it reads, its output directory and the
code version of the stage, never the flow run id, so a changed input or knob recomputes exactly the stages
downstream of it. The code version is the source of every project module the stage's module imports,
followed through the import graph (:func:`code_modules`), so no dependency is forgotten.

One rule decides reuse, here and nowhere else:

* A marker file ``.stage.json`` is removed before a stage writes anything and written last, after the
  outputs were renamed into place; it records the size and a streamed content hash of every output file.
* Outputs are reused only when the marker belongs to the same key and every file it names still has its
  size and content (:func:`verify_marker`). Anything else (no marker, another key, a truncated or edited
  file) recomputes the stage and logs why.
* :func:`run_stage` refreshes Prefect's cache whenever the outputs do not verify, and the cache key
  (:func:`stage_cache_key`) gets a one-off suffix for a task called otherwise over such outputs, so a task
  run can be ``Cached`` only over outputs that are intact.

``PROGRESS_FAULT=stage[@n]:point[:mode]`` (points ``start``, ``after_outputs``, ``after_marker``; mode
``raise`` or ``exit``) injects a crash for the fault-injection tests; mode ``wait`` writes
``fault: waiting at stage:point`` to stderr and waits there until a signal stops the run; mode ``fill``
fills the stage directory's disk with ``<out_dir>.disk-filler`` so the stage's own writes hit a real
full disk.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from progress_core.base import keyed_dump
from progress_core.errors import DiskFullError, is_disk_full
from progress_core.io import HASH_NAME, HASHERS, stream_hash, write_json

MARKER = ".stage.json"
RUN_MANIFEST = "run_manifest.json"
STALE_DIR = "stale"
FAULT_ENV = "PROGRESS_FAULT"
PROJECT_PACKAGES = ("progress_core", "tasks", "flows")
FAULT_POINTS = ("start", "after_outputs", "after_marker")
MTIME_SLACK_NS = 1_000_000_000

_log = logging.getLogger("progress.stage")


class StageRecord(BaseModel):
    """What a stage hands downstream: where its outputs are and what they contain."""

    stage: str = Field(description="Stage name, e.g. 'features' or 'train'.")
    out_dir: str = Field(description="Directory holding the stage's outputs.")
    files: dict[str, str] = Field(default_factory=dict, description="Output name -> path.")
    rows: dict[str, int] = Field(default_factory=dict, description="Output name -> row count.")
    content_hash: str = Field("", description="Hash of the outputs' content (or of the key when declared).")
    key: str = Field("", description="Cache key that produced these outputs.")
    fingerprint: str = Field(
        "", description="Facts about inputs outside the outputs (e.g. image files) folded into the content hash."
    )
    meta: dict[str, Any] = Field(default_factory=dict, description="Small stage-specific facts.")

    def path(self, name: str) -> Path:
        """Path of the output called ``name``."""
        return Path(self.files[name])


class OutputCheck(BaseModel):
    """Size and content hash of one output file, as the marker records it."""

    size: int
    hash: str


class Marker(BaseModel):
    """The marker file of a stage directory: its record, and how to tell that its files are intact."""

    record: StageRecord
    outputs: dict[str, OutputCheck] = Field(description="Absolute path -> size and content hash.")
    written: list[str] = Field(default_factory=list, description="Every file the stage wrote under out_dir.")


class InjectedFault(BaseException):
    """A crash injected by ``PROGRESS_FAULT`` (a BaseException, so task retries do not absorb it, as a kill)."""


@dataclass(frozen=True)
class StageEvent:
    """One decision of the stage helper: ``reused`` verified outputs, or ``computed`` them and why."""

    stage: str
    out_dir: str
    action: str
    reason: str


EVENTS: list[StageEvent] = []
_FAULT_COUNTS: Counter = Counter()


def _canonical(value: Any) -> Any:
    if isinstance(value, StageRecord):
        return {"stage": value.stage, "content_hash": value.content_hash}
    if isinstance(value, BaseModel):
        return keyed_dump(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@functools.cache
def _project_root(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).parent


def _module_file(name: str) -> Path | None:
    """Source file of module ``name``: project modules by path, others (e.g. a test module) when loaded."""
    top = name.split(".")[0]
    if top in PROJECT_PACKAGES:
        root = _project_root(top)
        if root is None:
            return None
        base = root.joinpath(*name.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    return Path(path) if path and path.endswith(".py") else None


def _is_project(name: str) -> bool:
    return name.split(".")[0] in PROJECT_PACKAGES and _module_file(name) is not None


@functools.cache
def _direct_imports(name: str) -> frozenset[str]:
    path = _module_file(name)
    if path is None:
        return frozenset()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                found.update(".".join(parts[: i + 1]) for i in range(len(parts)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(m for m in found if m != name and _is_project(m))


@functools.cache
def code_modules(root: str) -> tuple[str, ...]:
    """``root`` and every project module (progress_core, tasks, flows) it imports, directly or not."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_direct_imports(name) - seen)
    return tuple(sorted(seen))


class _WithoutProse(ast.NodeTransformer):
    def visit_Expr(self, node: ast.Expr) -> ast.Expr | None:
        is_text = isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        return None if is_text else node


def source_fingerprint(source: str) -> str:
    """Hash of a module's code without its prose: docstrings, comments, line numbers and layout do not count,
    so editing documentation keeps every cached stage (docs/architecture.md#stage-contract)."""
    tree = _WithoutProse().visit(ast.parse(source))
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


@functools.cache
def _source_hash(module_name: str) -> str:
    path = _module_file(module_name)
    if path is None:
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
        return source_fingerprint(inspect.getsource(module))
    return source_fingerprint(path.read_text(encoding="utf-8"))


def code_version(modules: Iterable[str]) -> str:
    """Hash of the source of ``modules``: editing the code of a stage invalidates its cache."""
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        h.update(name.encode())
        h.update(_source_hash(name).encode())
    return h.hexdigest()[:16]


def compute_key(stage: str, version: str, parameters: dict[str, Any], ignore: Iterable[str] = ()) -> str:
    """Cache key of one stage call: stage, code version and canonicalised parameters."""
    payload = {k: _canonical(v) for k, v in parameters.items() if k not in set(ignore)}
    blob = json.dumps({"stage": stage, "code": version, "params": payload}, sort_keys=True, default=str)
    return f"{stage}-{hashlib.sha256(blob.encode()).hexdigest()[:24]}"


_HASH_MEMO: dict[tuple, str] = {}


def _file_hash(path: Path, st: os.stat_result, algorithm: str = HASH_NAME) -> str:
    memo_key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, algorithm)
    if memo_key not in _HASH_MEMO:
        _HASH_MEMO[memo_key] = stream_hash(path, algorithm=algorithm)
    return _HASH_MEMO[memo_key]


def _hash_as_recorded(path: Path, st: os.stat_result, recorded: str) -> str | None:
    """The file's hash by the algorithm ``recorded`` names (markers of older versions keep verifying), or
    None when this installation cannot compute it."""
    algorithm = recorded.partition(":")[0]
    return _file_hash(path, st, algorithm) if algorithm in HASHERS else None


def _expand(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(q for q in path.rglob("*") if q.is_file() and q.name != MARKER)
    return [path]


def output_checks(files: dict[str, str]) -> dict[str, OutputCheck]:
    """Size and streamed content hash of every file an output names (directories file by file)."""
    out: dict[str, OutputCheck] = {}
    for name in sorted(files):
        for q in _expand(Path(files[name])):
            st = q.stat()
            out[str(q.absolute())] = OutputCheck(size=st.st_size, hash=_file_hash(q, st))
    return out


def outputs_hash(files: dict[str, str], fingerprint: str = "") -> str:
    """Content hash of a stage's output files (directories hashed file by file) and its fingerprint."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode())
        for q in _expand(Path(files[name])):
            h.update(str(q.relative_to(files[name]) if q != Path(files[name]) else "").encode())
            h.update(_file_hash(q, q.stat()).encode())
    if fingerprint:
        h.update(fingerprint.encode())
    return h.hexdigest()[:24]


def read_marker_file(out_dir: str | Path) -> Marker | None:
    """The parsed marker of ``out_dir`` (None when absent or unreadable)."""
    marker = Path(out_dir) / MARKER
    try:
        return Marker.model_validate_json(marker.read_text())
    except (OSError, ValueError):
        return None


def verify_marker(out_dir: str | Path, key: str, hashes: bool = True) -> tuple[Marker | None, str]:
    """The marker of ``out_dir`` if it belongs to ``key`` and every file it names is intact, else the reason.

    Sizes are always checked; content hashes too unless ``hashes`` is false.
    """
    path = Path(out_dir) / MARKER
    if not path.exists():
        return None, "no marker (never run, or stopped before it finished)"
    marker = read_marker_file(out_dir)
    if marker is None:
        return None, "marker unreadable"
    if marker.record.key != key:
        return None, "inputs, settings or code changed since the outputs were written"
    for p, check in marker.outputs.items():
        q = Path(p)
        try:
            st = q.stat()
        except OSError:
            return None, f"output {q.name} is missing"
        if st.st_size != check.size:
            return None, f"output {q.name} has {st.st_size} bytes, the marker recorded {check.size}"
        if hashes and _hash_as_recorded(q, st, check.hash) != check.hash:
            return None, f"output {q.name} changed since it was written (content hash differs)"
    return marker, ""


def read_marker(out_dir: str | Path, key: str) -> StageRecord | None:
    """The record of ``out_dir`` if it was produced by ``key`` and its files are intact."""
    marker, _ = verify_marker(out_dir, key)
    return None if marker is None else marker.record


def _say(message: str) -> None:
    try:
        from prefect.logging import get_run_logger

        get_run_logger().info(message)
    except Exception:
        _log.info(message)


def _fill_disk(out_dir: Path) -> None:
    """Take every free byte of ``out_dir``'s disk (``<out_dir>.disk-filler``) for the full-disk tests."""
    filler = out_dir.with_name(out_dir.name + ".disk-filler")
    with contextlib.suppress(OSError), open(filler, "ab") as f:
        block = b"\0" * (1 << 20)
        while True:
            f.write(block)
            f.flush()
    os.write(2, f"fault: filled the disk with {filler}\n".encode())


@contextlib.contextmanager
def disk_full_named(stage_name: str, out_dir: Path):
    """Turn a full disk inside a stage into one :class:`DiskFullError` line naming the path.

    Writers fail on a full disk in their own words (``OSError``, safetensors' ``SafetensorError``, a rank's
    relayed traceback); the stage knows what it was writing, so the line says where space is missing.
    """
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        where = getattr(exc, "filename", None) or out_dir
        raise DiskFullError(
            f"{stage_name}: no space left on the disk while writing {where}; "
            "free space there and re-run the same command to resume"
        ) from exc


def retry_unless_disk_full(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: a retry cannot help a full disk, so it fails at once with its one line."""
    exc = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return not (isinstance(exc, BaseException) and is_disk_full(exc))


def inject_fault(stage_name: str, point: str, out_dir: Path | None = None) -> None:
    """Crash here when ``PROGRESS_FAULT`` names this stage and point (fault-injection tests only)."""
    spec = os.environ.get(FAULT_ENV, "")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        parts = item.split(":")
        target, where = parts[0], parts[1] if len(parts) > 1 else "start"
        mode = parts[2] if len(parts) > 2 else "raise"
        name, _, nth = target.partition("@")
        if name != stage_name or where != point:
            continue
        _FAULT_COUNTS[(name, point)] += 1
        if nth and _FAULT_COUNTS[(name, point)] != int(nth):
            continue
        if mode == "exit":
            os._exit(137)
        if mode == "fill" and out_dir is not None:
            _fill_disk(out_dir)
            continue
        if mode == "wait":
            os.write(2, f"fault: waiting at {stage_name}:{point}\n".encode())
            while True:
                time.sleep(0.1)
        raise InjectedFault(f"injected fault at {stage_name}:{point}")


def _written_since(out_dir: Path, started_ns: int) -> list[str]:
    """Files under ``out_dir`` modified since ``started_ns``, not descending into other stages' directories."""
    found: list[str] = []
    stack = [out_dir]
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                if not (Path(e.path) / MARKER).exists():
                    stack.append(Path(e.path))
            elif e.name != MARKER and e.stat(follow_symlinks=False).st_mtime_ns >= started_ns:
                found.append(str(Path(e.path).absolute()))
    return sorted(found)


class StageSpec:
    """Static facts about one stage: its name, the code it runs, and which parameters are not inputs."""

    def __init__(
        self,
        name: str,
        module: str,
        extra_modules: Iterable[str] = (),
        ignore: Iterable[str] = (),
        hash_outputs: bool = True,
    ):
        self.name = name
        self.module = module
        self.extra_modules = tuple(extra_modules)
        self.ignore = tuple(ignore)
        self.hash_outputs = hash_outputs

    @property
    def modules(self) -> tuple[str, ...]:
        """Every module whose source is part of the code version (import graph of the stage's module)."""
        return tuple(sorted({*code_modules(self.module), *self.extra_modules}))

    def key(self, parameters: dict[str, Any]) -> str:
        return compute_key(self.name, code_version(self.modules), parameters, self.ignore)


def stage(name: str, modules: Iterable[str] = (), ignore: Iterable[str] = ("progress",), hash_outputs: bool = True):
    """Make ``fn(out_dir=..., **inputs) -> StageRecord`` a stage: keyed, verified, idempotent.

    The code version covers the stage's module and every project module it imports; ``modules`` adds
    modules loaded by name only. ``ignore`` names parameters that do not change the outputs (e.g. a
    progress-bar switch). With ``hash_outputs=False`` the content hash handed downstream is the key itself
    (outputs that are a deterministic function of the inputs but whose bytes may differ between machines,
    e.g. checkpoints); the marker still records and verifies every file.
    """

    def decorate(fn: Callable[..., StageRecord]) -> Callable[..., StageRecord]:
        spec = StageSpec(name, fn.__module__, modules, ignore, hash_outputs)
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> StageRecord:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            params = dict(bound.arguments)
            key = spec.key(params)
            out_dir = Path(params["out_dir"])
            done, reason = verify_marker(out_dir, key)
            if done is not None:
                EVENTS.append(StageEvent(name, str(out_dir), "reused", ""))
                return done.record
            if (out_dir / MARKER).exists():
                _say(f"{name}: recomputing {out_dir}: {reason}")
            EVENTS.append(StageEvent(name, str(out_dir), "computed", reason))
            (out_dir / MARKER).unlink(missing_ok=True)
            with disk_full_named(name, out_dir):
                inject_fault(name, "start", out_dir)
                started = time.time_ns() - MTIME_SLACK_NS
                record = fn(*args, **kwargs)
                inject_fault(name, "after_outputs", out_dir)
                record.key = key
                checks = output_checks(record.files)
                record.content_hash = outputs_hash(record.files, record.fingerprint) if spec.hash_outputs else key
                written = _written_since(out_dir, started) if out_dir.is_dir() else []
                marker = Marker(record=record, outputs=checks, written=written)
                write_json(marker.model_dump(mode="json"), out_dir / MARKER, indent=1)
                inject_fault(name, "after_marker", out_dir)
            return record

        run.stage_spec = spec  # type: ignore[attr-defined]
        run.stage_signature = signature  # type: ignore[attr-defined]
        return run

    return decorate


def _bound(fn: Any, parameters: dict[str, Any]) -> dict[str, Any]:
    bound = fn.stage_signature.bind_partial(**parameters)
    bound.apply_defaults()
    return dict(bound.arguments)


def stage_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Prefect ``cache_key_fn``: the stage key (never the run id), consulting the outputs on disk.

    :func:`run_stage` asks Prefect to refresh the cache whenever the outputs do not verify, so the fresh
    result is stored under the stage key. A task called some other way over outputs that do not verify
    gets a one-off key instead: no stored result matches it, so it runs rather than finishing ``Cached``.
    """
    fn = context.task.fn
    params = _bound(fn, parameters)
    key = fn.stage_spec.key(params)
    if getattr(context.task, "refresh_cache", False):
        return key
    marker, _ = verify_marker(params["out_dir"], key)
    return key if marker is not None else f"{key}-unverified-{uuid.uuid4().hex[:12]}"


def needs_refresh(task: Any, parameters: dict[str, Any]) -> bool:
    """True when the task's outputs for these parameters are missing, damaged or produced by another key."""
    fn = task.fn
    params = _bound(fn, parameters)
    return read_marker(params["out_dir"], fn.stage_spec.key(params)) is None


def _params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()}


def run_stage(task: Any, **params: Any) -> StageRecord:
    """Run a stage task: ``Cached`` only when its outputs verify, otherwise run with a refreshed cache."""
    params = _params(params)
    return task.with_options(refresh_cache=needs_refresh(task, params))(**params)


def submit_stage(task: Any, **params: Any):
    """Submit a stage task to the flow's task runner (e.g. feature shards), under the same reuse rule."""
    params = _params(params)
    return task.with_options(refresh_cache=needs_refresh(task, params)).submit(**params)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def skip_counts(manifest: StageRecord, features: StageRecord | None = None) -> dict[str, int]:
    """Rows left out of the run, by reason: manifest rows dropped in skip mode and unreadable images."""
    report = manifest.meta.get("report") or {}
    counts = {f"manifest: {k}": int(v) for k, v in sorted((report.get("rejected_by_error") or {}).items())}
    if features is not None and features.meta.get("n_image_failures"):
        counts["features: unreadable image (zero image part)"] = int(features.meta["n_image_failures"])
    return counts


def _manifest_entries(records: Iterable[StageRecord | str | Path | None]) -> tuple[list[dict], set[Path]]:
    """One ``run_manifest.json`` entry per verified stage directory (first occurrence wins), and every file
    those stages own, nested stage markers and their outputs included (docs/architecture.md#stage-contract)."""
    current: set[Path] = set()
    entries = []
    seen: set[str] = set()
    for item in records:
        if item is None:
            continue
        out_dir = str(item.out_dir if isinstance(item, StageRecord) else item)
        marker = read_marker_file(out_dir)
        if out_dir in seen or marker is None:
            continue
        seen.add(out_dir)
        record = marker.record
        files = sorted(set(marker.outputs) | set(marker.written))
        current.update(Path(p).resolve() for p in files)
        for nested in Path(out_dir).rglob(MARKER):
            inner = read_marker_file(nested.parent)
            current.add(nested.resolve())
            if inner is not None:
                current.update(Path(p).resolve() for p in (*inner.outputs, *inner.written))
        entries.append(
            {
                "stage": record.stage,
                "out_dir": out_dir,
                "key": record.key,
                "content_hash": record.content_hash,
                "files": files,
            }
        )
    return entries, current


def _move_stale(run: Path, roots: list[Path], current: set[Path]) -> tuple[list[str], Path]:
    """Move every file under ``roots`` that is not in ``current`` to ``stale/<time>/`` (same relative path),
    then remove the directories left empty; returns the moved paths relative to ``run`` and the target."""
    stale_root = run / STALE_DIR
    target = stale_root / time.strftime("%Y%m%d-%H%M%S")
    moved: list[str] = []
    for path in sorted(p for root in roots if root.exists() for p in root.rglob("*")):
        if not path.is_file() or _inside(path, stale_root) or path.resolve() in current:
            continue
        rel = path.relative_to(run)
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        moved.append(str(rel))
    dirs = (p for root in roots if root.exists() for p in root.rglob("*"))
    for d in sorted((p for p in dirs if p.is_dir() and not _inside(p, stale_root)), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    return moved, target


def finish_run(
    run_dir: str | Path,
    records: Iterable[StageRecord | str | Path | None],
    keep: Iterable[str | Path] = (),
    sweep: Iterable[str] | None = None,
) -> dict:
    """Write ``run_manifest.json`` (every current output and its key) and move everything else to ``stale/``.

    ``sweep`` limits the move to these subfolders of ``run_dir`` (default: the whole run directory).

    Files under ``run_dir`` that no current stage wrote (round directories beyond a shorter schedule, an
    older export) are moved, never deleted, to ``stale/<time>/`` keeping their relative paths
    (docs/architecture.md#a-round-through-the-files).
    """
    run = Path(run_dir).resolve()
    entries, owned = _manifest_entries(records)
    current: set[Path] = {run / RUN_MANIFEST, *(Path(p).resolve() for p in keep), *owned}
    write_json({"run_dir": str(run), "stages": entries}, run / RUN_MANIFEST, indent=1)
    roots = [run] if sweep is None else [run / name for name in sweep]
    moved, target = _move_stale(run, roots, current)
    return {"manifest": str(run / RUN_MANIFEST), "stale_moved": len(moved), "stale_dir": str(target) if moved else None}
