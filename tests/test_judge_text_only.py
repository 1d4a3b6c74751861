"""The lmdeploy judge reads text only: where lmdeploy's engine config can, the VLM's vision encoder stays unloaded."""

from __future__ import annotations

import sys

import pytest
from test_judges import _fake_lmdeploy

from progress_core.probe.config import JudgeConfig
from progress_core.probe.judges import make_judge


@pytest.mark.parametrize("engine", ["turbomind", "pytorch"])
def test_engine_config_asks_for_the_language_model_only_where_lmdeploy_has_it(engine, monkeypatch):
    seen: dict = {}
    fake = _fake_lmdeploy(seen)
    for name in ("TurbomindEngineConfig", "PytorchEngineConfig"):
        old = getattr(fake, name)
        fields = {key: None for key in ("tp", "session_len", "language_model_only")}
        setattr(fake, name, type(name, (old,), {"__dataclass_fields__": fields}))
    monkeypatch.setitem(sys.modules, "lmdeploy", fake)
    with make_judge(JudgeConfig(kind="llm", engine=engine, tp=2)) as judge:
        judge.judge(["q"], ["a"], ["a"])
    assert seen["backend"]["language_model_only"] is True and seen["backend"]["tp"] == 2


def test_an_lmdeploy_without_the_option_is_not_passed_it(monkeypatch):
    seen: dict = {}
    monkeypatch.setitem(sys.modules, "lmdeploy", _fake_lmdeploy(seen))
    with make_judge(JudgeConfig(kind="llm")) as judge:
        judge.judge(["q"], ["a"], ["a"])
    assert "language_model_only" not in seen["backend"]
