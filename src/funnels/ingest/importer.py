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
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, TextIO

import numpy as np
import orjson
import pyarrow as pa
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
from funnels.ingest.columns import (
    TIMESTAMP_REQUIRED,
    ImportFileError,
    Problems,
    assemble,
    constant_text,
    hash_hex,
)
from funnels.ingest.parquet_columns import parquet_batch, text_timestamps
from funnels.ingest.parquet_native import native_import
from funnels.store.events import ARROW_SCHEMA, EventStore
from funnels.types import (
    MAX_TIMESTAMP_MS,
    MIN_TIMESTAMP_MS,
    NAMED_BY_TYPE,
    STANDARD_COLUMNS,
    JSONDict,
    RowError,
)

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

_STANDARD = frozenset(STANDARD_COLUMNS)
_FIELDS = ("type", "event", "user_id", "anonymous_id", "timestamp", "message_id", "properties")
Row = tuple[str, str, str, str, Any, str | None, str, dict[str, str]]
"""A checked event: type, name, user_id, anonymous_id, raw timestamp, message_id, properties JSON, columns."""


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
    files = check_files(paths)
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
        store.bulk_load(run.received_ms),
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


def file_format(path: PurePath) -> str:
    """The format a file's extension names (`FORMATS`); `ImportFileError` for any other."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        supported = ", ".join(FORMATS)
        raise ImportFileError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; supported: {supported}"
        )
    return kind


def check_files(paths: Sequence[Path]) -> list[tuple[Path, str]]:
    """Each file with its format, checked before anything is written: `ImportFileError` for an unsupported
    extension or a missing file."""
    files = []
    for path in map(Path, paths):
        kind = file_format(path)
        if not path.is_file():
            raise ImportFileError(f"{path}: no such file")
        files.append((path, kind))
    return files


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
            for i, event_id in zip(keyed, hash_hex(keys).to_pylist(), strict=True):
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
        return assemble(arrays, len(rows), received_ms), problems


def _python_timestamps(values: list[Any]) -> tuple[list[int], Problems]:
    """Raw `timestamp` values (text, int or float) as epoch ms, column-wise when they share a type."""
    problems: Problems = {}
    kinds = set(map(type, values))
    if kinds == {str}:
        return text_timestamps(pa.array(values, pa.string()), problems).to_pylist(), problems
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


def _concat(tables: list[pa.Table]) -> pa.Table:
    """Tables with possibly different column subsets as one table; a missing column is filled with ""."""
    names = {name for table in tables for name in table.column_names}
    fields = [schema_field for schema_field in ARROW_SCHEMA if schema_field.name in names]
    schema = pa.schema(fields)
    unified = []
    for table in tables:
        if table.schema != schema:
            columns = [
                table.column(f.name) if f.name in table.column_names else constant_text("", table.num_rows)
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
            table, problems = parquet_batch(path, batch, run.received_ms)
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
