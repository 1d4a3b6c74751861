"""The stage contract shared by every Prefect task of progress-flows (DESIGN §3).

A stage is a function over explicit inputs that writes its outputs under one directory of the run and
returns a small :class:`StageRecord` (paths, row counts, content hash) instead of big arrays. Its cache
key is the content hashes of its input records, the configuration it reads, its output directory and the
code version of the stage (the source of the task module and of the ``progress_core`` modules it runs),
never the flow run id, so a changed input or knob recomputes exactly the stages downstream of it.

Two layers make re-runs free and crashes harmless:

* Prefect's cache (``cache_key_fn``): a re-run with the same inputs finishes the task run in the
  ``Cached`` state without executing it.
* A marker file ``.stage.json`` written last, after the outputs were renamed into place. The flow asks
  Prefect to refresh the cache when the marker is missing or belongs to another key (outputs deleted or
  overwritten), and the task itself returns the marker's record when its outputs are already there (e.g.
  Prefect's result storage was reset). A task killed half-way leaves no marker, so it runs again.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from progress_core.io import file_hash, write_json

MARKER = ".stage.json"


class StageRecord(BaseModel):
    """What a stage hands downstream: where its outputs are and what they contain."""

    stage: str = Field(description="Stage name, e.g. 'features' or 'train'.")
    out_dir: str = Field(description="Directory holding the stage's outputs.")
    files: dict[str, str] = Field(default_factory=dict, description="Output name -> path.")
    rows: dict[str, int] = Field(default_factory=dict, description="Output name -> row count.")
    content_hash: str = Field("", description="Hash of the outputs' content (or of the key when declared).")
    key: str = Field("", description="Cache key that produced these outputs.")
    meta: dict[str, Any] = Field(default_factory=dict, description="Small stage-specific facts.")

    def path(self, name: str) -> Path:
        """Path of the output called ``name``."""
        return Path(self.files[name])


def _canonical(value: Any) -> Any:
    if isinstance(value, StageRecord):
        return {"stage": value.stage, "content_hash": value.content_hash}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@functools.cache
def _source_hash(module_name: str) -> str:
    module = sys.modules.get(module_name) or __import__(module_name, fromlist=["_"])
    return hashlib.sha256(inspect.getsource(module).encode()).hexdigest()


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


def outputs_hash(files: dict[str, str]) -> str:
    """Content hash of a stage's output files (directories hashed file by file)."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode())
        h.update(file_hash(files[name]).encode())
    return h.hexdigest()[:24]


def read_marker(out_dir: str | Path, key: str) -> StageRecord | None:
    """The record of ``out_dir`` if it was produced by ``key`` and all its files still exist."""
    marker = Path(out_dir) / MARKER
    if not marker.exists():
        return None
    try:
        record = StageRecord.model_validate_json(marker.read_text())
    except ValueError:
        return None
    if record.key != key or not all(Path(p).exists() for p in record.files.values()):
        return None
    return record


class StageSpec:
    """Static facts about one stage: its name, the code it runs, and which parameters are not inputs."""

    def __init__(self, name: str, modules: Iterable[str], ignore: Iterable[str] = (), hash_outputs: bool = True):
        self.name = name
        self.modules = tuple(modules)
        self.ignore = tuple(ignore)
        self.hash_outputs = hash_outputs

    def key(self, parameters: dict[str, Any]) -> str:
        return compute_key(self.name, code_version(self.modules), parameters, self.ignore)


def stage(name: str, modules: Iterable[str] = (), ignore: Iterable[str] = ("progress",), hash_outputs: bool = True):
    """Make ``fn(out_dir=..., **inputs) -> StageRecord`` a stage: keyed, marker-checked, idempotent.

    ``modules`` are the ``progress_core`` modules the stage runs (part of its code version); ``ignore``
    names parameters that do not change the outputs (e.g. a progress-bar switch). With
    ``hash_outputs=False`` the content hash is the key itself: for outputs that are a deterministic function
    of the inputs and too large to hash every time (model checkpoints).
    """

    def decorate(fn: Callable[..., StageRecord]) -> Callable[..., StageRecord]:
        spec = StageSpec(name, (fn.__module__, *modules), ignore, hash_outputs)
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> StageRecord:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            params = dict(bound.arguments)
            key = spec.key(params)
            done = read_marker(params["out_dir"], key)
            if done is not None:
                return done
            record = fn(*args, **kwargs)
            record.key = key
            record.content_hash = outputs_hash(record.files) if spec.hash_outputs else key
            write_json(record.model_dump(mode="json"), Path(params["out_dir"]) / MARKER, indent=1)
            return record

        run.stage_spec = spec  # type: ignore[attr-defined]
        run.stage_signature = signature  # type: ignore[attr-defined]
        return run

    return decorate


def stage_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Prefect ``cache_key_fn``: the stage key of the task's function (never the run id)."""
    fn = context.task.fn
    return fn.stage_spec.key(_bound(fn, parameters))


def _bound(fn: Any, parameters: dict[str, Any]) -> dict[str, Any]:
    bound = fn.stage_signature.bind_partial(**parameters)
    bound.apply_defaults()
    return dict(bound.arguments)


def needs_refresh(task: Any, parameters: dict[str, Any]) -> bool:
    """True when the task's outputs for these parameters are missing or were produced by another key."""
    fn = task.fn
    params = _bound(fn, parameters)
    return read_marker(params["out_dir"], fn.stage_spec.key(params)) is None
