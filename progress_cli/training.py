"""``progress train`` (continue the run to a step, docs/algorithm.md#training) and ``progress probe``
(per-cluster accuracy, docs/algorithm.md#probe-and-judge), run by hand as the original's Selection_1 /
Selection_2+3 scripts are. Every knob comes from the run config (``--config``/``--preset``/``--set``,
docs/architecture.md#configuration)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Optional

import typer

from progress_cli.options import EXPLAIN_HINT, ConfigFile, PresetName, resolve_config, set_option
from progress_core.errors import ConfigError, ProgressError


class TrainInputError(ProgressError):
    """A train/probe command got a missing file or inconsistent inputs."""


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise TrainInputError(f"{what} not found: {path}")
    return path


def _read_ids(path: Path, what: str):
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(_need(path, what))
    if "sample_id" not in table.column_names:
        raise TrainInputError(f"{what} {path} has no sample_id column")
    ids = table.column("sample_id").to_numpy(zero_copy_only=False)
    if len(ids) and (np.isnan(ids.astype(float)).any()):
        raise TrainInputError(f"{what} {path} has null sample ids")
    return ids.astype(np.int64), table


def _manifest_rows(manifest: Path, ids):
    """Manifest rows of ``ids`` in the given order (sample_id is dense 0..N-1, docs/architecture.md#file-kinds)."""
    import numpy as np

    from progress_core.data.manifest import read_manifest

    table = read_manifest(_need(manifest, "manifest"), columns=["sample_id", "image", "conversations"])
    n = table.num_rows
    bad = np.flatnonzero((ids < 0) | (ids >= n))
    if bad.size:
        raise TrainInputError(f"sample_id {int(ids[bad[0]])} (row {int(bad[0])}) is not in the manifest of {n} rows")
    order = table.column("sample_id").to_numpy()
    if not np.array_equal(order, np.arange(n)):
        raise TrainInputError(f"manifest {manifest} sample_id is not dense 0..{n - 1} in order")
    return table.take(ids)


def _final_step(cfg, checkpoint: Optional[Path], manifest: Path) -> int:
    """FINAL_STEP of the schedule: schedule.final_step when set, else the checkpoint's, else the run's rule
    (``budget_fraction`` of the manifest's rows at the global batch, docs/algorithm.md#round-schedule)."""
    from progress_core.data.manifest import read_manifest
    from progress_core.training.loop import read_train_state

    if cfg.schedule.final_step is not None:
        return cfg.schedule.final_step
    if checkpoint is not None:
        stored = read_train_state(checkpoint).get("final_step")
        if stored is not None:
            return int(stored)
    return cfg.final_step(read_manifest(manifest, columns=["sample_id"]).num_rows)


def _start_model(manifest: Path, model_cfg, tmp: Path) -> Path:
    """A new tiny model whose vocabulary is the manifest's words (docs/algorithm.md#training)."""
    from progress_core.data.manifest import read_manifest
    from progress_core.model.tiny import build_tiny_model

    convs = read_manifest(manifest, columns=["conversations"]).column("conversations").to_pylist()
    texts = [t.get("value", "") for c in convs if c for t in json.loads(c)]
    return build_tiny_model(texts, model_cfg, tmp / "init")


def _train_command(
    samples: Path = typer.Option(..., "--samples", help="Parquet with a sample_id column: this piece's data, in order"),
    manifest: Path = typer.Option(..., "--manifest", help="manifest Parquet the sample ids index"),
    images: Optional[Path] = typer.Option(
        None, "--images", help="image root the manifest's paths are relative to (default: data.image_root)"
    ),
    to_step: int = typer.Option(..., "--to-step", min=0, help="train until this global step"),
    out: Path = typer.Option(..., "--out", help="checkpoint directory to write (HF model dir + training state)"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="continue this checkpoint"),
    init: bool = typer.Option(
        False, "--init", metavar="", help="start a new run (tiny: build the model from the manifest's text)"
    ),
    config: ConfigFile = None,
    preset: PresetName = None,
    set_: Optional[list[str]] = set_option("training.global_batch_size=16"),
) -> None:
    """Continue ONE training run to --to-step on the given samples (steps = ceil(samples / global batch)).

    The model, batch sizes, processes, learning rate, seed and threads come from the `training` section.
    The schedule spans FINAL_STEP: schedule.final_step when set, else the checkpoint's, else
    schedule.budget_fraction of the manifest's rows, as a run computes it.
    """
    from progress_core.training.loop import train_launched

    if (checkpoint is None) == (not init):
        raise ConfigError("give exactly one of --checkpoint (continue) or --init (new run)")
    cfg = resolve_config(config, preset, set_)
    if checkpoint is not None:
        _need(checkpoint, "checkpoint")
    train_cfg = cfg.training_config(_final_step(cfg, checkpoint, _need(manifest, "manifest")))
    ids, _ = _read_ids(samples, "samples")
    rows = _manifest_rows(manifest, ids)
    image_root = images if images is not None else cfg.data.image_root
    with tempfile.TemporaryDirectory(prefix="progress-init-") as tmp:
        start = checkpoint
        if init and train_cfg.model.mode == "tiny":
            start = _start_model(manifest, train_cfg.model, Path(tmp))
        result = train_launched(start, rows, image_root, to_step, train_cfg, out, log_line=typer.echo, progress=True)
    last = f", last loss {result.losses[-1]:.4f}" if result.losses else ""
    typer.echo(f"wrote {result.checkpoint}: step {result.step}, samples seen {result.samples_seen}{last}")


def _probe_rows(manifest: Path, selected: Path, clusters: Path, samples_per_cluster, seed: int):
    """Manifest rows of the probe sample (<= samples_per_cluster selected samples per annotation cluster,
    docs/algorithm.md#probe-and-judge), with their ``cluster_id``."""
    import numpy as np
    import pyarrow as pa

    from progress_core.probe.accuracy import probe_sample

    sel_ids, _ = _read_ids(selected, "selected set")
    assign_ids, assign = _read_ids(clusters, "cluster assignment")
    if "cluster_id" not in assign.column_names:
        raise TrainInputError(f"cluster assignment {clusters} has no cluster_id column")
    lookup = np.full(int(max(assign_ids.max(initial=-1), sel_ids.max(initial=-1))) + 1, -1, dtype=np.int64)
    lookup[assign_ids] = assign.column("cluster_id").to_numpy(zero_copy_only=False).astype(np.int64)
    sel_clusters = lookup[sel_ids]
    missing = np.flatnonzero(sel_clusters < 0)
    if missing.size:
        raise TrainInputError(f"selected sample_id {int(sel_ids[missing[0]])} has no cluster in {clusters}")
    chosen = probe_sample(sel_ids, sel_clusters, samples_per_cluster, seed)
    rows = _manifest_rows(manifest, chosen)
    return rows.append_column("cluster_id", pa.array(lookup[chosen]))


def _probe_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="checkpoint directory to probe"),
    manifest: Path = typer.Option(..., "--manifest", help="manifest Parquet"),
    images: Optional[Path] = typer.Option(
        None, "--images", help="image root the manifest's paths are relative to (default: data.image_root)"
    ),
    selected: Path = typer.Option(
        ...,
        "--selected",
        help="Parquet with sample_id: the set to probe from (a run's probe.source: held_out = the round's "
        "remaining_after set, selected = its selected_until set)",
    ),
    clusters: Path = typer.Option(
        ..., "--clusters", help="annotation cluster assignment Parquet (sample_id, cluster_id)"
    ),
    out: Path = typer.Option(..., "--out", help="directory for probe_samples.parquet and accuracy.parquet"),
    config: ConfigFile = None,
    preset: PresetName = None,
    set_: Optional[list[str]] = set_option("probe.samples_per_cluster=100"),
) -> None:
    """Answer <= N samples of --selected per annotation cluster, judge them, write per-sample and per-cluster tables.

    A run probes what probe.source names: held_out (the default) = samples not selected yet, so pass the
    round's remaining_after set; selected = the selected-so-far set (the original scripts' probe).
    N is probe.samples_per_cluster (empty = all, as at the warm-up probes); the judge is probe.judge.*,
    the batch and threads probe.*, the checkpoint loads with training.model.* (as the trainer wrote it) and
    the probe sample is drawn with the run's seed.
    """
    from progress_core.probe.accuracy import probe, save_probe
    from progress_core.probe.judges import make_judge

    cfg = resolve_config(config, preset, set_)
    probe_cfg = cfg.probe_config()
    _need(checkpoint, "checkpoint")
    rows = _probe_rows(manifest, selected, clusters, probe_cfg.samples_per_cluster, probe_cfg.seed)
    image_root = images if images is not None else cfg.data.image_root
    with make_judge(probe_cfg.judge) as judge_impl:
        result = probe(checkpoint, rows, image_root, judge_impl, probe_cfg, progress=True)
    paths = save_probe(result, out)
    s = result.stats
    typer.echo(
        f"probed {s['n']} samples in {s['clusters']} clusters: {s['correct']} correct, "
        f"{s['unjudged']} unjudged; wrote {paths['per_sample']} and {paths['per_cluster']}"
    )


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``probe`` to the progress app."""
    app.command("train", epilog=EXPLAIN_HINT)(_train_command)
    app.command("probe", epilog=EXPLAIN_HINT)(_probe_command)
