"""Probe generation calls stay within a padded-token budget, and cached GPU memory is released before the judge."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_model import make_pool, pool_texts

from progress_core.model.config import ModelConfig
from progress_core.model.tiny import build_tiny_model
from progress_core.probe import accuracy
from progress_core.probe.accuracy import generate_answers, probe
from progress_core.probe.batches import token_budget_batches
from progress_core.probe.config import ProbeConfig
from progress_core.probe.judges import ExactMatchJudge


def test_batches_follow_length_order_and_cut_at_the_budget_or_the_row_count():
    batches = token_budget_batches([5, 1, 3, 10, 2], max_new_tokens=2, batch_size=3, batch_tokens=12)
    assert [b.tolist() for b in batches] == [[1, 4], [2], [0], [3]]
    lengths = np.random.default_rng(0).integers(1, 400, size=500)
    for budget, rows in ((2048, 64), (None, 7)):
        batches = token_budget_batches(lengths, 25, rows, budget)
        assert sorted(np.concatenate(batches).tolist()) == list(range(500))
        assert all(len(b) <= rows for b in batches)
        if budget is not None:
            assert all(len(b) * (lengths[b].max() + 25) <= budget for b in batches if len(b) > 1)
    assert [len(b) for b in token_budget_batches([3000, 10], 25, 64, 1000)] == [1, 1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny LLaVA and probe rows whose prompts run from a few tokens to a few hundred."""
    root = tmp_path_factory.mktemp("probe_batches")
    pool = make_pool(root, n=12)
    init = build_tiny_model(pool_texts(pool), ModelConfig(patch_size=8), root / "init")
    rows = pool.copy()
    for i in range(0, len(rows), 2):
        turns = json.loads(rows.iloc[i]["conversations"])
        turns[0]["value"] += " Say the word red ." * (i * 4)
        rows.iloc[i, rows.columns.get_loc("conversations")] = json.dumps(turns)
    rows["sample_id"], rows["cluster_id"] = range(len(rows)), 0
    return root, init, rows


def _calls(monkeypatch) -> list[tuple[int, int]]:
    """``(rows, prompt width)`` of every generate call, recorded around the real generate."""
    from transformers import LlavaForConditionalGeneration

    calls: list[tuple[int, int]] = []
    real = LlavaForConditionalGeneration.generate

    def recording(self, *args, **kwargs):
        calls.append(tuple(kwargs["input_ids"].shape))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LlavaForConditionalGeneration, "generate", recording)
    return calls


def test_long_prompts_are_answered_in_calls_within_the_token_budget(tiny, monkeypatch):
    root, init, rows = tiny
    calls = _calls(monkeypatch)
    unbounded = generate_answers(init, rows, root / "images", ProbeConfig(batch_tokens=None), progress=False)
    assert len(calls) == 1 and calls[0][0] * (calls[0][1] + 25) > 700
    calls.clear()
    bounded = generate_answers(init, rows, root / "images", ProbeConfig(batch_tokens=700), progress=False)
    assert len(calls) > 2 and sum(n for n, _ in calls) == len(rows)
    assert all(n * (width + 25) <= 700 for n, width in calls if n > 1), calls
    assert bounded == unbounded


def test_cached_gpu_memory_is_released_after_generation_and_before_the_judge(tiny, monkeypatch):
    root, init, rows = tiny
    events: list[str] = []
    monkeypatch.setattr(accuracy, "generate_answers", lambda *a, **k: events.append("generate") or [""] * len(rows))
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: events.append("empty_cache"))

    class RecordingJudge(ExactMatchJudge):
        def judge(self, questions, predictions, references):
            events.append("judge")
            return super().judge(questions, predictions, references)

    probe(init, rows, root / "images", RecordingJudge(), ProbeConfig(), progress=False)
    assert events == ["generate", "empty_cache", "judge"]
