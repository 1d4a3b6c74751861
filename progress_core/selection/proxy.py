"""Proxy screen: the selection rule's statistics at 50K samples × 20 seeds on 2 cores (README "Does selection pay off?").

A real comparison trains a tiny LLaVA per strategy, budget and seed; that costs minutes per run, so only a
few seeds fit. The proxy keeps everything selection sees and replaces only the learner: the pool's frozen
selection features (the same encoders as ``progress_core.features``: the descriptor image part and MiniLM on
the question), the same annotation clustering (faiss spherical k-means), the same round schedule
(:func:`progress_core.schedule.next_round`), the same probe (≤ ``samples_per_cluster`` not-yet-selected
samples per cluster, one seeded key per sample, exact match) and the same :func:`progress_core.selection.select`.
The learner is an MLP head mapping a sample's features to its answer, one continuing run that sees only
each round's new samples, one pass, batch = the run's global batch. Its start is trained on the pool's
``known`` split (what a stage-1 aligned model already answers); the warm-up pools are uniform draws shared
by every strategy of a seed (not COINCIDE's).

What it is evidence for: how an allocation rule spends budget given probe noise, cluster sizes, duplicates,
label noise and a skewed pool, and whether a pool has headroom for that learner. What not: a VLM's training
dynamics (answer-prior switches, forgetting, the plateau); the tiny LLaVA confirms.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from progress_core.clustering.kmeans import spherical_kmeans
from progress_core.features.config import FeatureConfig
from progress_core.features.extract import DescriptorEncoder, load_text_encoder, question_text
from progress_core.features.store import combine_features
from progress_core.probe.accuracy_table import accuracy_from_verdicts
from progress_core.selection.config import LABEL_STRATEGIES
from progress_core.selection.context import SelectionHistory
from progress_core.selection.oracle import ORACLE_RULES, oracle_concepts, oracle_select
from progress_core.selection.schedule import ScheduleState, advance, next_round, warmup_sizes
from progress_core.selection.strategies import select


class ProxySettings(BaseModel):
    """The proxy run's schedule, probe and learner; the schedule fields mean what the run config's do."""

    model_config = ConfigDict(extra="forbid")

    global_batch: int = Field(8, ge=1)
    selection_num: int = Field(560, ge=1, description="round budget; the paper's 7500 / 665K scaled to 50K")
    warmup_fractions: tuple[float, float] = (0.03, 0.05)
    samples_per_cluster: int = Field(12, ge=1)
    annotation_k: int = Field(75, ge=2, description="the paper's 1000 / 665K scaled to 50K")
    hidden: int = Field(128, ge=1)
    learning_rate: float = Field(1e-3, gt=0)


@dataclass
class ProxyData:
    """Features, answer classes and concepts of a pool's splits, plus the annotation clusters and oracle labels."""

    pool_x: np.ndarray
    pool_y: np.ndarray
    eval_x: np.ndarray
    eval_y: np.ndarray
    eval_concept: np.ndarray
    known_x: np.ndarray
    known_y: np.ndarray
    cluster_ids: np.ndarray
    oracle: np.ndarray
    n_classes: int
    oracle_with_known: np.ndarray


def encode_rows(rows: list[dict], image_root: Path, batch: int = 256) -> np.ndarray:
    """Selection features of LLaVA rows as ``progress_core.features`` computes them (descriptor + MiniLM,
    one global L2 norm, float16), each distinct question encoded once."""
    from PIL import Image

    cfg = FeatureConfig()
    image_enc, text_enc = DescriptorEncoder(), load_text_encoder(cfg)
    image = np.zeros((len(rows), image_enc.dim), np.float16)
    with_image = [i for i, r in enumerate(rows) if r.get("image")]
    for b0 in range(0, len(with_image), batch):
        part = with_image[b0 : b0 + batch]
        ims = []
        for i in part:
            with Image.open(image_root / rows[i]["image"]) as im:
                ims.append(im.convert("RGB"))
        image[part] = image_enc.encode(ims).astype(np.float16)
    texts = pd.Series([question_text(r["conversations"]) for r in rows])
    codes, unique = pd.factorize(texts)
    encoded = np.concatenate([text_enc.encode(list(unique[b : b + batch])) for b in range(0, len(unique), batch)])
    return combine_features(image, encoded[codes].astype(np.float16), cfg.balanced)


def _split_features(pool_dir: Path, name: str, rows: list[dict]) -> np.ndarray:
    cache = pool_dir / f"proxy_features_{name}.npy"
    if cache.is_file():
        return np.load(cache)
    x = encode_rows(rows, pool_dir / "images") if rows else np.zeros((0, 640), np.float16)
    np.save(cache, x)
    return x


def load_proxy_data(pool_dir: str | Path, settings: ProxySettings) -> ProxyData:
    """Read a pool written by :func:`progress_core.data.headroom.generate_headroom_pool`; features are cached in it.

    Clusters come from the stored (unit-norm) features, as a run's; the student sees them standardised per
    dimension by the pool's mean and spread (an MLP head on unit-norm 640-d inputs barely moves)."""
    pool_dir = Path(pool_dir)
    splits = {s: json.loads((pool_dir / f"{s}.json").read_text()) for s in ("pool", "eval", "known")}
    x = {s: _split_features(pool_dir, s, rows).astype(np.float32) for s, rows in splits.items()}
    clusters = spherical_kmeans(x["pool"], settings.annotation_k, gpu=False).assignment.astype(np.int64)
    mean, scale = x["pool"].mean(0), x["pool"].std(0) + 1e-3
    x = {s: ((v - mean) / scale).astype(np.float32) for s, v in x.items()}
    answers = {s: [r["conversations"][1]["value"] for r in rows] for s, rows in splits.items()}
    vocab = {a: i for i, a in enumerate(sorted({a for v in answers.values() for a in v}))}
    y = {s: np.array([vocab[a] for a in v], dtype=np.int64) for s, v in answers.items()}
    labels = pd.read_parquet(pool_dir / "labels.parquet")
    eval_ids = [r["id"] for r in splits["eval"]]
    concept = labels.drop_duplicates("id").set_index("id").reindex(eval_ids)["concept"].to_numpy()
    pool_ids = [r["id"] for r in splits["pool"]]
    oracle, oracle_all = oracle_concepts(labels, pool_ids), oracle_concepts(labels, pool_ids, skip_known=False)
    splits_x = (x["pool"], y["pool"], x["eval"], y["eval"], concept, x["known"], y["known"])
    return ProxyData(*splits_x, clusters, oracle, len(vocab), oracle_all)


class ProxyStudent:
    """One-hidden-layer MLP from features to answer class, trained by Adam one batch at a time."""

    def __init__(self, dim: int, n_classes: int, settings: ProxySettings, seed: int):
        import torch

        torch.manual_seed(seed)
        self.torch = torch
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim, settings.hidden), torch.nn.ReLU(), torch.nn.Linear(settings.hidden, n_classes)
        )
        self.opt = torch.optim.Adam(self.net.parameters(), lr=settings.learning_rate)
        self.batch = settings.global_batch

    def train(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> int:
        """One pass over ``(x, y)`` in a seeded order, ``ceil(n / batch)`` steps; returns the steps."""
        order = rng.permutation(len(y))
        xt, yt = self.torch.from_numpy(x[order]), self.torch.from_numpy(y[order])
        steps = math.ceil(len(y) / self.batch)
        for s in range(steps):
            xb, yb = xt[s * self.batch : (s + 1) * self.batch], yt[s * self.batch : (s + 1) * self.batch]
            loss = self.torch.nn.functional.cross_entropy(self.net(xb), yb)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        return steps

    def correct(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """1.0 where the predicted answer equals ``y`` (exact match), else 0.0."""
        if len(y) == 0:
            return np.zeros(0)
        with self.torch.no_grad():
            pred = self.net(self.torch.from_numpy(x)).argmax(1).numpy()
        return (pred == y).astype(np.float64)


def probe_ids(remaining: np.ndarray, cluster_ids: np.ndarray, keys: np.ndarray, per_cluster: int) -> np.ndarray:
    """≤ ``per_cluster`` remaining samples per cluster with the smallest seeded keys (the held-out probe)."""
    order = remaining[np.lexsort((keys[remaining], cluster_ids[remaining]))]
    c = cluster_ids[order]
    first = np.searchsorted(c, c, side="left")
    return order[np.arange(order.size) - first < per_cluster]


def _probe(student: ProxyStudent, data: ProxyData, remaining: np.ndarray, keys: np.ndarray, spc: int) -> pd.DataFrame:
    ids = probe_ids(remaining, data.cluster_ids, keys, spc)
    return accuracy_from_verdicts(data.cluster_ids[ids], student.correct(data.pool_x[ids], data.pool_y[ids]))


def evaluate(student: ProxyStudent, data: ProxyData) -> tuple[float, pd.Series]:
    """Held-out accuracy averaged over concepts, and per concept."""
    hit = pd.Series(student.correct(data.eval_x, data.eval_y)).groupby(data.eval_concept).mean()
    return float(hit.mean()), hit


def _initial_state(data: ProxyData, budget: float, settings: ProxySettings, strategy: str) -> ScheduleState:
    n = len(data.pool_y)
    return ScheduleState(
        round_index=0,
        step=0,
        remaining=n,
        final_step=math.ceil(budget * n / settings.global_batch),
        global_batch=settings.global_batch,
        selection_num=settings.selection_num,
        warmup_sizes=warmup_sizes(settings.warmup_fractions, n),
        takes_all=strategy == "full",
    )


def run_proxy(
    data: ProxyData, strategy: str, budget: float, seed: int, settings: ProxySettings, options: dict | None = None
) -> dict:
    """One proxy run: start on ``known``, warm-up W1 and W2, then select/train/probe rounds as the flow does."""
    n = len(data.pool_y)
    options = dict(options or {})
    if strategy in LABEL_STRATEGIES:
        options.setdefault("concepts", data.oracle if ORACLE_RULES[strategy].skips_known else data.oracle_with_known)
        options.setdefault("rule", strategy)
    student = ProxyStudent(data.pool_x.shape[1], data.n_classes, settings, seed)
    train_rng, select_rng = np.random.default_rng([seed, 3]), np.random.default_rng([seed, 2])
    keys = np.random.default_rng([seed, 4]).permutation(n)
    if len(data.known_y):
        student.train(data.known_x, data.known_y, np.random.default_rng([seed, 5]))
    warm = np.random.default_rng([seed, 1]).permutation(n)
    state = _initial_state(data, budget, settings, strategy)
    remaining = np.ones(n, dtype=bool)
    selected: list[np.ndarray] = []
    acc_prev = acc_now = None
    rounds = 0
    while (plan := next_round(state)) is not None:
        if plan.kind == "warmup":
            start = sum(state.warmup_sizes[: plan.index])
            new = warm[start : start + plan.budget]
        else:
            history = SelectionHistory(acc_prev, acc_now, np.concatenate(selected))
            pick = oracle_select if strategy in LABEL_STRATEGIES else partial(select, strategy)
            new = pick(
                np.flatnonzero(remaining), data.cluster_ids, history, plan.budget, select_rng, **options
            ).sample_ids
            rounds += 1
        if new.size == 0:
            break
        remaining[new] = False
        selected.append(new)
        student.train(data.pool_x[new], data.pool_y[new], train_rng)
        state = advance(state, int(new.size))
        acc_prev, acc_now = (
            acc_now,
            _probe(student, data, np.flatnonzero(remaining), keys, settings.samples_per_cluster),
        )
    accuracy, per_concept = evaluate(student, data)
    n_sel = int(sum(s.size for s in selected))
    return {
        "strategy": strategy,
        "budget": budget,
        "seed": seed,
        "accuracy": accuracy,
        "n_selected": n_sel,
        "steps": state.step,
        "rounds": rounds,
        "concepts": per_concept.to_dict(),
    }
