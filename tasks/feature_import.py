"""The feature import stage: features computed elsewhere stored as the run's feature matrix
(docs/algorithm.md#features)."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from progress_core.features.importing import import_features, source_fingerprint
from tasks.stage import StageRecord, stage, stage_cache_key


@task(name="features-import", task_run_name="features-import", cache_key_fn=stage_cache_key, persist_result=True)
@stage("features")
def import_stage(
    manifest: StageRecord, sources: dict[str, str], fingerprint: str, balanced: bool, out_dir: str
) -> StageRecord:
    """Features computed elsewhere stored as this stage's ``features.npy`` (no extraction).

    ``sources`` names the files (``image`` + ``text``, or ``features`` with optional ``ids``); the cache
    key holds ``fingerprint``, their content hash (:func:`progress_core.features.importing.source_fingerprint`),
    so replacing a source file re-imports and everything downstream recomputes.
    """
    out = Path(out_dir) / "features.npy"
    report = import_features(out, manifest.rows["manifest"], balanced=balanced, **sources)
    return StageRecord(
        stage="features",
        out_dir=out_dir,
        files={"features": str(out)},
        rows={"features": report.n},
        meta={
            "image_dim": report.image_dim,
            "text_dim": report.text_dim,
            "imported": report.layout,
            "n_zero_rows": report.n_zero_rows,
            "n_image_failures": 0,
            "failed_sample_ids": [],
        },
    )


def import_fingerprint(sources: dict[str, str], out_dir: str | Path) -> str:
    """Content hash of the import sources, remembered beside the stage output (see ``source_fingerprint``)."""
    return source_fingerprint([sources[k] for k in sorted(sources)], Path(out_dir) / ".source_hashes.json")
