"""Data commands: ``prepare synthetic``, ``manifest``, ``export``, ``stats`` (docs/architecture.md#layers "manifest",
§4 "Data"). They turn a LLaVA pool into the Parquet manifest every later stage reads, and back."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from progress_cli.usage import CommandGroup
from progress_core.data.config import DataConfig

MANIFEST_NAME = "manifest.parquet"


def _default(field: str):
    """The run config's default for ``data.<field>``: one place for each default (docs/architecture.md#configuration)."""
    return DataConfig.model_fields[field].default


def _format(df) -> str:
    return df.to_string(float_format=lambda v: f"{v:.3f}")


def _register_prepare(app: typer.Typer) -> None:
    prepare = typer.Typer(
        cls=CommandGroup, help="Create a ready-to-run pool (pool JSON, images, manifest).", no_args_is_help=True
    )

    @prepare.callback()
    def _prepare() -> None:
        """Create a ready-to-run pool (pool JSON, images, manifest)."""

    @prepare.command("synthetic")
    def synthetic(
        out: Path = typer.Option(
            ..., "--out", help="output folder (pool.json, eval.json, images/, labels.parquet, manifest.parquet)"
        ),
        n: int = typer.Option(_default("synthetic_n"), "--n", help="samples in the selection pool (data.synthetic_n)"),
        n_eval: int = typer.Option(
            _default("synthetic_n_eval"), "--n-eval", help="samples in the evaluation split (data.synthetic_n_eval)"
        ),
        seed: int = typer.Option(
            _default("synthetic_seed"), "--seed", help="generator seed (data.synthetic_seed); same seed, same files"
        ),
        image_size: int = typer.Option(32, "--image-size", help="PNG side in pixels (drawn at 32 px)"),
    ) -> None:
        """Generate the bundled synthetic visual-QA pool and its manifest, then print per-concept statistics.

        Concept families (colour, object colour, shape, count, position, table readout, grid navigation,
        visual analogy, an unlearnable random concept and text-only arithmetic) are learned at different
        speeds by a small model; labels.parquet records concept and difficulty for evaluation only.
        """
        from progress_core.data.manifest import build_manifest
        from progress_core.data.statistics import pool_statistics
        from progress_core.data.synthetic import generate_pool

        pool = generate_pool(out, n=n, n_eval=n_eval, seed=seed, image_size=image_size, verbose=True)
        manifest = Path(out) / MANIFEST_NAME
        build_manifest(pool.pool_json, manifest, image_root=pool.image_root, mode="strict")
        typer.echo(
            f"\nper-concept statistics of the pool ({pool.n} samples, seed {pool.seed}); "
            "majority_rate = accuracy of always giving the most frequent answer:"
        )
        typer.echo(_format(pool_statistics(manifest, pool.labels_path)))
        typer.echo("\nfiles:")
        for name, path in (
            ("pool", pool.pool_json),
            ("eval split", pool.eval_json),
            ("images", pool.image_root),
            ("labels (evaluation only)", pool.labels_path),
            ("manifest", manifest),
        ):
            typer.echo(f"  {name:<25} {path}")

    app.add_typer(prepare, name="prepare")


def register(app: typer.Typer) -> None:
    """Add ``prepare synthetic``, ``manifest``, ``export`` and ``stats`` to the progress app."""
    _register_prepare(app)
    _register_manifest(app)
    _register_export(app)
    _register_stats(app)


def _register_manifest(app: typer.Typer) -> None:
    @app.command("manifest")
    def manifest(
        pool_json: Path = typer.Argument(..., help="LLaVA-format pool: a JSON list of {id, image?, conversations}"),
        out: Path = typer.Option(..., "--out", help="Parquet manifest to write"),
        images: Optional[Path] = typer.Option(
            None, "--images", help="image root; when given, every row's image must exist under it"
        ),
        strict: bool = typer.Option(
            _default("manifest_mode") == "strict",
            "--strict/--skip",
            metavar="",
            help="--skip (default, as `progress run`) drops bad rows, counts them and writes them with reasons "
            "to <out stem>.rejected.jsonl; --strict stops at the first bad row",
        ),
        allow_duplicate_ids: bool = typer.Option(
            _default("allow_duplicate_ids"),
            "--allow-duplicate-ids",
            metavar="",
            help="accept rows that reuse an earlier row's id (data.allow_duplicate_ids)",
        ),
    ) -> None:
        """Convert a LLaVA JSON pool into the Parquet manifest (one row per sample, dense sample_id).

        Rows are validated (JSON syntax, conversations present, human/gpt turn order, unique ids, images
        present); the original rows are kept losslessly, so `progress export` gives them back.
        """
        from progress_core.data.manifest import build_manifest

        report = build_manifest(
            pool_json,
            out,
            image_root=images,
            mode="strict" if strict else "skip",
            allow_duplicate_ids=allow_duplicate_ids,
            verbose=True,
        )
        from progress_core.data.manifest import require_rows

        require_rows(report, pool_json)
        typer.echo(report.summary())


def _register_export(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        manifest_path: Path = typer.Argument(..., metavar="MANIFEST", help="Parquet manifest"),
        out: Path = typer.Option(..., "--out", help="LLaVA JSON file to write"),
    ) -> None:
        """Write a manifest back as a LLaVA JSON list, rows equal to the original input rows."""
        from progress_core.data.manifest import export_llava, read_manifest

        n_rows = read_manifest(manifest_path, columns=["sample_id"]).num_rows
        export_llava(manifest_path, out, verbose=True)
        typer.echo(f"wrote {n_rows} rows to {out}")


def _register_stats(app: typer.Typer) -> None:
    @app.command("stats")
    def stats(
        manifest_path: Path = typer.Argument(..., metavar="MANIFEST", help="Parquet manifest"),
        labels: Optional[Path] = typer.Option(
            None, "--labels", help="labels.parquet of a synthetic pool: group by concept instead of source"
        ),
    ) -> None:
        """Print rows, answer vocabulary and chance level per source (or per concept with --labels)."""
        from progress_core.data.manifest import ManifestFileError, read_manifest, source_statistics

        table = read_manifest(manifest_path)
        if labels is None:
            typer.echo(f"{manifest_path}: {table.num_rows} rows")
            typer.echo(_format(source_statistics(table)))
            return
        if not labels.is_file():
            raise ManifestFileError(f"labels not found: {str(labels)!r}")
        from progress_core.data.statistics import pool_statistics

        typer.echo(f"{manifest_path}: {table.num_rows} rows")
        typer.echo(_format(pool_statistics(table, labels)))
