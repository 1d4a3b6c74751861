"""The strict pydantic base every configuration section derives from (docs/architecture.md#configuration)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


UNKEYED = {"keyed": False}
"""``json_schema_extra`` of a setting that changes how a stage runs, never what it writes (e.g. how many processes
prepare its data): :func:`keyed_dump` leaves it out, so changing it re-runs nothing
(docs/architecture.md#stage-contract)."""


def _unkeyed(info: FieldInfo) -> bool:
    return isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("keyed") is False


def keyed_dump(model: BaseModel) -> dict:
    """``model.model_dump(mode="json")`` without the :data:`UNKEYED` settings, at any depth: what a stage's cache
    key covers of a configuration section."""
    dumped = model.model_dump(mode="json")
    for name, info in type(model).model_fields.items():
        value = getattr(model, name, None)
        if _unkeyed(info):
            dumped.pop(name, None)
        elif isinstance(value, BaseModel) and isinstance(dumped.get(name), dict):
            dumped[name] = keyed_dump(value)
    return dumped


def unkeyed_at_defaults(model: BaseModel) -> BaseModel:
    """A copy of ``model`` with every :data:`UNKEYED` setting at its default, at any depth: what a digest of
    the whole configuration covers when it must ignore them as a stage's key does; a configuration that
    leaves them at their defaults digests exactly as its ``model_dump_json()`` does."""
    updates = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name, None)
        if _unkeyed(info):
            updates[name] = info.get_default(call_default_factory=True)
        elif isinstance(value, BaseModel):
            updates[name] = unkeyed_at_defaults(value)
    return model.model_copy(update=updates)
