"""Stage commands run by hand, as the original's scripts are: ``features`` (SPEC §1), ``cluster``
(SPEC §2.1), ``warmup`` (SPEC §2.3-2.4) from this module, and ``select`` (SPEC §3.3) from
``cli.select_cmd``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from progress_core.errors import ProgressError


class StageInputError(ProgressError):
    """A stage command got a missing file or inconsistent inputs."""


def _need_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise StageInputError(f"{what} not found: {path}")
    return path


def _register_features(app: typer.Typer) -> None:
    """Add ``progress features`` (SPEC §1) and ``progress features import``."""
    features_app = typer.Typer(
        help="Extract image + question features for every manifest row, or import features computed elsewhere.",
        invoke_without_command=True,
        no_args_is_help=False,
    )
    app.add_typer(features_app, name="features")

    @features_app.callback()
    def features(
        ctx: typer.Context,
        manifest: Optional[Path] = typer.Option(None, "--manifest", help="manifest Parquet (one row per sample)"),
        images: Optional[Path] = typer.Option(None, "--images", help="image root the manifest's paths are relative to"),
        out: Optional[Path] = typer.Option(None, "--out", help="output float16 .npy, row i = sample_id i"),
        image_encoder: str = typer.Option("descriptor", help="descriptor | dinov2 | local DINOv2 path"),
        text_encoder: str = typer.Option("minilm", help="minilm (bundled all-MiniLM-L6-v2) | local HF encoder path"),
        balanced: bool = typer.Option(False, "--balanced", help="normalise image and text parts separately"),
        batch_size: int = typer.Option(64, min=1, help="encoder batch size"),
        shard_size: int = typer.Option(4096, min=1, help="rows encoded and written per shard"),
        device: str = typer.Option("auto", help="auto | cpu | cuda"),
    ) -> None:
        """Extract image + question features for every manifest row (DINOv2/descriptor + MiniLM, SPEC §1).

        `progress features import ...` stores features computed elsewhere instead (see its --help).
        """
        if ctx.invoked_subcommand is not None:
            return
        if manifest is None or out is None:
            raise StageInputError("features needs --manifest and --out (or use `progress features import`)")
        from progress_core.features import FeatureConfig, extract_features

        _need_file(manifest, "manifest")
        cfg = FeatureConfig(
            image_encoder=image_encoder,
            text_encoder=text_encoder,
            balanced=balanced,
            batch_size=batch_size,
            device=device,
        )
        report = extract_features(manifest, images, out, cfg, shard_size=shard_size, progress=True)
        typer.echo(
            f"wrote {report.path}: {report.n} x {report.dim} float16 "
            f"(image {report.image_dim} + text {report.text_dim}); text-only rows {report.n_text_only}; "
            f"unreadable images {report.n_image_failures}"
        )
        if report.failed_sample_ids:
            shown = ", ".join(map(str, report.failed_sample_ids[:10]))
            typer.echo(f"unreadable image sample_ids (first 10): {shown}")

    @features_app.command("import")
    def import_cmd(
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
        balanced: bool = typer.Option(False, "--balanced", help="normalise image and text parts separately"),
    ) -> None:
        """Store features computed elsewhere as the features stage's output (no extraction).

        The output is float16, unit-norm, row i = sample_id i, keyed by the content of the source files:
        importing the same files again does nothing, changed files are imported again. A row count or a set
        of ids that does not match the manifest is an error.
        """
        import pyarrow.parquet as pq

        from progress_core.io import file_hash
        from tasks.features import import_fingerprint, import_stage
        from tasks.stage import StageRecord

        _need_file(manifest, "manifest")
        sources = {
            name: str(path.resolve())
            for name, path in (("image", image), ("text", text), ("features", joint), ("ids", ids))
            if path is not None
        }
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
            balanced=balanced,
            out_dir=out_dir,
        )
        dims = f"image {result.meta['image_dim']} + text {result.meta['text_dim']}" if result.meta["image_dim"] else ""
        typer.echo(
            f"features {result.files['features']}: {result.rows['features']} rows ({result.meta['imported']}"
            f"{'; ' + dims if dims else ''}); all-zero rows {result.meta['n_zero_rows']}; key {result.key}"
        )


def _register_cluster(app: typer.Typer) -> None:
    """Add ``progress cluster`` (SPEC §2.1)."""

    @app.command("cluster")
    def cluster(
        features: Path = typer.Option(..., "--features", help="feature .npy written by `progress features`"),
        out: Path = typer.Option(..., "--out", help="output directory"),
        name: str = typer.Option(..., "--name", help="annotation (paper k=1000) or selection (paper k=5000)"),
        k: Optional[int] = typer.Option(
            None, "--k", min=1, help="number of centres; default: --paper-k scaled to the pool"
        ),
        paper_k: Optional[int] = typer.Option(
            None, "--paper-k", min=1, help="paper's k for 665,298 samples (default 1000 annotation, 5000 selection)"
        ),
        niter: int = typer.Option(50, min=1, help="k-means iterations"),
        seed: int = typer.Option(1234, help="faiss k-means seed"),
        max_points_per_centroid: int = typer.Option(256, min=1, help="faiss training subsample per centre"),
    ) -> None:
        """Spherical k-means of the features with faiss; writes <name>_assignment.parquet and <name>_centroids.npy."""
        import numpy as np

        from progress_core.clustering import (
            PAPER_ANNOTATION_K,
            PAPER_SELECTION_K,
            resolve_k,
            save_clustering,
            spherical_kmeans,
        )
        from progress_core.features import load_features

        feats = load_features(_need_file(features, "features"))
        default_paper_k = PAPER_SELECTION_K if name == "selection" else PAPER_ANNOTATION_K
        k_used = resolve_k(k, feats.shape[0], paper_k or default_paper_k)
        typer.echo(f"k-means: {feats.shape[0]} x {feats.shape[1]} features, k={k_used}, niter={niter}, seed={seed}")
        result = spherical_kmeans(
            feats, k_used, niter=niter, seed=seed, max_points_per_centroid=max_points_per_centroid
        )
        a_path, c_path = save_clustering(result, out, name)
        sizes = np.bincount(result.assignment, minlength=k_used)
        typer.echo(f"wrote {a_path} and {c_path}; cluster sizes min {sizes.min()} max {sizes.max()}")


def _register_warmup(app: typer.Typer) -> None:
    """Add ``progress warmup`` (SPEC §2.3-2.4)."""

    @app.command("warmup")
    def warmup(
        features: Path = typer.Option(..., "--features", help="feature .npy written by `progress features`"),
        clusters: Path = typer.Option(..., "--clusters", help="directory of the selection clustering"),
        name: str = typer.Option("selection", "--name", help="clustering name inside --clusters"),
        fractions: tuple[float, float] = typer.Option(
            (0.075, 0.09), "--fractions", help="the two pool fractions W1 and W1+W2 (paper 0.075 0.09)"
        ),
        temperature: float = typer.Option(0.1, min=1e-9, help="softmax temperature of the cluster quotas"),
        sigma: float = typer.Option(1.0, min=1e-9, help="Gaussian kernel width of the density and MMD greedy"),
        coincide_budget: Optional[int] = typer.Option(
            None,
            "--coincide-budget",
            min=1,
            help="also write coincide_order.parquet: this many samples in COINCIDE priority order, "
            "the input of `progress select --strategy coincide` (the run uses FINAL_STEP x global batch)",
        ),
        out: Path = typer.Option(..., "--out", help="output directory for w1/w2/remaining Parquet"),
    ) -> None:
        """COINCIDE warm-up pools: W1 (Top_50K), W2 (Top_60K minus Top_50K) and the remaining pool.

        Writes w1.parquet, w2.parquet, remaining.parquet and order.parquet (the second fraction's picks in
        pruning order), the same files as a run's warmup/ folder. With --coincide-budget it also writes
        coincide_order.parquet, as a run with strategy coincide does (docs/architecture.md#file-kinds).
        """
        from progress_core.clustering import load_clustering
        from progress_core.coincide import coincide_selection, warmup_pools
        from progress_core.features import load_features
        from progress_core.rounds import write_ids

        feats = load_features(_need_file(features, "features"))
        fine = load_clustering(_need_file(clusters, "clusters directory"), name)
        if fine.assignment.shape[0] != feats.shape[0]:
            raise StageInputError(f"clustering has {fine.assignment.shape[0]} rows but features {feats.shape[0]}")
        pools = warmup_pools(
            feats, fine, (fractions[0], fractions[1]), temperature=temperature, sigma=sigma, progress=True
        )
        for part in ("w1", "w2", "remaining", "order"):
            write_ids(getattr(pools, part), out / f"{part}.parquet")
        typer.echo(
            f"w1={pools.w1.size} w2={pools.w2.size} remaining={pools.remaining.size} (of {feats.shape[0]}); wrote {out}"
        )
        if coincide_budget is not None:
            ids = coincide_selection(
                feats, fine, min(coincide_budget, feats.shape[0]), temperature=temperature, sigma=sigma
            )
            write_ids(ids, out / "coincide_order.parquet")
            typer.echo(f"coincide order: {ids.size} samples; wrote {out / 'coincide_order.parquet'}")


def register(app: typer.Typer) -> None:
    """Add the stage commands to the progress app."""
    from cli.select_cmd import register as _register_select

    _register_features(app)
    _register_cluster(app)
    _register_warmup(app)
    _register_select(app)
