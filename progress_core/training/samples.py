"""Training and probe rows encoded into token ids, labels and pixels (docs/algorithm.md#training)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from progress_core.errors import ConfigError, ProgressError
from progress_core.model.prompt import IGNORE_INDEX, encode_conversation, image_token_count, normalise_turns
from progress_core.model.square_images import squared


class TrainingDataError(ProgressError):
    """A training or probe row cannot be used (bad conversations JSON, missing image file)."""


@dataclass
class EncodedRow:
    input_ids: list[int]
    labels: list[int]
    image: str | None


def sample_column(samples: Any, name: str) -> list:
    import pyarrow as pa

    if isinstance(samples, pa.Table):
        return samples.column(name).to_pylist() if name in samples.column_names else [None] * samples.num_rows
    if hasattr(samples, "columns"):
        return samples[name].tolist() if name in samples.columns else [None] * len(samples)
    return [row.get(name) for row in samples]


def _n_rows(samples: Any) -> int:
    return samples.num_rows if hasattr(samples, "num_rows") else len(samples)


def parse_conversations(value: Any, row: int | str) -> list[dict]:
    """The conversations list of a row (JSON text in the manifest, docs/architecture.md#file-kinds; a list is accepted
    too); ``row`` names the row in errors (a :func:`sample_labels` label or a position)."""
    where = row if isinstance(row, str) else f"row {row}"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise TrainingDataError(f"{where}: conversations is not valid JSON ({exc})") from exc
    if not isinstance(value, (list, tuple)) or not value:
        raise TrainingDataError(f"{where}: conversations must be a non-empty list, got {type(value).__name__}")
    return list(value)


def samples_rows(samples: Any) -> list[tuple[list[dict], str | None]]:
    """(conversations, image) per row of a DataFrame, Arrow table or list of dicts; errors name the row by its
    :func:`sample_labels` label."""
    convs = sample_column(samples, "conversations")
    images = sample_column(samples, "image")
    labels = sample_labels(samples)
    rows = []
    for where, conv, image in zip(labels, convs, images):
        if conv is None:
            raise TrainingDataError(f"{where}: missing conversations")
        if image is not None and not isinstance(image, str):
            if pd.isna(image):
                image = None
            else:
                raise TrainingDataError(f"{where}: image must be a path string, got {type(image).__name__}")
        rows.append((parse_conversations(conv, where), image or None))
    return rows


def sample_labels(samples: Any) -> list[str]:
    """How an error names each row: its ``sample_id`` and ``id`` when the rows carry them (manifest rows do),
    else its 0-based position among the rows given."""
    sample_ids, ids = sample_column(samples, "sample_id"), sample_column(samples, "id")
    labels = []
    for n, (sid, rid) in enumerate(zip(sample_ids, ids)):
        if sid is not None:
            labels.append(f"sample_id {sid}" + (f" (id {rid!r})" if rid is not None else ""))
        else:
            labels.append(f"id {rid!r}" if rid is not None else f"row {n} (0-based)")
    return labels


class Encoder:
    """Tokenises rows once (cached) and loads images per batch; errors name the row by ``labels`` (see
    :func:`sample_labels`), never by its position in a batch."""

    def __init__(
        self,
        processor,
        image_token_id: int,
        image_root: str | os.PathLike | None,
        max_length: int,
        labels: Sequence[str] | None = None,
    ):
        self.labels = labels
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_token_id = image_token_id
        self.n_image_tokens = image_token_count(processor)
        self.image_root = Path(image_root) if image_root is not None else None
        self.max_length = max_length
        self.system = getattr(processor, "system_prompt", None)

    def name(self, row: int) -> str:
        """The row as errors name it."""
        return self.labels[row] if self.labels is not None and 0 <= row < len(self.labels) else f"row {row}"

    def image_path(self, image: str, row: int) -> Path:
        if self.image_root is None:
            raise TrainingDataError(f"{self.name(row)}: has image {image!r} but no image root was given")
        path = self.image_root / image
        if not path.is_file():
            raise TrainingDataError(f"{self.name(row)}: image file not found: {path}")
        return path

    def encode(self, conversations: list[dict], image: str | None, row: int, prompt_only: bool = False) -> EncodedRow:
        pairs = normalise_turns(conversations, has_image=image is not None)
        if not pairs:
            raise TrainingDataError(f"{self.name(row)}: conversations hold no human turn")
        ids, labels = encode_conversation(
            self.tokenizer, pairs, self.n_image_tokens, self.image_token_id, prompt_only=prompt_only, system=self.system
        )
        if len(ids) > self.max_length:
            if image is not None and self.n_image_tokens + 1 > self.max_length:
                raise ConfigError(f"max_length {self.max_length} is shorter than the image tokens of {self.name(row)}")
            if prompt_only:
                ids, labels = ids[-self.max_length :], labels[-self.max_length :]
                if image is not None and ids.count(self.image_token_id) != self.n_image_tokens:
                    raise TrainingDataError(f"{self.name(row)}: prompt longer than max_length {self.max_length}")
            else:
                ids, labels = ids[: self.max_length], labels[: self.max_length]
        return EncodedRow(ids, labels, image)

    def pixel_values(self, rows: Sequence[EncodedRow], row_ids: Sequence[int]):
        from PIL import Image

        images = []
        for r, rid in zip(rows, row_ids):
            if r.image is None:
                continue
            try:
                with Image.open(self.image_path(r.image, rid)) as im:
                    images.append(im.convert("RGB"))
            except OSError as exc:
                raise TrainingDataError(f"{self.name(rid)}: cannot read image {r.image!r}: {exc}") from exc
        if not images:
            return None
        images = squared(images, self.processor.image_processor, getattr(self.processor, "image_aspect_ratio", "crop"))
        return self.processor.image_processor(images, return_tensors="pt")["pixel_values"]

    def collate(self, rows: Sequence[EncodedRow], row_ids: Sequence[int], left_pad: bool = False) -> dict:
        import torch

        width = max(len(r.input_ids) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r.input_ids)
            sl = slice(width - n, width) if left_pad else slice(0, n)
            ids[i, sl] = torch.tensor(r.input_ids)
            labels[i, sl] = torch.tensor(r.labels)
            mask[i, sl] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        pixels = self.pixel_values(rows, row_ids)
        if pixels is not None:
            batch["pixel_values"] = pixels
        return batch
