"""Judges: is a probed answer correct? (PROGRESS §3.2, docs/algorithm.md#probe-and-judge).

One interface, :meth:`Judge.judge`, returning one :class:`Verdict` per answer: 1 correct, 0 incorrect,
None unjudged (the judge's output could not be parsed, or its batch timed out). Unjudged answers are
counted and reported, never scored as wrong (a fix, see docs/algorithm.md#differences-from-the-original-scripts).

- :class:`ExactMatchJudge` — normalised exact match (case, punctuation, articles, whitespace, number
  words <-> digits); the default for short-answer VQA.
- :class:`LLMJudge` — the original's text-only judge prompt (``CAPTION_PROMPT_v2``) and its
  "Answer - ... Reason - ..." parsing made robust; served by :class:`LmdeployBackend` (InternVL via
  ``lmdeploy.pipeline``, as the original) or :class:`TransformersBackend` (any local HF causal LM).
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from progress_core.errors import ConfigError, ProgressError
from progress_core.probe.config import JudgeConfig

log = logging.getLogger(__name__)

# The original judge prompt verbatim (docs/algorithm.md#probe-and-judge): 4-space indents inside the string, no separator after
# "Question", the last line's \n escapes are newlines.
CAPTION_PROMPT_V2 = (
    """Given a input question and two answers: a candidate answer and a reference answer, determine if the candidate answer is correct or incorrect.
    Rules:
    - The candidate answer is correct if it is semantically equivalent to the reference answer, even if they are phrased differently
    - The candidate answer should be marked as incorrect if it:
    * Contains factual errors compared to reference answer
    * Only partially answers the question
    * Includes hedging language (e.g., "probably", "likely", "I think", etc.)
    * Answers a different question than what was asked
    - Give a reason for your prediction.
    Output "correct" if the candidate answer is correct, or "incorrect" if it is incorrect.
    OUTPUT Format-
    Answer - correct or incorrect
    Reason -"""
    + " "  # the original prompt has a trailing space here
    + """

    INPUT-
    Question{question}\nCandidate Answer:{pred}\nReference Answer:{gt}"""
)


class JudgeError(ProgressError):
    """A judge cannot be built or run (missing backend package, bad model path, mismatched inputs)."""


@dataclass(frozen=True)
class Verdict:
    """One judgement: ``verdict`` 1/0/None (unjudged), the judge's raw output and why it is unjudged."""

    verdict: int | None
    raw: str = ""
    reason: str | None = None


class Judge(Protocol):
    name: str

    def judge(
        self, questions: Sequence[str], predictions: Sequence[str], references: Sequence[str]
    ) -> list[Verdict]: ...


def _check_lengths(questions, predictions, references) -> None:
    if not (len(questions) == len(predictions) == len(references)):
        raise JudgeError(
            f"judge needs one question, prediction and reference per sample; got "
            f"{len(questions)}/{len(predictions)}/{len(references)}"
        )


# --------------------------------------------------------------------------------------- exact match

NUMBER_WORDS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "hundred": 100,
}
TENS = {"twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"}
ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile("[" + re.escape(string.punctuation.replace("-", "").replace(".", "")) + "]")
_DECIMAL_POINT = re.compile(r"(?<!\d)\.|\.(?!\d)")


def normalise_answer(text: str | None) -> str:
    """Canonical short answer: lower case, no punctuation or articles, number words as digits.

    "Two." -> "2", "The Red Square!" -> "red square", "twenty-one" -> "21", "3.50" keeps its point.
    """
    if text is None:
        return ""
    s = _PUNCT.sub(" ", str(text).lower())
    s = _DECIMAL_POINT.sub(" ", s).replace("-", " ")
    words: list[str] = []
    after_tens = False
    for word in s.split():
        if word in ARTICLES:
            continue
        value = NUMBER_WORDS.get(word)
        if value is None:
            words.append(word)
            after_tens = False
        elif after_tens and 0 < value < 10:
            words[-1] = str(int(words[-1]) + value)
            after_tens = False
        else:
            words.append(str(value))
            after_tens = word in TENS
    return " ".join(words)


class ExactMatchJudge:
    """Normalised exact match of prediction and reference (default judge for short-answer VQA)."""

    name = "exact"

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> ExactMatchJudge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def judge(self, questions: Sequence[str], predictions: Sequence[str], references: Sequence[str]) -> list[Verdict]:
        _check_lengths(questions, predictions, references)
        return [
            Verdict(
                int(normalise_answer(p) == normalise_answer(r) and normalise_answer(r) != ""), raw=normalise_answer(p)
            )
            for p, r in zip(predictions, references)
        ]


# ------------------------------------------------------------------------------------------ LLM judge

_WORD = re.compile(r"\b(not\s+correct|incorrect|correct|wrong)\b")


def judge_prompt(question: str, prediction: str, reference: str) -> str:
    """The original's CAPTION_PROMPT_v2 filled in (docs/algorithm.md#probe-and-judge; text-only, the judge never sees the image)."""
    return CAPTION_PROMPT_V2.format(question=question, pred=prediction, gt=reference)


def parse_judgement(text: str | None) -> int | None:
    """1/0 from the judge's output, None when it cannot be read.

    The original takes ``text.split("Reason -")[0].replace("Answer -", "")`` and needs exactly
    "correct"/"incorrect"; here markdown, punctuation and case are ignored and the first verdict word in
    the answer part wins ("Correct.", "**correct**", "Answer - incorrect\\nReason - ..."). "incorrect"
    and "not correct" never count as "correct".
    """
    if not text:
        return None
    lowered = str(text).lower().replace("*", " ").replace("_", " ").replace("`", " ")
    head = re.split(r"reason\s*[-:]", lowered, maxsplit=1)[0]
    head = re.sub(r"answer\s*[-:]", " ", head)
    match = _WORD.search(head)
    if match is None:
        return None
    word = match.group(1)
    return 1 if word == "correct" else 0


class Backend(Protocol):
    def generate(self, prompts: Sequence[str]) -> list[str]: ...


class LmdeployBackend:
    """InternVL (or any chat model lmdeploy serves) through ``lmdeploy.pipeline`` (``docs/algorithm.md#probe-and-judge``).

    ``lmdeploy`` is imported on first use only (it needs CUDA and its own torch pin). The engine is
    TurboMind or the PyTorch engine with ``tp`` GPUs; ``trust_remote_code`` lets InternVL2's own model code
    load; with ``chat_template`` None lmdeploy picks the template that matches the model. :meth:`close`
    shuts the engine down and returns its GPU memory, so the next round's probe starts on free GPUs.
    """

    def __init__(
        self,
        model: str,
        tp: int = 1,
        session_len: int = 8192,
        cache_max_entry_count: float = 0.5,
        chat_template: str | None = None,
        max_new_tokens: int = 64,
        engine: Literal["turbomind", "pytorch"] = "turbomind",
        max_batch_size: int | None = None,
        trust_remote_code: bool = True,
    ):
        self.model = model
        self.tp = tp
        self.session_len = session_len
        self.cache_max_entry_count = cache_max_entry_count
        self.chat_template = chat_template
        self.max_new_tokens = max_new_tokens
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.trust_remote_code = trust_remote_code
        self._pipe = None
        self._lmdeploy = None

    def engine_config(self, lmdeploy):
        """``TurbomindEngineConfig`` or ``PytorchEngineConfig`` with tp, session length, KV cache and batch.

        The judge reads text only, so where the engine config has ``language_model_only`` the vision encoder
        of a VLM judge (InternViT-6B beside InternVL2-26B's language model) is never loaded.
        """
        cls = lmdeploy.TurbomindEngineConfig if self.engine == "turbomind" else lmdeploy.PytorchEngineConfig
        kwargs = {"tp": self.tp, "session_len": self.session_len, "cache_max_entry_count": self.cache_max_entry_count}
        if self.max_batch_size:
            kwargs["max_batch_size"] = self.max_batch_size
        if "language_model_only" in getattr(cls, "__dataclass_fields__", {}):
            kwargs["language_model_only"] = True
        return cls(**kwargs)

    def _pipeline(self):
        if self._pipe is None:
            try:
                import lmdeploy
            except ImportError as exc:
                raise JudgeError("the lmdeploy judge backend needs `pip install lmdeploy` (GPU hosts)") from exc
            self._lmdeploy = lmdeploy
            kwargs = {"backend_config": self.engine_config(lmdeploy), "trust_remote_code": self.trust_remote_code}
            if self.chat_template:
                kwargs["chat_template_config"] = lmdeploy.ChatTemplateConfig(model_name=self.chat_template)
            log.info("starting lmdeploy %s engine for %s (tp=%d)", self.engine, self.model, self.tp)
            self._pipe = lmdeploy.pipeline(self.model, **kwargs)
        return self._pipe

    def generate(self, prompts: Sequence[str]) -> list[str]:
        pipe = self._pipeline()
        gen = self._lmdeploy.GenerationConfig(max_new_tokens=self.max_new_tokens, do_sample=False)
        responses = pipe(list(prompts), gen_config=gen)
        return [r.text for r in responses]

    def close(self) -> None:
        """Shut the engine down and release its CUDA memory (safe to call twice)."""
        pipe, self._pipe = self._pipe, None
        if pipe is None:
            return
        close = getattr(pipe, "close", None)
        if close is not None:
            close()
        del pipe
        _release_cuda_memory()


def _release_cuda_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


class TransformersBackend:
    """Any local HF causal LM as judge: greedy generation, left-padded batches, chat template if any."""

    def __init__(self, model: str, max_new_tokens: int = 64, device: str | None = None, dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise JudgeError(f"cannot load judge model {model}: {exc}") from exc
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.max_new_tokens = max_new_tokens

    def close(self) -> None:
        """Drop the model and release its CUDA memory."""
        self.model = None
        _release_cuda_memory()

    def render(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt

    def generate(self, prompts: Sequence[str]) -> list[str]:
        import torch

        texts = [self.render(p) for p in prompts]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True).to(self.device)
        with torch.no_grad():
            out = self.model.generate(
                **batch,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new = out[:, batch["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)


class LLMJudge:
    """The original's LLM judge (docs/algorithm.md#probe-and-judge) with robust parsing, batching and a per-batch timeout.

    A batch whose backend call does not return within ``timeout_s`` is marked unjudged with reason
    "timeout" (the worker thread is abandoned; the backend call cannot be interrupted from Python).
    """

    name = "llm"

    def __init__(self, backend: Backend, batch_size: int = 128, timeout_s: float | None = None):
        if batch_size <= 0:
            raise ConfigError(f"judge batch size must be positive, got {batch_size}")
        self.backend = backend
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.stats = {"judged": 0, "unparseable": 0, "timeout": 0}

    def close(self) -> None:
        """Close the backend (lmdeploy: engine shut down, GPU memory returned)."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> LLMJudge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, prompts: list[str]) -> list[str]:
        if self.timeout_s is None:
            return self.backend.generate(prompts)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-judge")
        try:
            return pool.submit(self.backend.generate, prompts).result(timeout=self.timeout_s)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def judge(self, questions: Sequence[str], predictions: Sequence[str], references: Sequence[str]) -> list[Verdict]:
        _check_lengths(questions, predictions, references)
        prompts = [judge_prompt(q, p, r) for q, p, r in zip(questions, predictions, references)]
        verdicts: list[Verdict] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            try:
                texts = self._call(chunk)
            except concurrent.futures.TimeoutError:
                self.stats["timeout"] += len(chunk)
                log.warning(
                    "LLM judge batch at %d timed out after %ss: %d answers unjudged", start, self.timeout_s, len(chunk)
                )
                verdicts.extend(Verdict(None, "", "timeout") for _ in chunk)
                continue
            if len(texts) != len(chunk):
                raise JudgeError(f"judge backend returned {len(texts)} outputs for {len(chunk)} prompts")
            for text in texts:
                v = parse_judgement(text)
                if v is None:
                    self.stats["unparseable"] += 1
                    verdicts.append(Verdict(None, text, "unparseable"))
                else:
                    self.stats["judged"] += 1
                    verdicts.append(Verdict(v, text))
        bad = sum(v.verdict is None for v in verdicts)
        if bad:
            log.warning("LLM judge left %d of %d answers unjudged (%s)", bad, len(verdicts), self.stats)
        return verdicts


def make_judge(cfg: JudgeConfig) -> ExactMatchJudge | LLMJudge:
    """The judge the config names; LLM backends load their model here (lmdeploy on first use).

    Use it as a context manager (``with make_judge(cfg) as judge:``) so an LLM judge's engine is closed
    and its GPU memory released when the probe ends.
    """
    if cfg.kind == "exact":
        return ExactMatchJudge()
    if cfg.backend == "lmdeploy":
        backend: Backend = LmdeployBackend(
            cfg.model,
            tp=cfg.tp,
            session_len=cfg.session_len,
            cache_max_entry_count=cfg.cache_max_entry_count,
            chat_template=cfg.chat_template,
            max_new_tokens=cfg.max_new_tokens,
            engine=cfg.engine,
            max_batch_size=cfg.batch_size,
            trust_remote_code=cfg.trust_remote_code,
        )
    else:
        backend = TransformersBackend(cfg.model, max_new_tokens=cfg.max_new_tokens)
    return LLMJudge(backend, batch_size=cfg.batch_size, timeout_s=cfg.timeout_s)
