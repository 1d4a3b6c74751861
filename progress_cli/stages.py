"""Stage commands run by hand, as the original's scripts are: ``features`` (docs/algorithm.md#features),
``cluster`` (docs/algorithm.md#concept-clustering), ``warmup`` (docs/algorithm.md#warm-up-pools) from this
module, and ``select`` (docs/algorithm.md#selection) from ``progress_cli.select_cmd``.

Each command takes its input and output paths as options and every knob from the run config
(``--config``/``--preset``/``--set``, see :mod:`progress_cli.options`), so a default lives in one place
(docs/architecture.md#configuration).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from progress_cli.options import EXPLAIN_HINT, ConfigFile, PresetName, resolve_config, set_option
from progress_cli.usage import CommandGroup
from progress_core.errors import ProgressError


class StageInputError(ProgressError):
    """A stage command got a missing file or inconsistent inputs."""


class ClusteringName(str, Enum):
    """The two clusterings of a run (docs/algorithm.md#concept-clustering)."""

    annotation = "annotation"
    selection = "selection"


def _need_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise StageInputError(f"{what} not found: {path}")
    return path


def _register_features(app: typer.Typer) -> None:
    """Add ``progress features`` and ``progress features import``."""
    features_app = typer.Typer(
        cls=CommandGroup,
        help="Extract image + question features for every manifest row, or import features computed elsewhere.",
        invoke_without_command=True,
        no_args_is_help=False,
    )
    app.add_typer(features_app, name="features")
    features_app.callback(epilog=EXPLAIN_HINT)(_features_command)
    features_app.command("import", epilog=EXPLAIN_HINT)(_features_import_command)


def _features_command(
    ctx: typer.Context,
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="manifest Parquet (one row per sample)"),
    images: Optional[Path] = typer.Option(
        None, "--images", help="image root the manifest's paths are relative to (default: data.image_root)"
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="output float16 .npy, row i = sample_id i"),
    config: ConfigFile = None,
    preset: PresetName = None,
    set_: Optional[list[str]] = set_option("features.image_encoder=dinov2"),
) -> None:
    """Extract image + question features for every manifest row (DINOv2/descriptor + MiniLM).

    Encoders, batch size, device and balance come from the config's `features` section, the rows per shard
    from `shard_size`. `progress features import ...` stores features computed elsewhere instead (see its
    --help).
    """
    if ctx.invoked_subcommand is not None:
        return
    if manifest is None or out is None:
        raise StageInputError("features needs --manifest and --out (or use `progress features import`)")
    from progress_core.features.extract import extract_features

    _need_file(manifest, "manifest")
    cfg = resolve_config(config, preset, set_)
    if cfg.feature_config().import_sources():
        raise StageInputError("the config names features to import (features.import_*); use `progress features import`")
    image_root = images if images is not None else cfg.data.image_root
    report = extract_features(manifest, image_root, out, cfg.feature_config(), shard_size=cfg.shard_size, progress=True)
    typer.echo(
        f"wrote {report.path}: {report.n} x {report.dim} float16 "
        f"(image {report.image_dim} + text {report.text_dim}); text-only rows {report.n_text_only}; "
        f"unreadable images {report.n_image_failures}"
    )
    if report.failed_sample_ids:
        shown = ", ".join(map(str, report.failed_sample_ids[:10]))
        typer.echo(f"unreadable image sample_ids (first 10): {shown}")


def _import_sources(image, text, joint, ids, cfg) -> dict[str, str]:
    """The files to import: the ones given on the command line, else the config's ``features.import_*``."""
    given = {"image": image, "text": text, "features": joint, "ids": ids}
    if any(path is not None for path in given.values()):
        return {name: str(path.resolve()) for name, path in given.items() if path is not None}
    return {name: str(Path(path).resolve()) for name, path in cfg.feature_config().import_sources().items()}


def _features_import_command(
    manifest: Path = typer.Option(..., "--manifest", help="manifest Parquet the features belong to"),
    out: Path = typer.Option(..., "--out", help="output directory: features.npy and its stage record"),
    image: Optional[Path] = typer.Option(
        None, "--image", help="image features .npy in pool order (the original's DINOv2 file)"
    ),
    text: Optional[Path] = typer.Option(
        None, "--text", help="text features .npy in pool order (the original's MiniLM file)"
    ),
    joint: Optional[Path] = typer.Option(
        None,
        "--features",
        help="joint features: .npy in pool order (or keyed by --ids), or Parquet with sample_id and a "
        "'features' (or 'image' + 'text') list column",
    ),
    ids: Optional[Path] = typer.Option(
        None, "--ids", help="sample ids of the --features .npy rows (.npy of ints or Parquet sample_id column)"
    ),
    config: ConfigFile = None,
    preset: PresetName = None,
    set_: Optional[list[str]] = set_option("features.balanced=true"),
) -> None:
    """Store features computed elsewhere as the features stage's output (no extraction).

    The output is float16, unit-norm, row i = sample_id i, keyed by the content of the source files:
    importing the same files again does nothing, changed files are imported again. A row count or a set
    of ids that does not match the manifest is an error. Without --image/--text/--features the config's
    features.import_* files are imported; features.balanced normalises the image and text parts separately.
    """
    import pyarrow.parquet as pq

    from progress_core.io import file_hash
    from tasks.feature_import import import_fingerprint, import_stage
    from tasks.stage import StageRecord

    _need_file(manifest, "manifest")
    cfg = resolve_config(config, preset, set_)
    sources = _import_sources(image, text, joint, ids, cfg)
    n = pq.ParquetFile(manifest).metadata.num_rows
    record = StageRecord(
        stage="manifest",
        out_dir=str(manifest.parent.resolve()),
        files={"manifest": str(manifest.resolve())},
        rows={"manifest": n},
        content_hash=file_hash(manifest)[:24],
    )
    out_dir = str(out.resolve())
    result = import_stage.fn(
        manifest=record,
        sources=sources,
        fingerprint=import_fingerprint(sources, out_dir),
        balanced=cfg.features.balanced,
        out_dir=out_dir,
    )
    dims = f"image {result.meta['image_dim']} + text {result.meta['text_dim']}" if result.meta["image_dim"] else ""
    typer.echo(
        f"features {result.files['features']}: {result.rows['features']} rows ({result.meta['imported']}"
        f"{'; ' + dims if dims else ''}); all-zero rows {result.meta['n_zero_rows']}; key {result.key}"
    )


def _cluster_command(
    features: Path = typer.Option(..., "--features", help="feature .npy written by `progress features`"),
    out: Path = typer.Option(..., "--out", help="output directory"),
    name: ClusteringName = typer.Option(
        ...,
        "--name",
        help="annotation (k: clustering.annotation_k) or selection (k: clustering.selection_k)",
    ),
    config: ConfigFile = None,
    preset: PresetName = None,
    set_: Optional[list[str]] = set_option("clustering.annotation_k=40"),
) -> None:
    """Spherical k-means of the features with faiss; writes <name>_assignment.parquet and <name>_centroids.npy.

    The number of centres is clustering.annotation_k or clustering.selection_k (empty: the preset's
    pool_scale, e.g. the paper's 1000 / 5000 per 665,298 rows, scaled to the pool); iterations, seed, subsampling and device come from the `clustering`
    section, as in a run.
    """
    import numpy as np

    from progress_core.clustering.kmeans import spherical_kmeans
    from progress_core.clustering.store import save_clustering
    from progress_core.features.store import load_features

    cfg = resolve_config(config, preset, set_)
    feats = load_features(_need_file(features, "features"))
    sized, _ = cfg.sized_to_pool(feats.shape[0])
    settings = sized.clustering_config()
    k_used = settings.selection_k if name is ClusteringName.selection else settings.annotation_k
    typer.echo(
        f"k-means: {feats.shape[0]} x {feats.shape[1]} features, k={k_used}, niter={settings.niter}, "
        f"seed={settings.seed}"
    )
    result = spherical_kmeans(
        feats,
        k_used,
        niter=settings.niter,
        seed=settings.seed,
        max_points_per_centroid=settings.max_points_per_centroid,
        spherical=settings.spherical,
        gpu=settings.use_gpu,
    )
    a_path, c_path = save_clustering(result, out, name.value)
    sizes = np.bincount(result.assignment, minlength=k_used)
    typer.echo(f"wrote {a_path} and {c_path}; cluster sizes min {sizes.min()} max {sizes.max()}")


def _warmup_command(
    features: Path = typer.Option(..., "--features", help="feature .npy written by `progress features`"),
    clusters: Path = typer.Option(..., "--clusters", help="directory of the selection clustering"),
    name: str = typer.Option("selection", "--name", help="clustering name inside --clusters"),
    out: Path = typer.Option(..., "--out", help="output directory for w1/w2/remaining Parquet"),
    config: ConfigFile = None,
    preset: PresetName = None,
    set_: Optional[list[str]] = set_option("warmup.fractions=[0.075,0.09]"),
) -> None:
    """COINCIDE warm-up pools: W1 (Top_50K), W2 (Top_60K minus Top_50K) and the remaining pool.

    Writes w1.parquet, w2.parquet, remaining.parquet and order.parquet (the second fraction's picks in
    pruning order), the same files as a run's warmup/ folder; fractions, temperature and sigma come from the
    `warmup` section. With selection.strategy=coincide it also writes coincide_order.parquet, the whole
    budget (every sample trained up to the last planned step, plus room for the warm-up samples) chosen at once, as a run
    with that strategy does
    (docs/architecture.md#file-kinds).
    """
    from progress_core.clustering.coincide import coincide_selection, warmup_pools
    from progress_core.clustering.store import load_clustering
    from progress_core.features.store import load_features
    from progress_core.id_sets import write_ids
    from progress_core.selection.schedule import coincide_budget, planned_final_step

    cfg = resolve_config(config, preset, set_)
    feats = load_features(_need_file(features, "features"))
    fine = load_clustering(_need_file(clusters, "clusters directory"), name)
    n = feats.shape[0]
    if fine.assignment.shape[0] != n:
        raise StageInputError(f"clustering has {fine.assignment.shape[0]} rows but features {n}")
    settings = cfg.warmup
    pools = warmup_pools(
        feats, fine, tuple(settings.fractions), temperature=settings.temperature, sigma=settings.sigma, progress=True
    )
    for part in ("w1", "w2", "remaining", "order"):
        write_ids(getattr(pools, part), out / f"{part}.parquet")
    typer.echo(f"w1={pools.w1.size} w2={pools.w2.size} remaining={pools.remaining.size} (of {n}); wrote {out}")
    if cfg.selection.strategy == "coincide":
        warmup = (pools.w1.size, pools.w2.size)
        final_step = planned_final_step(cfg, n, warmup)
        budget = coincide_budget(final_step, cfg.training.global_batch_size, n, warmup)
        ids = coincide_selection(feats, fine, budget, temperature=settings.temperature, sigma=settings.sigma)
        write_ids(ids, out / "coincide_order.parquet")
        typer.echo(f"coincide order: {ids.size} samples; wrote {out / 'coincide_order.parquet'}")


def register(app: typer.Typer) -> None:
    """Add the stage commands to the progress app."""
    from progress_cli.select_cmd import register as _register_select

    _register_features(app)
    app.command("cluster", epilog=EXPLAIN_HINT)(_cluster_command)
    app.command("warmup", epilog=EXPLAIN_HINT)(_warmup_command)
    _register_select(app)
