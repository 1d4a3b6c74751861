"""Pool and manifest stages (docs/architecture.md#a-round-through-the-files).

The manifest stage is keyed by a fingerprint of the pool's image files as well as the pool JSON: fixing or
replacing an image recomputes the manifest's fingerprint and so the features of every later stage
(docs/architecture.md#stage-contract).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from prefect import task

from progress_core.data.manifest import ManifestError, build_manifest, iter_json_array, require_rows
from progress_core.io import files_fingerprint
from tasks.stage import StageRecord, stage, stage_cache_key
from tasks.stage import _say as say


def image_paths(pool_json: str | os.PathLike, image_root: str | None) -> list[str]:
    """Every image file the pool's rows name, resolved against ``image_root``, sorted and unique."""
    found: set[str] = set()
    for _, row in iter_json_array(pool_json):
        image = row.get("image") if isinstance(row, dict) else None
        for name in image if isinstance(image, list) else [image]:
            if isinstance(name, str) and name:
                found.add(os.path.join(image_root, name) if image_root else name)
    return sorted(found)


def image_fingerprint(pool: StageRecord, contents: bool = False) -> str:
    """Fingerprint of the pool's image files: size and mtime, or content hashes (``data.hash_images``)."""
    try:
        paths = image_paths(pool.files["pool_json"], pool.meta.get("image_root"))
    except (OSError, ValueError, ManifestError):
        return "unreadable-pool"
    return f"{'content' if contents else 'stat'}:{len(paths)}:{files_fingerprint(paths, contents)}"


@task(name="manifest", task_run_name="manifest", cache_key_fn=stage_cache_key, persist_result=True)
@stage("manifest")
def manifest_stage(
    pool: StageRecord, mode: str, allow_duplicate_ids: bool, out_dir: str, images: str = ""
) -> StageRecord:
    """LLaVA JSON → Parquet manifest; bad rows are skipped, counted and written out in ``skip`` mode.

    ``images`` is the fingerprint of the pool's image files (:func:`image_fingerprint`); it becomes the
    record's fingerprint, so features are recomputed when an image changes.
    """
    out = Path(out_dir) / "manifest.parquet"
    report = build_manifest(
        pool.files["pool_json"],
        out,
        image_root=pool.meta.get("image_root"),
        mode=mode,
        allow_duplicate_ids=allow_duplicate_ids,
    )
    require_rows(report, pool.files["pool_json"])
    if report.n_rejected:
        per = ", ".join(f"{k} {v}" for k, v in sorted(report.rejected_by_error.items()))
        say(
            f"manifest: skipped {report.n_rejected} of {report.n_input_rows} rows ({per}); each with its row (0-based "
            f"position in {pool.files['pool_json']}), id and reason in {report.rejected_path}"
        )
    files = {"manifest": str(out)}
    meta = {"image_root": pool.meta.get("image_root"), "report": json.loads(report.model_dump_json())}
    if "labels" in pool.files:
        meta["labels"] = pool.files["labels"]
    return StageRecord(
        stage="manifest", out_dir=out_dir, files=files, rows={"manifest": report.n_rows}, meta=meta, fingerprint=images
    )
