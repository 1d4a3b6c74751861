"""Judges: normalised exact match and the original's LLM judge with robust parsing (docs/algorithm.md#probe-and-judge)."""

from __future__ import annotations

import sys
import threading
import types

import pytest

from progress_core.probe.config import JudgeConfig
from progress_core.probe.judges import (
    CAPTION_PROMPT_V2,
    ExactMatchJudge,
    LLMJudge,
    LmdeployBackend,
    TransformersBackend,
    judge_prompt,
    make_judge,
    normalise_answer,
    parse_judgement,
)


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        ("Red", "red", 1),
        ("red.", "Red", 1),
        ("  the   red square ", "red square", 1),
        ("A cat", "cat", 1),
        ("an apple!", "Apple", 1),
        ("two", "2", 1),
        ("Two.", "2", 1),
        ("twenty-one", "21", 1),
        ("zero", "0", 1),
        ("there are three dogs", "there are 3 dogs", 1),
        ("3.5", "3.5", 1),
        ("3.5", "35", 0),
        ("left", "right", 0),
        ("red square", "square red", 0),
        ("", "", 0),
        ("the", "a", 0),
        ("yes", "no", 0),
        ("seven", "eight", 0),
    ],
)
def test_exact_match_normalisation(prediction, reference, expected):
    [verdict] = ExactMatchJudge().judge(["q"], [prediction], [reference])
    assert verdict.verdict == expected


def test_normalise_answer_cases():
    assert normalise_answer("The Red Square!") == "red square"
    assert normalise_answer("It's twelve o'clock.") == "it s 12 o clock"
    assert normalise_answer(None) == ""


@pytest.mark.parametrize(
    "text, expected",
    [
        ("correct", 1),
        ("Correct.", 1),
        ("**correct**", 1),
        ("Answer - correct\nReason - the colours match", 1),
        ("Answer: Correct\nReason: same", 1),
        ("  ANSWER - CORRECT  ", 1),
        ("incorrect", 0),
        ("Incorrect.", 0),
        ("**Incorrect**", 0),
        ("Answer - incorrect\nReason - the correct answer is blue", 0),
        ("The answer is not correct.", 0),
        ("wrong", 0),
        ("", None),
        ("I cannot decide.", None),
        ("Reason - it is correct", None),
        ("incorrectly formatted correctness", None),
    ],
)
def test_llm_judge_parsing(text, expected):
    assert parse_judgement(text) == expected


def test_prompt_is_the_originals_caption_prompt_v2():
    prompt = judge_prompt("What colour?", "red", "blue")
    assert prompt.startswith("Given a input question and two answers: a candidate answer and a reference answer")
    assert "    Answer - correct or incorrect\n    Reason - \n\n    INPUT-\n" in prompt
    assert prompt.endswith("QuestionWhat colour?\nCandidate Answer:red\nReference Answer:blue")
    assert CAPTION_PROMPT_V2.count("{") == 3


class ScriptedBackend:
    def __init__(self, outputs, delays=None):
        self.outputs = list(outputs)
        self.delays = delays or {}
        self.calls: list[list[str]] = []
        self.release = threading.Event()

    def generate(self, prompts):
        call = len(self.calls)
        self.calls.append(list(prompts))
        if call in self.delays:
            self.release.wait(self.delays[call])
        return [self.outputs.pop(0) for _ in prompts]


def test_llm_judge_counts_unparseable_and_timeouts_as_unjudged():
    backend = ScriptedBackend(
        ["Answer - correct\nReason - ok", "**Incorrect**", "garbage", "x", "y", "Correct."], delays={1: 5.0}
    )
    judge = LLMJudge(backend, batch_size=3, timeout_s=0.3)
    verdicts = judge.judge(["q1", "q2", "q3", "q4", "q5"], ["p1", "p2", "p3", "p4", "p5"], list("rrrrr"))
    backend.release.set()
    assert [v.verdict for v in verdicts] == [1, 0, None, None, None]
    assert [v.reason for v in verdicts] == [None, None, "unparseable", "timeout", "timeout"]
    assert judge.stats == {"judged": 2, "unparseable": 1, "timeout": 2}
    assert [len(c) for c in backend.calls] == [3, 2]
    assert backend.calls[0][1] == judge_prompt("q2", "p2", "r")


@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from progress_core.model.tiny import build_word_tokenizer

    path = tmp_path_factory.mktemp("judge_lm")
    tokenizer = build_word_tokenizer([CAPTION_PROMPT_V2, "correct incorrect Answer - Reason - red blue"])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_transformers_backend_generates_one_parsed_verdict_per_prompt(tiny_causal_lm):
    judge = make_judge(
        JudgeConfig(kind="llm", backend="transformers", model=str(tiny_causal_lm), batch_size=2, max_new_tokens=4)
    )
    assert isinstance(judge.backend, TransformersBackend) and judge.backend.tokenizer.padding_side == "left"
    questions = ["What colour?", "Which one is red and which one is blue?", "Red?"]
    predictions = ["red", "blue", "red blue red"]
    verdicts = judge.judge(questions, predictions, ["red", "red", "blue"])
    assert len(verdicts) == 3
    for v in verdicts:
        assert isinstance(v.raw, str) and len(v.raw.split()) <= 4
        assert v.verdict == parse_judgement(v.raw)
        assert (v.reason == "unparseable") == (v.verdict is None)
    batched = judge.backend.generate([judge_prompt(q, p, "red") for q, p in zip(questions, predictions)])
    single = [judge.backend.generate([judge_prompt(q, p, "red")])[0] for q, p in zip(questions, predictions)]
    assert batched == single


def _fake_lmdeploy(seen: dict) -> types.ModuleType:
    """A stand-in with lmdeploy's call signatures that records every call."""

    class Config:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class Pipeline:
        def __init__(self, model_path, backend_config=None, chat_template_config=None, trust_remote_code=False):
            seen["model"] = model_path
            seen["engine"] = type(backend_config).__name__
            seen["backend"] = backend_config.kwargs
            seen["template"] = chat_template_config
            seen["trust_remote_code"] = trust_remote_code
            seen["closed"] = 0

        def __call__(self, prompts, gen_config=None):
            seen.setdefault("prompts", []).append(list(prompts))
            seen["gen"] = gen_config.kwargs
            return [types.SimpleNamespace(text="Answer - correct\nReason - same") for _ in prompts]

        def close(self):
            seen["closed"] += 1

    fake = types.ModuleType("lmdeploy")
    fake.pipeline = Pipeline
    fake.TurbomindEngineConfig = type("TurbomindEngineConfig", (Config,), {})
    fake.PytorchEngineConfig = type("PytorchEngineConfig", (Config,), {})
    fake.ChatTemplateConfig = type("ChatTemplateConfig", (Config,), {})
    fake.GenerationConfig = type("GenerationConfig", (Config,), {})
    return fake


def test_lmdeploy_backend_calls_pipeline_with_prompts_and_config(monkeypatch):
    seen: dict = {}
    monkeypatch.setitem(sys.modules, "lmdeploy", _fake_lmdeploy(seen))
    cfg = JudgeConfig(kind="llm", backend="lmdeploy", model="OpenGVLab/InternVL2-26B", tp=4, batch_size=2)
    with make_judge(cfg) as judge:
        assert isinstance(judge.backend, LmdeployBackend) and "model" not in seen
        verdicts = judge.judge(["q1", "q2", "q3"], ["a", "b", "c"], ["a", "x", "c"])
        assert seen["closed"] == 0
    assert seen["closed"] == 1 and judge.backend._pipe is None
    assert [v.verdict for v in verdicts] == [1, 1, 1]
    assert seen["model"] == "OpenGVLab/InternVL2-26B" and seen["trust_remote_code"] is True
    assert seen["engine"] == "TurbomindEngineConfig"
    assert seen["backend"] == {"tp": 4, "session_len": 8192, "cache_max_entry_count": 0.5, "max_batch_size": 2}
    assert seen["template"] is None
    assert seen["gen"] == {"max_new_tokens": 64, "do_sample": False}
    assert seen["prompts"] == [
        [judge_prompt("q1", "a", "a"), judge_prompt("q2", "b", "x")],
        [judge_prompt("q3", "c", "c")],
    ]


def test_lmdeploy_pytorch_engine_named_template_and_one_engine_per_probe(monkeypatch):
    seen: dict = {}
    monkeypatch.setitem(sys.modules, "lmdeploy", _fake_lmdeploy(seen))
    cfg = JudgeConfig(
        kind="llm", engine="pytorch", chat_template="internvl2_5", tp=2, trust_remote_code=False, timeout_s=30
    )
    for probe_round in range(2):
        with make_judge(cfg) as judge:
            judge.judge(["q"], ["a"], ["a"])
            assert judge.timeout_s == 30 and seen["closed"] == 0
        assert seen["closed"] == 1, probe_round
    assert seen["engine"] == "PytorchEngineConfig" and seen["backend"]["tp"] == 2
    assert seen["template"].kwargs == {"model_name": "internvl2_5"} and seen["trust_remote_code"] is False
    judge.close()
    assert seen["closed"] == 1


def test_lmdeploy_missing_is_a_named_error(monkeypatch):
    from progress_core.probe.judges import JudgeError

    monkeypatch.setitem(sys.modules, "lmdeploy", None)
    judge = make_judge(JudgeConfig(kind="llm", backend="lmdeploy"))
    with pytest.raises(JudgeError, match="pip install lmdeploy"):
        judge.judge(["q"], ["a"], ["a"])
