"""`funnels import`: historical events from files straight into the event store, in large batches.

Formats, chosen by extension:

- `.ndjson`, `.jsonl`, `.json`: one JSON object per line, exactly the native event shape of `POST /v0/events`
  (`funnels.events.NativeEvent`): `type` (default `track`), `event` (required for `track`; defaults to the
  type for page/identify/screen/group/alias), `user_id` and/or `anonymous_id`, `timestamp`, `message_id`,
  `properties` (an object), and the standard columns top-level or inside `context`. Blank lines are skipped.
- `.csv`: a header row naming the same fields, one event per record. Every cell is text; an empty cell means
  the field is absent. `properties` (and `context`, if present) are cells holding a JSON object.
- `.parquet`: columns named like the fields, read in record batches and validated and transformed
  column-wise with pyarrow.compute. Text fields may be string, binary, integer, float or boolean columns; a
  null or empty value means the field is absent. `timestamp` may be a timestamp column (any unit or zone; a
  naive one is taken as UTC), integer epoch milliseconds, or text (ISO 8601 or epoch milliseconds, read as
  `parse_timestamp` reads them). `properties` may be JSON text (validated, stored as given) or a struct or
  map column (stored as compact JSON). A `context` column is not read: standard columns are top-level.
  Python touches single values only to parse each JSON text, for float text columns, for struct/map
  properties and for time text in shapes other than the common ISO 8601 ones.

Column rules are the native endpoint's (NDJSON and CSV rows that are not plainly valid go through
`NativeEvent` itself), plus one: an imported event must carry a `timestamp` (history without a time is a bad
row). The user key is `user_id`, else `anonymous_id`. `received_at` is the time of the import and `log_seq`
is 0 (imports bypass the event log, so they fire no automation). NDJSON and CSV properties are stored
re-serialized as compact JSON, as the native endpoint stores them.

Event ids: an event's `message_id` when it has one; otherwise a deterministic id: the 64-bit SipHash
(`pandas.util.hash_array`, fixed key) of the row's normalized fields joined into one string, as 16 hex
digits. For NDJSON and CSV the fields are type, name, user_id, anonymous_id, time (epoch ms), properties JSON
and the non-empty standard columns, so the same event gets the same id from either format; for Parquet they
are the same fields as its columns hold them. Re-importing a file therefore writes the same
(user_key, ts, event_id) keys again, and the ReplacingMergeTree collapses the copies on merge.

Bad rows are skipped, never dropped silently: each is reported with its file and position (the 1-based line
for NDJSON and CSV, where the CSV header is line 1 and a record spanning lines is reported at its first
line; the 1-based row for Parquet), printed to the console (the first 100) and kept in the report (the first
1,000); the counts are always exact.
"""

from __future__ import annotations

import csv
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeRemainingColumn

from funnels.events import (
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    NativeEvent,
    column_text,
    dumps_properties,
    parse_timestamp,
)
from funnels.ingest.parquet_native import native_import
from funnels.store.events import ARROW_SCHEMA, EventStore
from funnels.types import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, NAMED_BY_TYPE, STANDARD_COLUMNS, JSONDict

FORMATS: dict[str, str] = {
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
    ".csv": "csv",
    ".parquet": "parquet",
}
DEFAULT_BATCH_SIZE = 50_000  # rows validated at a time (NDJSON/CSV lines, Parquet record batches)
INSERT_ROWS = 250_000  # rows per insert: chDB writes much faster in big inserts, and the first starts sooner
INSERT_BYTES = 256 * 1024 * 1024  # ... or fewer rows when they are this large (bounds memory)
CSV_FIELD_LIMIT = 64 * 1024 * 1024  # the csv module's default, 128 KiB, is too small for big properties
MAX_PRINTED_ERRORS = 100
MAX_KEPT_ERRORS = 1_000

TIMESTAMP_REQUIRED = "timestamp: is required to import an event"
USER_REQUIRED = "one of user_id or anonymous_id is required"
_HASH_KEY = "funnels-import-1"  # 16 characters: the SipHash key of content-derived event ids
_STANDARD = frozenset(STANDARD_COLUMNS)
_FIELDS = ("type", "event", "user_id", "anonymous_id", "timestamp", "message_id", "properties")
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_ISO_FAST = (  # ISO 8601 shapes Arrow parses exactly as `datetime.fromisoformat` does; others go row by row
    r"^\d{4}-\d{2}-\d{2}(?:[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
)

Row = tuple[str, str, str, str, Any, str | None, str, dict[str, str]]
"""A checked event: type, name, user_id, anonymous_id, raw timestamp, message_id, properties JSON, columns."""
Problems = dict[int, list[str]]  # row position in a batch -> what is wrong with it


class ImportFileError(ValueError):
    """A file that cannot be imported at all (unsupported extension, unreadable, required column missing)."""


@dataclass
class RowError:
    """One skipped row: its file, its 1-based line (NDJSON, CSV) or row (Parquet), and what is wrong."""

    file: str
    line: int
    message: str
    unit: str = "line"

    def __str__(self) -> str:
        return f"{self.file} {self.unit} {self.line}: {self.message}"


@dataclass
class ImportReport:
    """What an import did: rows imported and skipped (exact), wall time, and the first skipped rows."""

    imported: int = 0
    skipped: int = 0
    seconds: float = 0.0
    errors: list[RowError] = field(default_factory=list)


def import_files(
    store: EventStore,
    paths: Sequence[Path],
    console: Console | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    native_parquet: bool = True,
) -> ImportReport:
    """Import event files into the store; bad rows are reported and skipped. Raises ImportFileError early.

    `native_parquet=False` forces the column-wise Parquet path (tests compare the two)."""
    started = time.perf_counter()
    files = [(Path(path), _format_of(Path(path))) for path in paths]
    report = ImportReport()
    run = _Run(report, console, received_ms=time.time_ns() // 1_000_000)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeRemainingColumn(),
        console=console,
        disable=console is None or not console.is_terminal,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    with (
        _fast_inserts(store),
        progress,
        _Writer(store, max(batch_size, INSERT_ROWS), native_parquet) as writer,
    ):
        for path, kind in files:
            before = (report.imported, report.skipped)
            task = progress.add_task(path.name, total=None, rows=0)
            reader = {"ndjson": _import_ndjson, "csv": _import_csv, "parquet": _import_parquet}[kind]
            reader(path, run, writer, _Advance(progress, task), batch_size)
            if console is not None and len(files) > 1:
                imported, skipped = report.imported - before[0], report.skipped - before[1]
                console.print(
                    f"{path}: imported {imported:,}, skipped {skipped:,}", markup=False, highlight=False
                )
    run.finish()
    report.seconds = time.perf_counter() - started
    return report


def _format_of(path: Path) -> str:
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        supported = ", ".join(FORMATS)
        raise ImportFileError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; supported: {supported}"
        )
    if not path.is_file():
        raise ImportFileError(f"{path}: no such file")
    return kind


@dataclass
class _Run:
    """State shared by the readers of one import: the report, the console, the import time."""

    report: ImportReport
    console: Console | None
    received_ms: int

    def error(self, file: Path, line: int, message: str, unit: str = "line") -> None:
        report = self.report
        report.skipped += 1
        error = RowError(str(file), line, message, unit)
        if len(report.errors) < MAX_KEPT_ERRORS:
            report.errors.append(error)
        if self.console is not None and report.skipped <= MAX_PRINTED_ERRORS:
            self.console.print(str(error), markup=False, highlight=False, soft_wrap=True)

    def finish(self) -> None:
        hidden = self.report.skipped - MAX_PRINTED_ERRORS
        if self.console is not None and hidden > 0:
            self.console.print(f"... and {hidden:,} more bad rows (not shown)", markup=False, highlight=False)


class _Advance:
    """Moves one file's progress bar: by bytes read (NDJSON, CSV) or rows read (Parquet)."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress, self.task, self.rows = progress, task, 0

    def start(self, total: int) -> None:
        self.progress.update(self.task, total=total)

    def __call__(self, completed: int, rows: int) -> None:
        self.rows += rows
        self.progress.update(self.task, completed=completed, rows=self.rows)


@contextmanager
def _fast_inserts(store: EventStore) -> Iterator[None]:
    """Bulk-load mode for the import: no insert-time deduplication (3x faster writes in chDB) and background
    merges paused (they compete for the same cores: 0.72M → 1.11M rows/s raw insert at 10M rows). Both are
    restored afterwards; merges then collapse duplicates and compact the new parts in the background."""
    row = store.query("SELECT getSetting('optimize_on_insert')").first()
    store.execute("SET optimize_on_insert = 0")
    store.execute("SYSTEM STOP MERGES events")
    try:
        yield
    finally:
        store.execute("SYSTEM START MERGES events")
        store.execute(f"SET optimize_on_insert = {0 if row is not None and not row[0] else 1}")


class _Writer:
    """Collects Arrow tables and inserts them in big batches on a background thread, overlapping parsing."""

    def __init__(self, store: EventStore, insert_rows: int, native_parquet: bool = True) -> None:
        self.store, self.insert_rows, self.native_parquet = store, insert_rows, native_parquet
        self.pending: list[pa.Table] = []
        self.pending_rows = self.pending_bytes = 0
        self.queue: queue.Queue[pa.Table | None] = queue.Queue(maxsize=1)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="funnels-import-writer", daemon=True)

    def __enter__(self) -> _Writer:
        self.thread.start()
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        if error_type is None:
            self.flush()
        self.queue.put(None)
        self.thread.join()
        if error_type is None:
            self._raise_failure()

    def add(self, table: pa.Table) -> None:
        if table.num_rows:
            self.pending.append(table)
            self.pending_rows += table.num_rows
            self.pending_bytes += table.nbytes
            if self.pending_rows >= self.insert_rows or self.pending_bytes >= INSERT_BYTES:
                self.flush()

    def flush(self) -> None:
        self._raise_failure()
        if self.pending:
            table = _concat(self.pending)
            self.pending, self.pending_rows, self.pending_bytes = [], 0, 0
            self.queue.put(table)

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _run(self) -> None:
        while (table := self.queue.get()) is not None:
            if self.failure is None:
                try:
                    self.store.insert_arrow(table)
                except BaseException as error:  # handed to the importing thread
                    self.failure = error


# --- NDJSON and CSV: rows as Python objects -----------------------------------------------------------------


def _import_ndjson(path: Path, run: _Run, writer: _Writer, advance: _Advance, batch_size: int) -> None:
    """One JSON object per line; progress by bytes read."""
    advance.start(path.stat().st_size)
    batch = _RowBatch()
    done = 0
    loads = orjson.loads
    with path.open("rb") as file:
        if file.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"["):
            raise ImportFileError(f"{path}: holds a JSON array; expected one JSON object per line (NDJSON)")
        file.seek(0)
        for line_no, raw in enumerate(file, 1):
            done += len(raw)
            if raw.isspace():
                continue
            try:
                obj = loads(raw.removeprefix(b"\xef\xbb\xbf") if line_no == 1 else raw)
            except orjson.JSONDecodeError as error:
                batch.reject(line_no, f"not valid JSON: {error}")
                continue
            if batch.take(line_no, obj) >= batch_size:
                _emit(path, batch, run, writer, advance, done)
                batch = _RowBatch()
    _emit(path, batch, run, writer, advance, done)


def _import_csv(path: Path, run: _Run, writer: _Writer, advance: _Advance, batch_size: int) -> None:
    """A header row, then one event per record; progress by bytes read."""
    advance.start(path.stat().st_size)
    limit = csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    with path.open(encoding="utf-8-sig", newline="") as file:
        try:
            _read_csv(path, file, run, writer, advance, batch_size)
        except UnicodeDecodeError as error:
            raise ImportFileError(f"{path}: not UTF-8 text ({error.reason})") from None
        except csv.Error as error:
            raise ImportFileError(f"{path}: not readable as CSV ({error})") from None
        finally:
            csv.field_size_limit(limit)


def _read_csv(
    path: Path, file: TextIO, run: _Run, writer: _Writer, advance: _Advance, batch_size: int
) -> None:
    """Records as objects: empty cells left out, `properties`/`context` cells parsed as JSON."""
    reader = csv.reader(file)
    header = [name.strip() for name in next(reader, [])]
    if not header:
        return
    _require_columns(path, header)
    width = len(header)
    json_cells = [(i, name) for i, name in enumerate(header) if name in ("properties", "context")]
    batch = _RowBatch()
    loads = orjson.loads
    end = reader.line_num
    for record in reader:
        line_no, end = end + 1, reader.line_num  # a quoted cell may span lines: report the record's first
        if not record:
            continue
        if len(record) != width:
            batch.reject(line_no, f"has {len(record)} fields; the header has {width}")
            continue
        obj: dict[str, Any] = {name: value for name, value in zip(header, record, strict=True) if value != ""}
        try:
            for i, name in json_cells:
                if record[i] != "":
                    obj[name] = loads(record[i])
        except orjson.JSONDecodeError as error:
            batch.reject(line_no, f"{name}: not valid JSON ({error})")
            continue
        if batch.take(line_no, obj) >= batch_size:
            _emit(path, batch, run, writer, advance, file.buffer.tell())
            batch = _RowBatch()
    _emit(path, batch, run, writer, advance, file.buffer.tell())


def _require_columns(path: Path, names: Sequence[str]) -> None:
    if "timestamp" not in names:
        raise ImportFileError(f"{path}: no `timestamp` column (every imported event needs its time)")
    if "user_id" not in names and "anonymous_id" not in names:
        raise ImportFileError(f"{path}: no `user_id` or `anonymous_id` column")
    if "event" not in names and "type" not in names:
        raise ImportFileError(f"{path}: no `event` column (track events need a name) and no `type` column")


def _emit(path: Path, batch: _RowBatch, run: _Run, writer: _Writer, advance: _Advance, done: int) -> None:
    table, problems = batch.finish(run.received_ms)
    for line_no, message in sorted(problems):
        run.error(path, line_no, message)
    if table is not None:
        writer.add(table)
        run.report.imported += table.num_rows
    advance(done, table.num_rows if table is not None else 0)


def _fast_id(value: Any) -> str | None:
    """A user id as `NativeEvent` stores it, or None to leave the decision to the model."""
    if value is None:
        return ""
    kind = type(value)
    if kind is str or kind is int:
        text = value if kind is str else str(value)
        return text if len(text) <= MAX_ID_LENGTH else None
    return None


def _fast_row(obj: Any) -> Row | None:
    """A row that certainly passes `NativeEvent`, normalized (its time still raw); None when unsure."""
    if type(obj) is not dict:
        return None
    get = obj.get
    kind = get("type", "track")
    if type(kind) is not str or not 0 < len(kind) <= MAX_NAME_LENGTH:
        return None
    name = get("event")
    if name is None:
        if kind not in NAMED_BY_TYPE:
            return None
        name = kind
    elif type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH:
        return None
    user_id, anonymous_id = _fast_id(get("user_id")), _fast_id(get("anonymous_id"))
    if user_id is None or anonymous_id is None or not (user_id or anonymous_id):
        return None
    stamp = get("timestamp")
    if type(stamp) is not str and type(stamp) is not int and type(stamp) is not float:
        return None  # missing, null, or a type the model rejects: let it explain
    message_id = get("message_id")
    if message_id is not None and (type(message_id) is not str or not 0 < len(message_id) <= MAX_ID_LENGTH):
        return None
    properties = get("properties", _EMPTY)
    context = get("context", _EMPTY)
    if type(properties) is not dict or type(context) is not dict:
        return None
    columns: dict[str, str] = {}
    for source in (context, obj) if context else (obj,):
        for column in _STANDARD.intersection(source):
            value = source[column]
            if type(value) is not str:
                try:
                    value = column_text(value)
                except ValueError:
                    return None
            if value:
                columns[column] = value
    return (kind, name, user_id, anonymous_id, stamp, message_id, dumps_properties(properties), columns)


_EMPTY: JSONDict = {}


def _slow_row(obj: Any) -> Row | str:
    """A row validated by `NativeEvent` itself: normalized (its time still raw), or the reason it is bad."""
    try:
        model = NativeEvent.model_validate(obj)
    except ValidationError as error:
        problems = [_pydantic_message(item) for item in error.errors()]
        if isinstance(obj, dict) and obj.get("timestamp") is None:
            problems.append(TIMESTAMP_REQUIRED)
        return "; ".join(problems)
    if model.timestamp is None:
        return TIMESTAMP_REQUIRED
    event = model.to_event(0)
    properties = dumps_properties(event.properties)
    user_id, anonymous_id = event.user_id, event.anonymous_id
    return (
        event.type,
        event.event,
        user_id,
        anonymous_id,
        model.timestamp,
        model.message_id,
        properties,
        event.columns,
    )


def _pydantic_message(item: Any) -> str:
    message = str(item["msg"]).removeprefix("Value error, ")
    location = ".".join(str(part) for part in item["loc"])
    return f"{location}: {message}" if location else message


def _content_key(row: Row, ts_ms: int) -> str:
    """The normalized row as one string; its hash is the event id of a row without a message id."""
    kind, name, user_id, anonymous_id, _, _, properties, columns = row
    extra = "".join([f"\x1f{column}={columns[column]}" for column in sorted(columns)]) if columns else ""
    return f"{kind}\x1f{name}\x1f{user_id}\x1f{anonymous_id}\x1f{ts_ms}\x1f{properties}{extra}"


class _RowBatch:
    """Rows that passed the per-row checks, with their line numbers, and the lines that did not."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.lines: list[int] = []
        self.problems: list[tuple[int, str]] = []

    def add(self, line_no: int, row: Row) -> None:
        self.rows.append(row)
        self.lines.append(line_no)

    def take(self, line_no: int, obj: Any) -> int:
        """Validate one parsed row into the batch (or its rejects); returns the batch's row count."""
        row = _fast_row(obj) or _slow_row(obj)
        if isinstance(row, str):
            self.reject(line_no, row)
        else:
            self.add(line_no, row)
        return len(self.rows)

    def reject(self, line_no: int, message: str) -> None:
        self.problems.append((line_no, message))

    def finish(self, received_ms: int) -> tuple[pa.Table | None, list[tuple[int, str]]]:
        """Times checked for the whole batch at once, then the good rows as one Arrow table."""
        problems = self.problems
        rows = self.rows
        stamps, bad = _python_timestamps([row[4] for row in rows])
        if bad:
            problems.extend((self.lines[i], "; ".join(messages)) for i, messages in bad.items())
            rows = [row for i, row in enumerate(rows) if i not in bad]
            stamps = [stamp for i, stamp in enumerate(stamps) if i not in bad]
        if not rows:
            return None, problems
        kinds, names, user_ids, anonymous_ids, _, message_ids, properties, columns = zip(*rows, strict=True)
        ids: list[str | None] = list(message_ids)
        keyed = [i for i, message_id in enumerate(message_ids) if message_id is None]
        if keyed:
            keys = np.asarray([_content_key(rows[i], stamps[i]) for i in keyed], dtype=object)
            for i, event_id in zip(keyed, _hash_hex(keys).to_pylist(), strict=True):
                ids[i] = event_id
        arrays: dict[str, pa.Array] = {
            "event_id": pa.array(ids, pa.string()),
            "type": pa.array(kinds, pa.string()),
            "event": pa.array(names, pa.string()),
            "user_key": pa.array([u or a for u, a in zip(user_ids, anonymous_ids, strict=True)], pa.string()),
            "user_id": pa.array(user_ids, pa.string()),
            "anonymous_id": pa.array(anonymous_ids, pa.string()),
            "ts": pa.array(stamps, pa.int64()),
            "properties": pa.array(properties, pa.string()),
        }
        for column in set().union(*columns):
            arrays[column] = pa.array([values.get(column, "") for values in columns], pa.string())
        return _assemble(arrays, len(rows), received_ms), problems


def _python_timestamps(values: list[Any]) -> tuple[list[int], Problems]:
    """Raw `timestamp` values (text, int or float) as epoch ms, column-wise when they share a type."""
    problems: Problems = {}
    kinds = set(map(type, values))
    if kinds == {str}:
        return _text_timestamps(pa.array(values, pa.string()), problems).to_pylist(), problems
    if kinds == {int} and all(MIN_TIMESTAMP_MS <= v <= MAX_TIMESTAMP_MS for v in values):
        return values, problems
    stamps = []
    for i, value in enumerate(values):
        try:
            stamps.append(parse_timestamp(value))
        except ValueError as error:
            problems.setdefault(i, []).append(f"timestamp: {error}")
            stamps.append(0)
    return stamps, problems


# --- shared Arrow helpers ------------------------------------------------------------------------------------


def _hash_hex(keys: np.ndarray) -> pa.Array:
    """16-hex-digit SipHash-2-4 (fixed key) of each string: the content-derived event ids."""
    hashed = pd.util.hash_array(keys, hash_key=_HASH_KEY, categorize=False)
    octets = hashed.astype(">u8").view(np.uint8).reshape(-1, 8)
    text = np.empty((len(hashed), 16), dtype=np.uint8)
    text[:, 0::2] = _HEX[octets >> 4]
    text[:, 1::2] = _HEX[octets & 15]
    offsets = np.arange(0, 16 * len(hashed) + 1, 16, dtype=np.int32)
    return pa.StringArray.from_buffers(len(hashed), pa.py_buffer(offsets), pa.py_buffer(text))


def _constant_text(value: str, n: int) -> pa.Array:
    """A string array of one repeated value, built without Python objects."""
    data = value.encode()
    offsets = (
        np.arange(0, len(data) * n + 1, len(data) or 1, dtype=np.int32) if data else np.zeros(n + 1, np.int32)
    )
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))


def _assemble(arrays: dict[str, pa.Array], n: int, received_ms: int) -> pa.Table:
    """The store's columns in `arrays` plus `received_at`; absent ones default in the store (faster inserts)."""
    columns: list[pa.Array] = []
    fields: list[pa.Field] = []
    for schema_field in ARROW_SCHEMA:
        name = schema_field.name
        if name == "ts":
            columns.append(arrays["ts"].cast(pa.int64()).cast(schema_field.type))
        elif name == "received_at":
            columns.append(pa.array(np.full(n, received_ms, dtype=np.int64)).cast(schema_field.type))
        elif name in arrays:
            columns.append(arrays[name])
        else:
            continue
        fields.append(schema_field)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _concat(tables: list[pa.Table]) -> pa.Table:
    """Tables with possibly different column subsets as one table; a missing column is filled with ""."""
    names = {name for table in tables for name in table.column_names}
    fields = [schema_field for schema_field in ARROW_SCHEMA if schema_field.name in names]
    schema = pa.schema(fields)
    unified = []
    for table in tables:
        if table.schema != schema:
            columns = [
                table.column(f.name) if f.name in table.column_names else _constant_text("", table.num_rows)
                for f in fields
            ]
            table = pa.Table.from_arrays(columns, schema=schema)
        unified.append(table)
    return pa.concat_tables(unified)


# --- Parquet: column-wise ------------------------------------------------------------------------------------


def _import_parquet(path: Path, run: _Run, writer: _Writer, advance: _Advance, batch_size: int) -> None:
    """Record batches of the known columns, each checked and transformed column-wise; progress by rows."""
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise ImportFileError(f"{path}: not a readable Parquet file ({error})") from None
    names = parquet.schema_arrow.names
    _require_columns(path, names)
    wanted = [name for name in (*_FIELDS, *STANDARD_COLUMNS) if name in names]
    total = parquet.metadata.num_rows
    advance.start(total)
    if writer.native_parquet:
        imported = native_import(writer.store, path, parquet.schema_arrow, run.received_ms)
        if imported is not None:
            run.report.imported += imported
            advance(total, imported)
            return
    first = 0
    try:
        for batch in _prefetch(parquet.iter_batches(batch_size=batch_size, columns=wanted)):
            table, problems = _parquet_batch(path, batch, run.received_ms)
            for position in sorted(problems):
                run.error(path, first + position + 1, "; ".join(problems[position]), unit="row")
            writer.add(table)
            run.report.imported += table.num_rows
            first += batch.num_rows
            advance(first, table.num_rows)
    except (pa.ArrowException, OSError) as error:
        raise ImportFileError(f"{path}: not a readable Parquet file ({error})") from None


def _prefetch(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Read (decompress, decode) the next record batch on a thread while this one is transformed."""
    with ThreadPoolExecutor(1, thread_name_prefix="funnels-import-reader") as pool:
        ahead = pool.submit(next, batches, None)
        while (batch := ahead.result()) is not None:
            ahead = pool.submit(next, batches, None)
            yield batch


def _flag(problems: Problems, mask: pa.Array, message: str | Callable[[int], str]) -> None:
    """Record `message` for every row where `mask` is true."""
    mask = pc.fill_null(mask, False)
    if not pc.any(mask).as_py():
        return
    for position in np.flatnonzero(mask.to_numpy(zero_copy_only=False)):
        i = int(position)
        problems.setdefault(i, []).append(message if isinstance(message, str) else message(i))


def _text(path: Path, batch: pa.RecordBatch, name: str) -> pa.Array:
    """A column as text with nulls as "" (absent); numbers and booleans spelled as the native endpoint does."""
    if name not in batch.schema.names:
        return _constant_text("", batch.num_rows)
    array = batch.column(name)
    kind = array.type
    if pa.types.is_dictionary(kind):
        array, kind = array.dictionary_decode(), kind.value_type
    try:
        if pa.types.is_floating(kind):
            values = [None if v is None or v != v else str(v) for v in array.to_pylist()]
            text = pa.array(values, pa.string())
        elif (
            pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or pa.types.is_string_view(kind)
            or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)
            or pa.types.is_integer(kind)
            or pa.types.is_boolean(kind)
        ):
            text = array.cast(pa.string())
        else:
            raise ImportFileError(
                f"{path}: column {name!r} has type {kind}; expected text, a number or a boolean"
            )
    except pa.ArrowInvalid as error:
        raise ImportFileError(f"{path}: column {name!r} is not valid text ({error})") from None
    return text.fill_null("") if text.null_count else text


def _too_long(problems: Problems, values: pa.Array, name: str, limit: int, message: str) -> None:
    """Flag values longer than `limit` characters."""
    _flag(problems, pc.greater(pc.utf8_length(values), limit), f"{name}: {message.format(limit)}")


def _parquet_batch(path: Path, batch: pa.RecordBatch, received_ms: int) -> tuple[pa.Table, Problems]:
    """Validate and transform one record batch column-wise: the good rows as a store table, and the problems."""
    n = batch.num_rows
    problems: Problems = {}
    longer = "String should have at most {} characters"

    kinds = _text(path, batch, "type")
    kinds = pc.if_else(pc.equal(kinds, ""), "track", kinds)
    _too_long(problems, kinds, "type", MAX_NAME_LENGTH, longer)

    names = _text(path, batch, "event")
    unnamed = pc.equal(names, "")
    needs_name = pc.and_(unnamed, pc.invert(pc.is_in(kinds, pa.array(sorted(NAMED_BY_TYPE)))))
    _flag(problems, needs_name, lambda i: f"event (the event name) is required for type {kinds[i].as_py()!r}")
    names = pc.if_else(unnamed, kinds, names)
    _too_long(problems, names, "event", MAX_NAME_LENGTH, longer)

    user_ids, anonymous_ids = _text(path, batch, "user_id"), _text(path, batch, "anonymous_id")
    _too_long(problems, user_ids, "user_id", MAX_ID_LENGTH, "must be at most {} characters")
    _too_long(problems, anonymous_ids, "anonymous_id", MAX_ID_LENGTH, "must be at most {} characters")
    user_keys = pc.if_else(pc.equal(user_ids, ""), anonymous_ids, user_ids)
    _flag(problems, pc.equal(user_keys, ""), USER_REQUIRED)

    stamps = _timestamps(path, batch.column("timestamp"), problems)

    message_ids = _text(path, batch, "message_id")
    _too_long(problems, message_ids, "message_id", MAX_ID_LENGTH, longer)

    properties = _properties(path, batch, problems)
    arrays: dict[str, pa.Array] = {
        "type": kinds,
        "event": names,
        "user_key": user_keys,
        "user_id": user_ids,
        "anonymous_id": anonymous_ids,
        "ts": stamps,
        "properties": properties,
    }
    for column in STANDARD_COLUMNS:
        if column in batch.schema.names:
            arrays[column] = _text(path, batch, column)

    unkeyed = pc.equal(message_ids, "")
    if pc.any(unkeyed).as_py():
        hashed = _hash_hex(_parquet_keys(arrays).to_numpy(zero_copy_only=False))
        arrays["event_id"] = pc.if_else(unkeyed, hashed, message_ids)
    else:
        arrays["event_id"] = message_ids

    table = _assemble(arrays, n, received_ms)
    if problems:
        keep = np.ones(n, dtype=bool)
        keep[list(problems)] = False
        table = table.filter(pa.array(keep))
    return table, problems


def _parquet_keys(arrays: dict[str, pa.Array]) -> pa.Array:
    """Each row's fields joined into one string: type, name, user ids, time, properties, standard columns."""
    parts = [arrays[name] for name in ("type", "event", "user_id", "anonymous_id")]
    parts.append(pc.cast(pc.fill_null(arrays["ts"], 0), pa.string()))
    parts.append(arrays["properties"])
    parts.extend(arrays[column] for column in STANDARD_COLUMNS if column in arrays)
    return pc.binary_join_element_wise(*parts, "\x1f")


def _timestamps(path: Path, column: pa.Array, problems: Problems) -> pa.Array:
    """Epoch milliseconds (int64; null or out of range where the row is bad) from any supported column type."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.dictionary_decode(), kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return _text_timestamps(column.cast(pa.string()), problems)
    if pa.types.is_timestamp(kind):
        raw = column.cast(pa.int64())
        if kind.unit == "s":
            fits = pc.and_(pc.greater_equal(raw, 0), pc.less_equal(raw, MAX_TIMESTAMP_MS // 1000))
            stamps = pc.multiply(pc.if_else(fits, raw, -1), 1000)
        else:
            stamps = _to_millis(raw, {"ms": 1, "us": 1_000, "ns": 1_000_000}[kind.unit])
    elif pa.types.is_date32(kind) or pa.types.is_date64(kind):
        days = pa.types.is_date32(kind)
        stamps = (
            pc.multiply(column.cast(pa.int32()).cast(pa.int64()), 86_400_000)
            if days
            else column.cast(pa.int64())
        )
    elif pa.types.is_integer(kind):
        if kind == pa.uint64():
            column = pc.min_element_wise(column, pa.scalar(MAX_TIMESTAMP_MS + 1, pa.uint64()))
        stamps = column.cast(pa.int64())
    elif pa.types.is_floating(kind):
        fits = pc.and_(
            pc.is_finite(column),
            pc.and_(pc.greater_equal(column, 0), pc.less_equal(column, MAX_TIMESTAMP_MS)),
        )
        stamps = pc.if_else(fits, pc.trunc(column), -1.0).cast(pa.int64())
    else:
        raise ImportFileError(
            f"{path}: column 'timestamp' has type {kind}; expected a timestamp, epoch milliseconds or ISO 8601 text"
        )
    _flag(problems, pc.is_null(column), TIMESTAMP_REQUIRED)
    _flag_range(problems, stamps)
    return stamps


def _to_millis(raw: pa.Array, per_ms: int) -> pa.Array:
    """Integer times in a finer unit to epoch ms, rounding down; anything before 1970 becomes -1."""
    if per_ms == 1:
        return raw
    return pc.divide(pc.if_else(pc.less(raw, 0), -per_ms, raw), per_ms)


def _flag_range(problems: Problems, stamps: pa.Array) -> None:
    """Flag times outside what the store holds (1970 to 2199), as `parse_timestamp` does."""
    outside = pc.or_(pc.less(stamps, MIN_TIMESTAMP_MS), pc.greater(stamps, MAX_TIMESTAMP_MS))
    _flag(problems, outside, "timestamp: must be between 1970-01-01 and 2199-12-31")


def _text_timestamps(text: pa.Array, problems: Problems) -> pa.Array:
    """Text times as `parse_timestamp` reads them: epoch ms and usual ISO 8601 column-wise, others per row."""
    text = pc.utf8_trim_whitespace(text)
    stamps = pa.nulls(len(text), pa.int64())
    digits = pc.match_substring_regex(text, r"^-?\d{1,15}$")
    if pc.any(digits).as_py():
        stamps = pc.if_else(digits, pc.cast(pc.if_else(digits, text, "0"), pa.int64()), stamps)
    iso = pc.fill_null(pc.match_substring_regex(text, _ISO_FAST), False)
    if pc.any(iso).as_py():
        zoned = pc.and_(iso, pc.match_substring_regex(text, r"(Z|[+-]\d{2}:?\d{2})$"))
        for mask, target in (
            (zoned, pa.timestamp("ns", tz="UTC")),
            (pc.and_not(iso, zoned), pa.timestamp("ns")),
        ):
            if pc.any(mask).as_py():
                placeholder = "1970-01-01T00:00:00Z" if target.tz else "1970-01-01T00:00:00"
                try:
                    parsed = pc.if_else(mask, text, placeholder).cast(target).cast(pa.int64())
                except pa.ArrowInvalid:
                    continue  # an impossible date among them: the per-row parser below reads the lot
                stamps = pc.if_else(mask, _to_millis(parsed, 1_000_000), stamps)
    missing = pc.equal(pc.fill_null(text, ""), "")
    leftover = pc.and_(pc.invert(missing), pc.is_null(stamps))
    if pc.any(leftover).as_py():
        values, texts = stamps.to_pylist(), text.to_pylist()
        for position in np.flatnonzero(leftover.to_numpy(zero_copy_only=False)):
            i = int(position)
            try:
                values[i] = parse_timestamp(texts[i])
            except ValueError as error:
                problems.setdefault(i, []).append(f"timestamp: {error}")
        stamps = pa.array(values, pa.int64())
    _flag(problems, missing, TIMESTAMP_REQUIRED)
    _flag_range(problems, stamps)
    return stamps


def _properties(path: Path, batch: pa.RecordBatch, problems: Problems) -> pa.Array:
    """Properties as JSON text ("{}" if absent): text is checked and kept as given, structs/maps serialized."""
    n = batch.num_rows
    if "properties" not in batch.schema.names:
        return _constant_text("{}", n)
    column = batch.column("properties")
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.dictionary_decode(), kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        text = column.cast(pa.string())
        text = pc.if_else(pc.equal(pc.fill_null(text, ""), ""), "{}", text)
        try:  # each distinct text is parsed once: event properties repeat a lot in practice
            parsed_types = set(map(type, map(orjson.loads, pc.unique(text).to_pylist())))
        except orjson.JSONDecodeError:
            parsed_types = set()
        if parsed_types != {dict}:
            _flag_json_text(text.to_pylist(), problems)
        return text
    if pa.types.is_struct(kind) or pa.types.is_map(kind):
        is_map = pa.types.is_map(kind)
        out: list[str] = []
        for i, value in enumerate(column.to_pylist()):
            try:
                out.append(dumps_properties(dict(value) if is_map else value) if value else "{}")
            except (TypeError, orjson.JSONEncodeError) as error:
                problems.setdefault(i, []).append(f"properties: cannot be stored as JSON ({error})")
                out.append("{}")
        return pa.array(out, pa.string())
    raise ImportFileError(
        f"{path}: column 'properties' has type {kind}; expected JSON text, a struct or a map"
    )


def _flag_json_text(values: list[str], problems: Problems) -> None:
    """Find the rows whose properties text is not a JSON object (the column-wide check failed)."""
    for i, value in enumerate(values):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError as error:
            problems.setdefault(i, []).append(f"properties: not valid JSON ({error})")
            continue
        if type(parsed) is not dict:
            problems.setdefault(i, []).append("properties: must be a JSON object")
