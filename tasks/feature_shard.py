"""Feature stages: one task per manifest shard (mappable over a Dask/Ray task runner), then one combine.

PROGRESS §3.1 / docs/algorithm.md#features: image part (DINOv2 or the offline descriptor) + MiniLM question part, one global
L2 normalisation (``balanced`` normalises each part first). Row i of ``features.npy`` is sample_id i.
"""

from __future__ import annotations

import functools
import threading

from prefect import task

from progress_core.devices import release_cuda_memory
from progress_core.features.config import ExtractionSettings
from progress_core.features.extract import extract_shard, load_image_encoder, load_text_encoder
from progress_core.features.store import save_shard
from tasks.stage import StageRecord, stage, stage_cache_key

_ENCODER_LOCK = threading.Lock()


@functools.lru_cache(maxsize=2)
def _load_encoders(cfg_json: str):
    cfg = ExtractionSettings.model_validate_json(cfg_json)
    return load_image_encoder(cfg), load_text_encoder(cfg)


def _encoders(cfg_json: str):
    """Encoders shared by the shards of one process, loaded once (transformers' lazy imports are not
    thread-safe, and shards run in parallel threads)."""
    with _ENCODER_LOCK:
        return _load_encoders(cfg_json)


def release_encoders() -> None:
    """Drop the shards' cached encoders and return their GPU memory once every shard is encoded, so k-means,
    training and the judge start on free GPUs."""
    with _ENCODER_LOCK:
        _load_encoders.cache_clear()
    release_cuda_memory()


@task(
    name="features-shard",
    cache_key_fn=stage_cache_key,
    persist_result=True,
    tags=["features"],
    task_run_name="features[{start}:{stop}]",
)
@stage("features_shard")
def feature_shard(
    manifest: StageRecord, start: int, stop: int, settings: ExtractionSettings, out_dir: str
) -> StageRecord:
    """Encode manifest rows ``start:stop``; unreadable images are counted skips with a zero image part."""
    image_enc, text_enc = _encoders(settings.model_dump_json())
    shard = extract_shard(
        manifest.files["manifest"], manifest.meta.get("image_root"), start, stop, settings, image_enc, text_enc
    )
    path = save_shard(shard, out_dir)
    return StageRecord(
        stage="features_shard",
        out_dir=out_dir,
        files={"shard": str(path)},
        rows={"shard": shard.n},
        meta={"start": start, "stop": stop, "failed_sample_ids": shard.failed_sample_ids.tolist()},
    )
