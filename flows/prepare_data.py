"""Data preparation on its own (docs/architecture.md#layers): pool → manifest → features → dual k-means → warm-up pools.

For teams that prepare a pool once (e.g. features on a GPU pool) and run selections from it later: point
the selection runs' ``shared_dir`` at this flow's directory and every stage here is reused from its cache.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.progress_selection import prepare_stages
from progress_core.run.config import RunConfig


@flow(name="prepare-data", log_prints=True, validate_parameters=True)
def prepare_data(config: RunConfig = RunConfig()) -> dict:
    """Run the stages before the rounds under ``shared_dir`` (or ``run_dir``); return their outputs."""
    shared = Path(config.shared_dir or config.run_dir).resolve()
    shared.mkdir(parents=True, exist_ok=True)
    p = prepare_stages(config, shared)
    return {
        "dir": str(shared),
        "manifest": p.manifest.files["manifest"],
        "n_samples": p.manifest.rows["manifest"],
        "features": p.features.files["features"],
        "annotation_k": p.annotation.meta["k"],
        "selection_k": p.selection_clusters.meta["k"],
        "w1": p.pools.rows["w1"],
        "w2": p.pools.rows["w2"],
        "remaining": p.pools.rows["remaining"],
    }
