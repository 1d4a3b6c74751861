"""``progress select``: one selection round by hand, as the original's ``acc_sort.py`` call (docs/algorithm.md#selection)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from progress_cli.options import EXPLAIN_HINT, ConfigFile, PresetName, resolve_config, set_option
from progress_core.errors import ProgressError

SUMMARY_ROWS = 10
"""Clusters shown in the printed summary (all of them are in --cluster-table)."""


class SelectInputError(ProgressError):
    """An input file of ``progress select`` is missing or does not fit the others."""


def _load_assignment(path: Path, n_manifest: int | None) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise SelectInputError(f"cluster assignment not found: {str(path)!r}")
    try:
        table = pq.read_table(path, columns=["sample_id", "cluster_id"])
    except (pa.ArrowInvalid, OSError, KeyError) as exc:
        raise SelectInputError(f"{str(path)!r} is not a cluster assignment (sample_id, cluster_id): {exc}") from None
    sid = table.column("sample_id").to_numpy()
    cid = table.column("cluster_id").to_numpy()
    order = np.argsort(sid, kind="stable")
    if not np.array_equal(sid[order], np.arange(sid.size)):
        raise SelectInputError(f"{str(path)!r}: sample_id is not exactly 0..{sid.size - 1}")
    if n_manifest is not None and sid.size != n_manifest:
        raise SelectInputError(f"{str(path)!r} has {sid.size} samples, the manifest {n_manifest}")
    return cid[order].astype(np.int64)


def _manifest_rows(path: Optional[Path]) -> int | None:
    if path is None:
        return None
    from progress_core.data.manifest import read_manifest

    return read_manifest(path, columns=["sample_id"]).num_rows


def _summary(result, top: int) -> str:
    t = result.cluster_table
    split = f" (exploit {result.n_exploit}, explore {result.n_explore})" if result.strategy == "progress" else ""
    lines = [
        f"strategy {result.strategy}: selected {result.sample_ids.size}{split} from "
        f"{int(t['available'].sum())} remaining in {int((t['available'] > 0).sum())} clusters"
    ]
    lines += [f"note: {n}" for n in result.notes]
    shown = t[t["selected"] > 0].sort_values(["selected", "cluster_id"], ascending=[False, True]).head(top)
    if not shown.empty:
        cols = [
            c
            for c in ("cluster_id", "acc_prev", "acc_now", "rel", "probability", "available", "quota", "selected")
            if not shown[c].isna().all()
        ]
        lines.append(shown[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    return "\n".join(lines)


def _history(cluster_ids: np.ndarray, acc_prev, acc_now, selected, coincide_order):
    """The selection's inputs from earlier rounds, the accuracy tables checked against the annotation."""
    from progress_core.id_sets import read_ids
    from progress_core.probe.accuracy_table import read_accuracy_table
    from progress_core.run.validation import check_accuracy_clusters
    from progress_core.selection.context import SelectionHistory

    history = SelectionHistory(
        acc_prev=read_accuracy_table(acc_prev) if acc_prev is not None else None,
        acc_now=read_accuracy_table(acc_now) if acc_now is not None else None,
        selected=read_ids(selected) if selected is not None else np.empty(0, dtype=np.int64),
        coincide_order=read_ids(coincide_order) if coincide_order is not None else None,
    )
    for label, path, table, drawn_from in (
        ("--acc-prev", acc_prev, history.acc_prev, None),
        ("--acc-now", acc_now, history.acc_now, history.selected if selected is not None else None),
    ):
        if table is not None:
            check_accuracy_clusters(
                table["cluster_id"].to_numpy(), cluster_ids, f"{label} {path}", selected_ids=drawn_from
            )
    return history


@dataclass(frozen=True)
class SelectInputs:
    """The files one selection round reads (the command's path options)."""

    clusters: Path
    remaining: Path
    manifest: Path | None = None
    acc_prev: Path | None = None
    acc_now: Path | None = None
    selected: Path | None = None
    coincide_order: Path | None = None


def selection_budget(cfg, pool_rows: int) -> int:
    """SELECTION_NUM in whole global batches, as a run spends it (docs/algorithm.md#round-schedule); an empty
    SELECTION_NUM is scaled to the pool of ``pool_rows`` as in a run (docs/algorithm.md#pool-scale)."""
    from progress_core.selection.schedule import whole_batches

    cfg, notes = cfg.sized_to_pool(pool_rows)
    for note in (n for n in notes if n.startswith("selection.")):
        typer.echo(f"scaled to the pool: {note}")
    budget = whole_batches(cfg.selection.selection_num, cfg.training.global_batch_size)
    if budget != cfg.selection.selection_num:
        typer.echo(
            f"budget {budget}: selection.selection_num {cfg.selection.selection_num} in whole batches of "
            f"{cfg.training.global_batch_size}"
        )
    return budget


def select_round(cfg, inputs: SelectInputs, round_index: int, out: Path, cluster_table: Path | None):
    """Select as round ``round_index`` of a run does (draw seeded by ``(seed, round)``) and write the ids."""
    from tqdm import tqdm

    from progress_core.id_sets import read_ids, write_ids
    from progress_core.io import write_parquet
    from progress_core.selection.strategies import select

    options = cfg.selection.progress_options() if cfg.selection.strategy == "progress" else {}
    with tqdm(total=3, desc="select", unit="stage", leave=False, disable=None) as bar:
        cluster_ids = _load_assignment(inputs.clusters, _manifest_rows(inputs.manifest))
        budget = selection_budget(cfg, cluster_ids.size)
        history = _history(cluster_ids, inputs.acc_prev, inputs.acc_now, inputs.selected, inputs.coincide_order)
        pool = read_ids(inputs.remaining)
        bar.update()
        rng = np.random.default_rng([cfg.seed, round_index])
        result = select(cfg.selection.strategy, pool, cluster_ids, history, budget, rng, **options)
        bar.update()
        write_ids(result.sample_ids, out, extra={"cluster_id": cluster_ids[result.sample_ids]})
        if cluster_table is not None:
            write_parquet(result.cluster_table, cluster_table)
        bar.update()
    return result


def register(app: typer.Typer) -> None:
    """Add ``progress select`` to the progress app."""

    @app.command("select", epilog=EXPLAIN_HINT)
    def select_command(
        clusters: Path = typer.Option(..., "--clusters", help="Cluster assignment Parquet (sample_id, cluster_id)."),
        remaining: Path = typer.Option(..., "--remaining", help="Remaining pool: Parquet with a sample_id column."),
        out: Path = typer.Option(..., "--out", help="Output Parquet of the new sample_ids (with cluster_id)."),
        manifest: Optional[Path] = typer.Option(None, "--manifest", help="Manifest Parquet (checks the sample count)."),
        acc_prev: Optional[Path] = typer.Option(
            None,
            "--acc-prev",
            help="Accuracy at the previous probe: our Parquet or the original combined_results_internVL.json.",
        ),
        acc_now: Optional[Path] = typer.Option(None, "--acc-now", help="Accuracy at the current probe (same formats)."),
        selected: Optional[Path] = typer.Option(None, "--selected", help="Selected-so-far Parquet (tfs counts it)."),
        coincide_order: Optional[Path] = typer.Option(
            None, "--coincide-order", help="Parquet of sample_ids in COINCIDE priority order (strategy coincide)."
        ),
        cluster_table: Optional[Path] = typer.Option(
            None,
            "--cluster-table",
            help="Also write the per-cluster table (accuracies, rel, probability, quota, selected) as Parquet.",
        ),
        config: ConfigFile = None,
        preset: PresetName = None,
        round_index: int = typer.Option(
            2,
            "--round",
            min=0,
            help="Index of the round this selection is in a run (2 = the first after the warm-up); the draw is "
            "seeded by (seed, round) as in a run.",
        ),
        set_: Optional[list[str]] = set_option("selection.strategy=random"),
    ) -> None:
        """Select the next samples from the remaining pool (PROGRESS §3.3) and write them as Parquet.

        The strategy, the budget (selection.selection_num, rounded down to whole training.global_batch_size
        batches as in a run), the seed and the progress knobs come from the run config (selection.*, seed).
        The accuracy tables must belong to the annotation given by --clusters: a cluster id it does not know,
        or (with --selected) a cluster of the selected samples without a row in --acc-now, is an error.
        """
        cfg = resolve_config(config, preset, set_)
        inputs = SelectInputs(clusters, remaining, manifest, acc_prev, acc_now, selected, coincide_order)
        result = select_round(cfg, inputs, round_index, out, cluster_table)
        typer.echo(_summary(result, SUMMARY_ROWS))
        typer.echo(f"wrote {result.sample_ids.size} sample_ids to {out}")
