"""Every kind of file a run writes: its name, columns, meaning, and the one function that writes and reads it.

The same file name means the same thing whether the command line (``progress warmup``) or the flow wrote
it, so stage commands run by hand feed each other and the flow's files interchangeably
(docs/architecture.md#file-kinds).
"""

from __future__ import annotations

from dataclasses import dataclass

from progress_core.errors import ProgressError


class FileKindError(ProgressError):
    """A file does not have the columns of the kind it is used as."""


@dataclass(frozen=True)
class FileKind:
    """One kind of file: where it lives, what it holds, and its writer and reader."""

    name: str
    filename: str
    columns: tuple[str, ...]
    meaning: str
    writer: str
    reader: str


_IDS = ("sample_id:int64",)
_IDS_WRITER, _IDS_READER = "progress_core.selection.rounds.write_ids", "progress_core.selection.rounds.read_ids"

FILE_KINDS: dict[str, FileKind] = {
    k.name: k
    for k in (
        FileKind(
            "manifest",
            "manifest.parquet",
            ("sample_id:int64", "id", "image", "question", "answer", "n_turns", "source", "conversations", "extra"),
            "one row per pool sample; row i is sample_id i",
            "progress_core.data.manifest.build_manifest",
            "progress_core.data.manifest.read_manifest",
        ),
        FileKind(
            "features",
            "features.npy",
            ("float16[n, d]",),
            "image + question features, row i = sample_id i (PROGRESS §3.1)",
            "progress_core.io.write_npy",
            "progress_core.features.store.load_features",
        ),
        FileKind(
            "assignment",
            "{name}_assignment.parquet",
            ("sample_id:int64", "cluster_id:int64"),
            "k-means cluster of every sample (annotation: concepts; selection: COINCIDE)",
            "progress_core.clustering.kmeans.save_clustering",
            "progress_core.clustering.kmeans.load_clustering",
        ),
        FileKind(
            "warmup_pool",
            "{w1,w2,remaining}.parquet",
            _IDS,
            "COINCIDE warm-up pools W1, W2 and the pool without both (docs/algorithm.md#warm-up-pools)",
            _IDS_WRITER,
            _IDS_READER,
        ),
        FileKind(
            "warmup_order",
            "order.parquet",
            _IDS,
            "the second warm-up pruning run's picks in the order they were taken",
            _IDS_WRITER,
            _IDS_READER,
        ),
        FileKind(
            "coincide_order",
            "coincide_order.parquet",
            _IDS,
            "the COINCIDE baseline's whole budget in priority order: what `select --strategy coincide` reads",
            _IDS_WRITER,
            _IDS_READER,
        ),
        FileKind(
            "round_ids",
            "{new_<round>,selected_until_<step>,remaining_after_<step>}.parquet",
            _IDS,
            "a round's new samples, everything selected so far, the pool left (docs/algorithm.md#round-schedule)",
            _IDS_WRITER,
            _IDS_READER,
        ),
        FileKind(
            "accuracy",
            "accuracy.parquet",
            ("cluster_id:int64", "n:int64", "correct:int64", "unjudged:int64", "accuracy:float64"),
            "probe accuracy per annotation cluster (docs/algorithm.md#probe-and-judge)",
            "progress_core.probe.accuracy_table.write_accuracy_table",
            "progress_core.probe.accuracy_table.read_accuracy_table",
        ),
    )
}


def kind(name: str) -> FileKind:
    """The file kind called ``name`` (a :class:`FileKindError` naming the known kinds otherwise)."""
    if name not in FILE_KINDS:
        raise FileKindError(f"unknown file kind {name!r}; known: {', '.join(FILE_KINDS)}")
    return FILE_KINDS[name]
