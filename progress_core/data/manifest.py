"""LLaVA instruction pool (JSON) <-> Parquet manifest, with validation.

docs/architecture.md#layers "manifest": every later stage (features, clustering, selection, training) addresses samples by
a dense integer ``sample_id`` (0..N-1 in input order) read from this one Parquet file, instead of by
list position in a 1 GB JSON file as the original scripts do (docs/algorithm.md#differences-from-the-original-scripts: set operations on
``sample_id`` replace O(N·M) dict comparisons).

The JSON is streamed: rows are decoded one at a time with :meth:`json.JSONDecoder.raw_decode` over a
buffered read and turned into Arrow columns in record batches, so peak memory stays a small multiple of
one batch (plus the set of ids seen) rather than of the whole ``llava_v1_5_mix665k.json`` (665K rows,
~1 GB). The original row is kept losslessly (``conversations`` as JSON text, other keys in ``extra``,
key order and non-string ids in ``layout``), so exporting gives rows equal to the input, which is what
the original scripts consume (``Top_50K.json``, ``fastest_acc_data_7500.json``, docs/architecture.md#file-kinds).
"""

from __future__ import annotations

import codecs
import collections
import json
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from progress_core.errors import ProgressError
from progress_core.io import atomic_path, parquet_schema

if TYPE_CHECKING:
    import pandas as pd

IMAGE_TOKEN = "<image>"
TEXT_SOURCE = "text"
BARE_IMAGE_SOURCE = "image"

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("image", pa.string()),
        pa.field("question", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("n_turns", pa.int32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("conversations", pa.string(), nullable=False),
        pa.field("extra", pa.string()),
        pa.field("layout", pa.string()),
    ],
    metadata={b"progress.manifest_version": b"1"},
)
"""Manifest columns (docs/architecture.md#file-kinds). ``layout`` is null for rows shaped ``{id, [image,] conversations,
...extra}`` with a string id; otherwise a JSON object with the original key order (``keys``) and/or the
original non-string ``id`` value, so the export reproduces the row exactly."""

REQUIRED_COLUMNS = ("sample_id", "id", "image", "question", "answer", "n_turns", "source", "conversations", "extra")

_CORE_KEYS = frozenset(("id", "image", "conversations"))
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_COMPACT = (",", ":")


class ManifestError(ProgressError):
    """A pool or manifest cannot be read as a LLaVA pool; ``row`` is the 0-based row of the JSON list."""

    def __init__(
        self, reason: str, row: int | None = None, path: str | os.PathLike | None = None, sample: str | None = None
    ):
        self.reason = reason
        self.row = row
        self.path = None if path is None else str(path)
        self.sample = sample
        where = []
        if self.path:
            where.append(self.path)
        if row is not None:
            where.append(f"row {row} (0-based)" + (f" (id {sample!r})" if sample is not None else ""))
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)


class ManifestFileError(ManifestError):
    """The pool or manifest file is missing or is not a manifest (wrong columns)."""


class MalformedJSONError(ManifestError):
    """Not valid JSON, not a list, a row that is not an object, or a row without a usable ``id``/``image``."""


class MissingConversationsError(ManifestError):
    """A row has no ``conversations`` list, or an empty one."""


class TurnOrderError(ManifestError):
    """Turns do not alternate human/gpt starting with human, lack a string ``value``, or have no answer."""


class DuplicateIdError(ManifestError):
    """A row reuses the ``id`` of an earlier row."""


class MissingImageError(ManifestError):
    """A row's ``image`` does not exist under the image root (or points outside it)."""


class UnreadableImageError(ManifestError):
    """A row's image exists but does not decode (a truncated file, or not an image at all)."""


class ManifestReport(BaseModel):
    """What :func:`build_manifest` wrote and what it dropped (skip mode), per error class."""

    manifest_path: str = Field(description="Parquet manifest written")
    rejected_path: str | None = Field(None, description="JSON-lines file of dropped rows (skip mode)")
    n_input_rows: int = Field(description="rows in the input JSON list")
    n_rows: int = Field(description="rows in the manifest")
    n_rejected: int = Field(0, description="rows dropped in skip mode")
    rejected_by_error: dict[str, int] = Field(default_factory=dict, description="dropped rows per error")
    n_text_only: int = Field(0, description="manifest rows without an image")
    rows_by_source: dict[str, int] = Field(default_factory=dict, description="manifest rows per source")

    def summary(self) -> str:
        """Human-readable multi-line summary (CLI output)."""
        lines = [f"manifest: {self.manifest_path} ({self.n_rows} of {self.n_input_rows} rows)"]
        lines.append("sources: " + ", ".join(f"{k}={v}" for k, v in sorted(self.rows_by_source.items())))
        if self.rejected_path is not None:
            per = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected_by_error.items())) or "none"
            lines.append(f"rejected: {self.n_rejected} ({per}) -> {self.rejected_path}")
        return "\n".join(lines)


def rejected_path_for(manifest_path: str | os.PathLike) -> Path:
    """Where skip mode writes dropped rows: ``<manifest stem>.rejected.jsonl`` beside the manifest."""
    p = Path(manifest_path)
    return p.with_name(p.stem + ".rejected.jsonl")


def iter_json_array(
    path: str | os.PathLike, chunk_bytes: int = 1 << 22, max_row_chars: int = 1 << 26, on_bytes=None
) -> Iterator[tuple[int, Any]]:
    """Yield ``(row index, decoded value)`` for each element of a top-level JSON list, streaming.

    Only the current read buffer (``chunk_bytes``, grown up to ``max_row_chars`` for one huge row) is
    held in memory. Syntax errors raise :class:`MalformedJSONError` with the row index and character
    offset: past a syntax error, row boundaries are unknown, so this is fatal in skip mode too.
    """
    decoder = json.JSONDecoder()
    with open(path, "rb") as f:
        reader = _JsonListReader(f, path, chunk_bytes, on_bytes)
        if not reader.open_list():
            return
        row = 0
        while True:
            value, end = reader.decode_row(decoder, row, max_row_chars)
            yield row, value
            reader.pos = end
            if not reader.next_row_follows(row):
                return
            row += 1


class _JsonListReader:
    """The read buffer of :func:`iter_json_array`: decoded text from ``offset`` on, and a cursor ``pos`` in it.

    Consumed text is dropped on each refill, so memory holds one chunk plus the row being decoded.
    """

    __slots__ = ("file", "path", "chunk_bytes", "on_bytes", "utf8", "buf", "pos", "offset", "eof")

    def __init__(self, file, path, chunk_bytes: int, on_bytes) -> None:
        self.file = file
        self.path = path
        self.chunk_bytes = chunk_bytes
        self.on_bytes = on_bytes
        self.utf8 = codecs.getincrementaldecoder("utf-8-sig")()
        self.buf = ""
        self.pos = 0
        self.offset = 0
        self.eof = False

    def fill(self) -> None:
        data = self.file.read(self.chunk_bytes)
        if self.on_bytes is not None and data:
            self.on_bytes(len(data))
        try:
            text = self.utf8.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise MalformedJSONError(f"not UTF-8 text: {exc.reason}", path=self.path) from None
        self.offset += self.pos
        self.buf = self.buf[self.pos :] + text
        self.pos = 0
        self.eof = not data

    def skip_ws(self) -> None:
        while True:
            self.pos = _WHITESPACE.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or self.eof:
                return
            self.fill()

    def here(self) -> str:
        return self.buf[self.pos : self.pos + 1]

    def open_list(self) -> bool:
        """Consume the opening ``[``; False when the list is empty (and nothing follows it)."""
        self.fill()
        self.skip_ws()
        if self.here() != "[":
            raise MalformedJSONError(
                "a LLaVA pool is a JSON list of rows; the file does not start with '['", path=self.path
            )
        self.pos += 1
        self.skip_ws()
        if self.here() == "]":
            self.pos += 1
            self.expect_end(0)
            return False
        return True

    def decode_row(self, decoder: json.JSONDecoder, row: int, max_row_chars: int) -> tuple[Any, int]:
        """Decode the row at the cursor, reading more while it may be cut by the buffer's end."""
        while True:
            self.skip_ws()
            try:
                value, end = decoder.raw_decode(self.buf, self.pos)
                truncated = end == len(self.buf) and not self.eof and not isinstance(value, (dict, list, str))
            except json.JSONDecodeError as exc:
                if self.eof or len(self.buf) - self.pos > max_row_chars:
                    raise MalformedJSONError(
                        f"invalid JSON at character {self.offset + exc.pos}: {exc.msg}", row=row, path=self.path
                    ) from None
                truncated = True
            if not truncated:
                return value, end
            self.fill()

    def next_row_follows(self, row: int) -> bool:
        """Consume the ``,`` (True) or the closing ``]`` (False) after ``row``; anything else is malformed."""
        self.skip_ws()
        c = self.here()
        if c == ",":
            self.pos += 1
            return True
        if c == "]":
            self.pos += 1
            self.expect_end(row + 1)
            return False
        found = repr(c) if c else "end of file"
        raise MalformedJSONError(
            f"invalid JSON at character {self.offset + self.pos}: expected ',' or ']' after the row, found {found}",
            row=row,
            path=self.path,
        )

    def expect_end(self, n_rows: int) -> None:
        self.skip_ws()
        if self.pos < len(self.buf):
            raise MalformedJSONError(
                f"invalid JSON at character {self.offset + self.pos}: extra data after the list of {n_rows} rows",
                path=self.path,
            )


class _Row:
    __slots__ = ("id", "image", "question", "answer", "n_turns", "source", "conversations", "extra", "layout")


def _parse_row(value: Any, row: int) -> _Row:
    """Validate one LLaVA row and derive its manifest fields (raises a :class:`ManifestError` subclass)."""
    raw_id, sample = _row_id(value, row)
    image = value.get("image")
    if image is not None and not isinstance(image, str):
        raise MalformedJSONError(f"'image' must be a path string, got {type(image).__name__}", row=row, sample=sample)
    conv = _conversations(value, row, sample)

    r = _Row()
    r.id = sample
    r.image = image
    r.question = conv[0]["value"].replace(IMAGE_TOKEN, "").strip()
    r.answer = conv[1]["value"]
    r.n_turns = len(conv)
    if image is None:
        r.source = TEXT_SOURCE
    else:
        head, sep, _ = image.partition("/")
        r.source = head if sep else BARE_IMAGE_SOURCE
    r.conversations = json.dumps(conv, ensure_ascii=False, separators=_COMPACT)
    r.extra, r.layout = _extra_and_layout(value, raw_id, image)
    return r


def _row_id(value: Any, row: int) -> tuple[Any, str]:
    """The row's ``id`` as written (``raw_id``) and as the manifest's string ``id``; ``value`` must be an object."""
    if not isinstance(value, dict):
        raise MalformedJSONError(f"row is a JSON {type(value).__name__}, not an object", row=row)
    if "id" not in value:
        raise MalformedJSONError("row has no 'id'", row=row)
    raw_id = value["id"]
    if isinstance(raw_id, str):
        return raw_id, raw_id
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        return raw_id, str(raw_id)
    raise MalformedJSONError(f"'id' must be a string or an integer, got {raw_id!r}", row=row)


def _conversations(value: dict, row: int, sample: str) -> list:
    """The row's turns, checked to alternate human/gpt from a human turn, each with a string ``value``."""
    if "conversations" not in value:
        raise MissingConversationsError("row has no 'conversations'", row=row, sample=sample)
    conv = value["conversations"]
    if not isinstance(conv, list) or not conv:
        what = "empty" if isinstance(conv, list) else f"a {type(conv).__name__}, not a list"
        raise MissingConversationsError(f"'conversations' is {what}", row=row, sample=sample)
    for t, turn in enumerate(conv):
        if not isinstance(turn, dict):
            raise TurnOrderError(f"turn {t} is a {type(turn).__name__}, not an object", row=row, sample=sample)
        expected = "human" if t % 2 == 0 else "gpt"
        if turn.get("from") != expected:
            raise TurnOrderError(
                f"turn {t} is from {turn.get('from')!r}, expected {expected!r} (turns must "
                "alternate human/gpt starting with human)",
                row=row,
                sample=sample,
            )
        if not isinstance(turn.get("value"), str):
            raise TurnOrderError(f"turn {t} has no string 'value'", row=row, sample=sample)
    if len(conv) < 2:
        raise TurnOrderError("the human turn has no gpt answer", row=row, sample=sample)
    return conv


def _extra_and_layout(value: dict, raw_id: Any, image: str | None) -> tuple[str | None, str | None]:
    """The ``extra`` and ``layout`` columns: what the export needs to rebuild the row exactly (key order, id type)."""
    keys = list(value)
    extra_keys = [k for k in keys if k not in _CORE_KEYS]
    extra = (
        json.dumps({k: value[k] for k in extra_keys}, ensure_ascii=False, separators=_COMPACT) if extra_keys else None
    )
    canonical = ["id", "image", "conversations"] if "image" in value else ["id", "conversations"]
    layout = {}
    if keys[: len(canonical)] != canonical or ("image" in value and image is None):
        layout["keys"] = keys
    if not isinstance(raw_id, str):
        layout["id"] = raw_id
    return extra, json.dumps(layout, ensure_ascii=False, separators=_COMPACT) if layout else None


def _check_image(image: str | None, image_root: Path | None, row: int, sample: str) -> None:
    if image is None or image_root is None:
        return
    if os.path.isabs(image) or ".." in Path(image).parts:
        raise MissingImageError(
            f"image {image!r} is not a path under the image root {str(image_root)!r}", row=row, sample=sample
        )
    if not os.path.isfile(os.path.join(image_root, image)):
        raise MissingImageError(f"image {image!r} not found under {str(image_root)!r}", row=row, sample=sample)


IMAGE_CHECK_WINDOW = 256
"""Rows whose images are being verified at once (in threads) while later rows are parsed."""


def image_problem(path: str | os.PathLike) -> str | None:
    """None when the image at ``path`` decodes, else why not.

    PNG and most formats are verified (every chunk's CRC, no pixel decode); a JPEG, which ``verify`` does
    not check, is decoded at its smallest draft scale, which still reads every byte of the stream.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (1, 1))
                im.load()
            else:
                im.verify()
    except Exception as exc:  # noqa: BLE001  (PIL raises OSError, SyntaxError, ValueError, ... for bad files)
        return f"{type(exc).__name__}: {exc}"
    return None


class _BatchBuilder:
    """Collects manifest rows and flushes them as Arrow record batches (bounded memory)."""

    def __init__(self, writer: pq.ParquetWriter, batch_rows: int):
        self.writer = writer
        self.batch_rows = batch_rows
        self.n_written = 0
        self.columns: dict[str, list] = {name: [] for name in MANIFEST_SCHEMA.names if name != "sample_id"}

    def add(self, r: _Row) -> None:
        c = self.columns
        c["id"].append(r.id)
        c["image"].append(r.image)
        c["question"].append(r.question)
        c["answer"].append(r.answer)
        c["n_turns"].append(r.n_turns)
        c["source"].append(r.source)
        c["conversations"].append(r.conversations)
        c["extra"].append(r.extra)
        c["layout"].append(r.layout)
        if len(c["id"]) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        n = len(self.columns["id"])
        if n == 0:
            return
        arrays = [pa.array(np.arange(self.n_written, self.n_written + n, dtype=np.int64))]
        for field in list(MANIFEST_SCHEMA)[1:]:
            arrays.append(pa.array(self.columns[field.name], type=field.type))
        self.writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=MANIFEST_SCHEMA))
        self.n_written += n
        for values in self.columns.values():
            values.clear()


def build_manifest(
    pool_json: str | os.PathLike,
    out: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    mode: Literal["strict", "skip"] = "strict",
    *,
    allow_duplicate_ids: bool = False,
    batch_rows: int = 50_000,
    verbose: bool = False,
) -> ManifestReport:
    """Convert a LLaVA-format JSON pool into the Parquet manifest (docs/architecture.md#layers, docs/architecture.md#file-kinds).

    ``mode="strict"`` raises the first row's :class:`ManifestError`; ``mode="skip"`` drops bad rows and
    writes each, with its row index, id, error class, reason and raw value, to
    ``<manifest stem>.rejected.jsonl`` beside the manifest. ``image_root`` enables the image-exists check.
    ``allow_duplicate_ids`` accepts reused ``id`` values (LLaVA pools often key rows by image id; rows
    are addressed by ``sample_id`` downstream). Invalid JSON syntax is fatal in both modes.
    Outputs are written atomically; a failed strict run leaves no manifest behind.
    """
    pool_json, root = _checked_inputs(pool_json, image_root, mode)
    out = Path(out)
    rejected_out = rejected_path_for(out) if mode == "skip" else None
    progress = _byte_progress(pool_json) if verbose else None
    try:
        with atomic_path(out) as tmp, _maybe_atomic(rejected_out) as rejected_tmp:
            with _RowOutcomes(pool_json, rejected_tmp) as outcomes:
                _write_manifest_rows(pool_json, tmp, root, allow_duplicate_ids, batch_rows, outcomes, progress)
    finally:
        if progress is not None:
            progress.close()

    n_rejected = sum(outcomes.rejected_by_error.values())
    return ManifestReport(
        manifest_path=str(out),
        rejected_path=None if rejected_out is None else str(rejected_out),
        n_input_rows=outcomes.n_input,
        n_rows=outcomes.n_input - n_rejected,
        n_rejected=n_rejected,
        rejected_by_error=dict(outcomes.rejected_by_error),
        n_text_only=outcomes.n_text,
        rows_by_source=dict(outcomes.sources),
    )


def _checked_inputs(
    pool_json: str | os.PathLike, image_root: str | os.PathLike | None, mode: str
) -> tuple[Path, Path | None]:
    """The pool file and image root as paths, after checking they exist and ``mode`` is known."""
    if mode not in ("strict", "skip"):
        raise ManifestError(f"mode must be 'strict' or 'skip', got {mode!r}")
    pool_json = Path(pool_json)
    if not pool_json.is_file():
        raise ManifestFileError(f"pool JSON not found: {str(pool_json)!r}")
    root = None
    if image_root is not None:
        root = Path(image_root)
        if not root.is_dir():
            raise ManifestFileError(f"image root is not a directory: {str(root)!r}")
    return pool_json, root


def _byte_progress(pool_json: Path):
    from tqdm import tqdm

    return tqdm(total=pool_json.stat().st_size, unit="B", unit_scale=True, desc="manifest")


class _RowOutcomes:
    """Counts of kept and dropped rows; in skip mode also the open ``.rejected.jsonl`` file of dropped rows."""

    def __init__(self, pool_json: Path, rejected_tmp: Path | None):
        self.pool_json = pool_json
        self.rejected_tmp = rejected_tmp
        self.rejected_file = None
        self.rejected_by_error: Counter[str] = Counter()
        self.sources: Counter[str] = Counter()
        self.n_input = 0
        self.n_text = 0

    def __enter__(self) -> _RowOutcomes:
        if self.rejected_tmp is not None:
            self.rejected_file = open(self.rejected_tmp, "w", encoding="utf-8")
        return self

    def __exit__(self, *exc) -> bool:
        if self.rejected_file is not None:
            self.rejected_file.close()
        return False

    def keep(self, r: _Row) -> None:
        self.sources[r.source] += 1
        self.n_text += r.image is None

    def reject(self, exc: ManifestError, row: int, value: Any) -> None:
        """Record a bad row in skip mode; in strict mode raise its error, naming the pool file."""
        if exc.path is None:
            exc = type(exc)(exc.reason, row=exc.row, path=self.pool_json, sample=exc.sample)
        if self.rejected_file is None:
            raise exc from None
        name = type(exc).__name__
        self.rejected_by_error[name] += 1
        record = {"row": row, "id": exc.sample, "error": name, "reason": exc.reason, "raw": value}
        self.rejected_file.write(json.dumps(record, ensure_ascii=False) + "\n")


def _write_manifest_rows(
    pool_json: Path,
    tmp: Path,
    root: Path | None,
    allow_duplicate_ids: bool,
    batch_rows: int,
    outcomes: _RowOutcomes,
    progress,
) -> None:
    """Stream the pool's rows into the Parquet file ``tmp``, batch by batch, sending bad rows to ``outcomes``.

    Each row's image is decoded (:func:`image_problem`) in a thread pool while later rows are parsed; rows
    are kept or rejected in pool order.
    """
    first_row_of_id: dict[str, int] = {}
    pending: collections.deque = collections.deque()
    with pq.ParquetWriter(tmp, MANIFEST_SCHEMA, compression="zstd") as writer, ThreadPoolExecutor() as pool:
        batches = _BatchBuilder(writer, batch_rows)
        for row, value in iter_json_array(pool_json, on_bytes=progress.update if progress else None):
            outcomes.n_input += 1
            try:
                r = _parse_row(value, row)
                if not allow_duplicate_ids and r.id in first_row_of_id:
                    raise DuplicateIdError(f"id already used by row {first_row_of_id[r.id]}", row=row, sample=r.id)
                _check_image(r.image, root, row, r.id)
                if not allow_duplicate_ids:
                    first_row_of_id[r.id] = row
            except ManifestError as exc:
                outcomes.reject(exc, row, value)
                continue
            decode = pool.submit(image_problem, os.path.join(root, r.image)) if r.image and root else None
            pending.append((row, value, r, decode))
            while len(pending) > IMAGE_CHECK_WINDOW:
                _settle(pending.popleft(), outcomes, batches)
        while pending:
            _settle(pending.popleft(), outcomes, batches)
        batches.flush()


def _settle(item: tuple, outcomes: _RowOutcomes, batches: _BatchBuilder) -> None:
    """Keep a parsed row once its image decoded, else reject it as :class:`UnreadableImageError`."""
    row, value, r, decode = item
    problem = None if decode is None else decode.result()
    if problem is not None:
        reason = f"image {r.image!r} cannot be read: {problem}"
        outcomes.reject(UnreadableImageError(reason, row=row, sample=r.id), row, value)
        return
    outcomes.keep(r)
    batches.add(r)


class _NoPath:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _maybe_atomic(path: Path | None):
    return atomic_path(path) if path is not None else _NoPath()


def read_manifest(path: str | os.PathLike, columns: Sequence[str] | None = None) -> pa.Table:
    """Read a manifest written by :func:`build_manifest`, checking it has the contract's columns."""
    p = Path(path)
    schema = parquet_schema(p, ManifestFileError, "manifest")
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise ManifestFileError(f"{str(p)!r} is not a manifest: missing columns {missing}")
    if columns is not None:
        unknown = [c for c in columns if c not in schema.names]
        if unknown:
            raise ManifestFileError(f"{str(p)!r} has no columns {unknown}")
    return pq.read_table(p, columns=list(columns) if columns is not None else None)


def _as_list(values: Any) -> list:
    if hasattr(values, "to_pylist"):
        return values.to_pylist()
    if hasattr(values, "tolist"):
        return values.tolist()
    return list(values)


def manifest_rows_to_llava(table: pa.Table, extra_fields: Mapping[str, Sequence] | None = None) -> list[dict]:
    """Rebuild the original LLaVA rows of ``table`` (equal to the input rows, key order included).

    ``extra_fields`` maps a key to one value per table row, appended to each row, as the original scripts
    annotate rows with ``cluster_id``/``dist_to_cent``/``index`` (docs/algorithm.md#warm-up-pools).
    """
    missing = [c for c in ("id", "image", "conversations", "extra") if c not in table.column_names]
    if missing:
        raise ManifestFileError(f"table is not a manifest: missing columns {missing}")
    n = table.num_rows
    extras: dict[str, list] = {}
    for key, values in (extra_fields or {}).items():
        values = _as_list(values)
        if len(values) != n:
            raise ManifestError(f"extra field {key!r} has {len(values)} values for {n} rows")
        extras[key] = values
    ids = table.column("id").to_pylist()
    images = table.column("image").to_pylist()
    convs = table.column("conversations").to_pylist()
    extra_json = table.column("extra").to_pylist()
    layouts = table.column("layout").to_pylist() if "layout" in table.column_names else [None] * n
    loads = json.loads
    rows = []
    for i in range(n):
        values = {"id": ids[i]}
        if layouts[i] is None:
            if images[i] is not None:
                values["image"] = images[i]
            values["conversations"] = loads(convs[i])
            if extra_json[i] is not None:
                values.update(loads(extra_json[i]))
            row = values
        else:
            layout = loads(layouts[i])
            if "id" in layout:
                values["id"] = layout["id"]
            values["image"] = images[i]
            values["conversations"] = loads(convs[i])
            extra = loads(extra_json[i]) if extra_json[i] is not None else {}
            values.update(extra)
            keys = layout.get("keys")
            if keys is None:
                keys = ["id"] + (["image"] if images[i] is not None else []) + ["conversations"] + list(extra)
            row = {k: values[k] for k in keys}
        for key, vals in extras.items():
            row[key] = vals[i]
        rows.append(row)
    return rows


def export_llava(
    table: pa.Table | str | os.PathLike,
    out_json: str | os.PathLike,
    extra_fields: Mapping[str, Sequence] | None = None,
    *,
    batch_rows: int = 10_000,
    verbose: bool = False,
    row_spans: np.ndarray | None = None,
) -> Path:
    """Write the manifest's rows back as a LLaVA JSON list, atomically and batch by batch.

    The output is what ``json.dump(rows, f, ensure_ascii=False)`` writes for the original rows (plus
    ``extra_fields``), the format the original training and selection scripts read. Given a manifest
    path, record batches are streamed from the Parquet file, so memory stays bounded by one batch.
    ``row_spans``, an int64 array of shape (rows, 2), receives each row's byte range in the file, so a
    later subset can be copied as bytes instead of serialised again (:mod:`progress_core.reporting.export`).
    """
    if isinstance(table, pa.Table):
        n = table.num_rows
        batches = (table.slice(start, batch_rows) for start in range(0, n, batch_rows))
    else:
        read_manifest(table, columns=["sample_id"])
        parquet = pq.ParquetFile(table)
        n = parquet.metadata.num_rows
        columns = [c for c in ("id", "image", "conversations", "extra", "layout") if c in parquet.schema_arrow.names]
        batches = (pa.Table.from_batches([b]) for b in parquet.iter_batches(batch_size=batch_rows, columns=columns))
    extras = {k: _as_list(v) for k, v in (extra_fields or {}).items()}
    for key, values in extras.items():
        if len(values) != n:
            raise ManifestError(f"extra field {key!r} has {len(values)} values for {n} rows")
    progress = None
    if verbose:
        from tqdm import tqdm

        progress = tqdm(total=n, unit="row", desc="export")
    if row_spans is not None and row_spans.shape != (n, 2):
        raise ManifestError(f"row_spans has shape {row_spans.shape} for {n} rows")
    try:
        with atomic_path(out_json) as tmp, open(tmp, "wb") as f:
            f.write(b"[")
            offset, start = 1, 0
            for batch in batches:
                stop = start + batch.num_rows
                rows = manifest_rows_to_llava(batch, {k: v[start:stop] for k, v in extras.items()})
                encoded = [json.dumps(row, ensure_ascii=False).encode("utf-8") for row in rows]
                if encoded:
                    separator = b", " if start else b""
                    if row_spans is not None:
                        sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
                        ends = offset + np.cumsum(sizes + 2) - (0 if start else 2)
                        row_spans[start:stop] = np.column_stack([ends - sizes, ends])
                    offset += f.write(separator + b", ".join(encoded))
                if progress is not None:
                    progress.update(stop - start)
                start = stop
            f.write(b"]")
    finally:
        if progress is not None:
            progress.close()
    return Path(out_json)


def source_statistics(table: pa.Table) -> pd.DataFrame:
    """Per-source summary of a manifest (rows, share, text-only, multi-turn, answer vocabulary, chance).

    ``majority_rate`` is the accuracy of always giving the source's most frequent first answer, the
    floor an exact-match probe (docs/algorithm.md#probe-and-judge) measures against.
    """
    import pandas as pd

    df = table.select(["source", "answer", "n_turns", "image"]).to_pandas()
    grouped = df.groupby("source", sort=True)
    stats = pd.DataFrame(
        {
            "n": grouped.size(),
            "text_only": grouped["image"].agg(lambda s: int(s.isna().sum())),
            "multi_turn": grouped["n_turns"].agg(lambda s: int((s > 2).sum())),
            "answer_vocab": grouped["answer"].nunique(),
            "majority_rate": grouped["answer"].agg(lambda s: s.value_counts().iloc[0] / len(s)),
        }
    )
    stats["share"] = stats["n"] / max(len(df), 1)
    return stats[["n", "share", "text_only", "multi_turn", "answer_vocab", "majority_rate"]]


class EmptyPoolError(ProgressError):
    """No row of the pool survived the manifest checks (e.g. every image is missing under the image root)."""


def require_rows(report, pool_json: str | os.PathLike) -> None:
    """Raise :class:`EmptyPoolError` (with the skip counts by reason) when a manifest came out empty.

    The empty manifest itself is removed: no later stage can use it. ``report`` is the
    :class:`~progress_core.data.manifest.ManifestReport` of the build.
    """
    if report.n_rows > 0:
        return
    Path(report.manifest_path).unlink(missing_ok=True)
    per = ", ".join(f"{k} {v}" for k, v in sorted(report.rejected_by_error.items())) or "the file has no rows"
    raise EmptyPoolError(
        f"the pool {str(pool_json)!r} has no usable rows ({report.n_input_rows} read, skipped: {per}); "
        "check the pool file and the image root (data.pool_json, data.image_root / --images)"
    )
