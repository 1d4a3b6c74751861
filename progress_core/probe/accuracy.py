"""The accuracy probe: how well does the current model answer each annotation cluster? (docs/algorithm.md#probe-and-judge).

1. :func:`probe_sample` draws at most SAMPLES_PER_CLUSTER samples per cluster from the selected-so-far
   set (docs/algorithm.md#probe-and-judge; all of them at the warm-up checkpoints: ``samples_per_cluster=None``).
2. :func:`generate_answers` greedily answers the FIRST human turn (<= 25 new tokens, docs/algorithm.md#probe-and-judge) in
   left-padded batches; the reference is the first gpt turn.
3. A judge (:mod:`progress_core.probe.judges`) scores each answer; :func:`probe` returns the per-sample table
   (what the model said and the verdict) and the per-cluster table (``cluster_id, n, correct, unjudged,
   accuracy`` with accuracy = correct / (n - unjudged)). :func:`save_probe` keeps both as Parquet.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from progress_core.devices import release_cuda_memory
from progress_core.errors import ConfigError, ProgressError
from progress_core.io import write_parquet
from progress_core.model.loading import load_model
from progress_core.model.prompt import IMAGE_TOKEN
from progress_core.probe.accuracy_table import accuracy_from_verdicts, write_accuracy_table
from progress_core.probe.batches import token_budget_batches
from progress_core.probe.config import ProbeConfig
from progress_core.probe.judges import Judge
from progress_core.training.samples import Encoder, sample_column, sample_labels, samples_rows

log = logging.getLogger(__name__)

PER_SAMPLE_FILE = "probe_samples.parquet"
PER_CLUSTER_FILE = "accuracy.parquet"


class ProbeError(ProgressError):
    """Probe inputs are inconsistent (duplicate or unknown sample ids, missing cluster ids)."""


@dataclass
class ProbeResult:
    """Per-sample answers + verdicts and the per-cluster accuracy table of one probe."""

    per_sample: pd.DataFrame
    per_cluster: pd.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)


def probe_sample(
    selected_ids: Sequence[int] | np.ndarray,
    cluster_ids: Sequence[int] | np.ndarray,
    samples_per_cluster: int | None,
    seed: int,
    n_samples: int | None = None,
) -> np.ndarray:
    """Sorted sample ids to probe: <= ``samples_per_cluster`` per cluster, drawn from ``selected_ids`` only.

    ``cluster_ids[i]`` is the annotation cluster of ``selected_ids[i]`` (parallel arrays). Each sample
    gets a seeded uniform key; the lowest keys per cluster are kept, i.e. ``random.sample`` per cluster
    as the original's ``concat_jsons --random_select_samples`` (docs/algorithm.md#probe-and-judge), vectorised. With ``n_samples``
    the key belongs to the sample id (one key per id of the manifest), so probes of a shrinking pool keep
    the same samples while they remain.
    """
    sel = np.asarray(selected_ids, dtype=np.int64)
    cl = np.asarray(cluster_ids, dtype=np.int64)
    if sel.shape != cl.shape or sel.ndim != 1:
        raise ProbeError(f"{sel.size} selected ids but {cl.size} cluster ids (need one cluster id per sample)")
    if np.unique(sel).size != sel.size:
        raise ProbeError("selected ids contain duplicates")
    if samples_per_cluster is None:
        return np.sort(sel)
    if samples_per_cluster < 0:
        raise ConfigError(f"samples_per_cluster must be >= 0, got {samples_per_cluster}")
    if sel.size == 0:
        return sel
    if n_samples is not None:
        if sel.size and (sel.min() < 0 or sel.max() >= n_samples):
            raise ProbeError(f"selected ids must lie in 0..{n_samples - 1}")
        key = np.random.default_rng(seed).random(n_samples)[sel]
    else:
        key = np.random.default_rng(seed).random(sel.size)
    order = np.lexsort((key, cl))
    sorted_cl = cl[order]
    starts = np.flatnonzero(np.r_[True, sorted_cl[1:] != sorted_cl[:-1]])
    sizes = np.diff(np.r_[starts, sel.size])
    rank = np.arange(sel.size) - np.repeat(starts, sizes)
    return np.sort(sel[order[rank < samples_per_cluster]])


def first_turn(conversations: list[dict]) -> tuple[str, str]:
    """(first human turn without the image tag, first gpt turn) — what is probed and the reference."""
    question = next((str(t.get("value", "")) for t in conversations if t.get("from") in ("human", "user")), "")
    reference = next((str(t.get("value", "")) for t in conversations if t.get("from") in ("gpt", "assistant")), "")
    return question.replace(IMAGE_TOKEN, "").strip(), reference.strip()


def generate_answers(
    checkpoint: str | os.PathLike,
    samples: Any,
    image_root: str | os.PathLike | None,
    cfg: ProbeConfig,
    progress: bool = True,
) -> list[str]:
    """Greedy answers (<= ``cfg.max_new_tokens``) to each row's first human turn, in row order."""
    import torch
    from tqdm.auto import tqdm

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    rows = samples_rows(samples)
    if not rows:
        return []
    model, processor = load_model(checkpoint, cfg.model, trainable=False)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.eval()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    dtype = next(model.parameters()).dtype
    tokenizer = processor.tokenizer
    max_length = cfg.max_length or getattr(model.config.get_text_config(), "max_position_embeddings", 2048)
    encoder = Encoder(
        processor, model.config.image_token_index, image_root, max_length - cfg.max_new_tokens, sample_labels(samples)
    )
    encoded = [encoder.encode(conv, image, i, prompt_only=True) for i, (conv, image) in enumerate(rows)]
    lengths = [len(e.input_ids) for e in encoded]
    answers: list[str] = [""] * len(rows)
    bar = tqdm(total=len(rows), desc="probe", disable=not progress, unit="sample")
    for rows_of_call in token_budget_batches(lengths, cfg.max_new_tokens, cfg.batch_size, cfg.batch_tokens):
        idx = [int(i) for i in rows_of_call]
        batch = encoder.collate([encoded[i] for i in idx], idx, left_pad=True)
        batch.pop("labels")
        batch = {k: (v.to(device, dtype) if k == "pixel_values" else v.to(device)) for k, v in batch.items()}
        with torch.no_grad():
            out = model.generate(
                **batch,
                max_new_tokens=cfg.max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, text in zip(idx, texts):
            answers[i] = text.strip()
        bar.update(len(idx))
    bar.close()
    return answers


def probe(
    checkpoint: str | os.PathLike,
    samples: Any,
    image_root: str | os.PathLike | None,
    judge: Judge,
    cfg: ProbeConfig,
    progress: bool = True,
) -> ProbeResult:
    """Answer, judge and tabulate the probe ``samples`` (columns sample_id, cluster_id, conversations, image).

    Pass the rows chosen by :func:`probe_sample`. Returns the per-sample table (sample_id, cluster_id,
    prompt, prediction, reference, verdict 1/0/null, judge, judge_output, unjudged_reason) and the
    per-cluster table (cluster_id, n, correct, unjudged, accuracy).
    """
    return judge_answers(answer_table(checkpoint, samples, image_root, cfg, progress), judge)


def answer_table(
    checkpoint: str | os.PathLike, samples: Any, image_root: str | os.PathLike | None, cfg: ProbeConfig, progress: bool
) -> pd.DataFrame:
    """The model's answers to ``samples``: sample_id, cluster_id, prompt, prediction, reference (row order)."""
    sample_ids = np.asarray(sample_column(samples, "sample_id"), dtype=object)
    cluster_ids = np.asarray(sample_column(samples, "cluster_id"), dtype=object)
    for name, col in (("sample_id", sample_ids), ("cluster_id", cluster_ids)):
        missing = np.flatnonzero(pd.isna(col))
        if missing.size:
            raise ProbeError(f"row {int(missing[0])}: {name} is missing")
    turns = [first_turn(conv) for conv, _ in samples_rows(samples)]
    predictions = generate_answers(checkpoint, samples, image_root, cfg, progress=progress)
    release_cuda_memory()
    return pd.DataFrame(
        {
            "sample_id": sample_ids.astype(np.int64),
            "cluster_id": cluster_ids.astype(np.int64),
            "prompt": [q for q, _ in turns],
            "prediction": predictions,
            "reference": [r for _, r in turns],
        }
    )


def judge_answers(answers: pd.DataFrame, judge: Judge) -> ProbeResult:
    """:func:`answer_table`'s rows with the judge's verdicts, and the per-cluster counts."""
    verdicts = judge.judge(answers["prompt"].tolist(), answers["prediction"].tolist(), answers["reference"].tolist())
    per_sample = answers.assign(
        verdict=pd.array([v.verdict for v in verdicts], dtype="Int8"),
        judge=judge.name,
        judge_output=[v.raw for v in verdicts],
        unjudged_reason=[v.reason for v in verdicts],
    )
    per_cluster = accuracy_from_verdicts(per_sample["cluster_id"].to_numpy(), [v.verdict for v in verdicts])
    return ProbeResult(per_sample=per_sample, per_cluster=per_cluster, stats=probe_stats(per_sample, per_cluster))


def probe_stats(per_sample: pd.DataFrame, per_cluster: pd.DataFrame) -> dict[str, int]:
    """n, correct, unjudged and clusters of a probe (the stage's meta); warns when answers went unjudged."""
    n_unjudged = int(per_sample["verdict"].isna().sum())
    if n_unjudged:
        log.warning("probe: %d of %d answers unjudged", n_unjudged, len(per_sample))
    return {
        "n": len(per_sample),
        "correct": int(per_sample["verdict"].fillna(0).sum()),
        "unjudged": n_unjudged,
        "clusters": len(per_cluster),
    }


def save_probe(result: ProbeResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write the per-sample and per-cluster tables as Parquet (atomic) and return their paths."""
    out = Path(out_dir)
    return {
        "per_sample": write_parquet(result.per_sample, out / PER_SAMPLE_FILE),
        "per_cluster": write_accuracy_table(result.per_cluster, out / PER_CLUSTER_FILE),
    }
