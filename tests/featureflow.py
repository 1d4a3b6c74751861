"""A flow of the stages up to the features (pool, manifest, features) for the task-runner tests.

``python tests/featureflow.py run.yaml`` runs it against the Prefect API in the environment and prints the
features path; the feature stage is the selection flow's own (``flows.progress_selection.feature_stage``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from flows.progress_selection import feature_stage, run_stage  # noqa: E402
from progress_core.run.config import RunConfig, load_config  # noqa: E402
from tasks.manifest import manifest_stage  # noqa: E402
from tasks.pool import pool_fingerprint, prepare_pool  # noqa: E402


@flow(name="features-only")
def features_only(config: RunConfig) -> str:
    shared = Path(config.run_dir).resolve()
    pool = run_stage(prepare_pool, data=config.data, fingerprint=pool_fingerprint(config.data), out_dir=shared / "data")
    manifest = run_stage(manifest_stage, pool=pool, mode="skip", allow_duplicate_ids=False, out_dir=shared / "manifest")
    return feature_stage(config, manifest, shared).files["features"]


if __name__ == "__main__":
    print(features_only(load_config(sys.argv[1])))
