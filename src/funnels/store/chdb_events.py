"""The embedded event store: chDB (ClickHouse in this process) on the data directory's `events/`.

Everything that is chDB's alone lives here: its session, the escaping its query parameters need, inserts
from an Arrow table in this process (`Python()`), Parquet files read straight from this machine's disk
(`file()`), and the bulk-load mode of imports (no insert-time deduplication, background merges paused,
the identity links added once after the load).

chDB runs one engine per process, on one directory; a session (a connection to it) runs one statement at a
time (chDB's own mutex), while several sessions on the same directory run theirs at once (measured:
docs/benchmarks.md, "Concurrent queries"). So the store keeps one session for everything but analytics,
serialized by the store's lock as before (statements, inserts, the links' reads, the persons dictionary's
reloads, the health probe), and a small pool of reader sessions for the queries of analytics requests
(`EventStore.limited`): those run beside each other and beside inserts, never holding the lock, each with
its time limit appended as `SETTINGS max_execution_time` and its budget's query id as `log_comment`, by
which `cancel` finds it in `system.processes` (chDB's query ids are its own: a query cannot choose one).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from chdb import session as chdb_session

from funnels.store.events import EventStore, EventStoreError, QueryBudget, Results, current_budget

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0", "'": "\\'"})


def _bind(value: Any) -> Any:
    if isinstance(value, str):
        return value.translate(_ESCAPES)
    if isinstance(value, list | tuple):  # an `Array(String)` parameter: a literal of quoted strings
        return "[" + ",".join(f"'{item.translate(_ESCAPES)}'" for item in value) + "]"
    return value


def bind_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Parameters as chDB needs them: ClickHouse reads string parameter values in its escaped format, so
    backslashes, control characters and quotes are escaped to arrive exactly as given; a list of strings
    is an `Array(String)` parameter. Parameters travel beside the SQL text, so they do not count towards
    ClickHouse's `max_query_size`: a list of values bound as one array keeps the SQL's size fixed."""
    return {name: _bind(value) for name, value in (params or {}).items()}


# Reader sessions kept for analytics queries: more queries at once than this wait for one to finish (each
# query already uses every core; more at once would only share them thinner and hold more memory).
READERS = 4


def _append_settings(sql: str, settings: str) -> str:
    """`sql` with a SETTINGS clause added at its end (ClickHouse merges it with one the query has; a new
    line ends a trailing `--` comment)."""
    return f"{sql.rstrip().rstrip(';')}\nSETTINGS {settings}"


def _results(raw: bytes) -> Results:
    if not raw:
        return Results(meta=[], rows=[])
    body = orjson.loads(raw)
    return Results(meta=body["meta"], rows=body["data"], statistics=body.get("statistics", {}))


class ChdbEventStore(EventStore):
    """The embedded event store. One instance per process; calls are serialized by a lock, except the
    queries of analytics requests, which run on a pool of reader sessions (see the module's docstring)."""

    def __init__(self, path: Path, known_links: int = 100_000, readers: int = READERS) -> None:
        super().__init__(threading.RLock(), known_links)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._session = chdb_session.Session(str(path))
        # Reader sessions: opened on first need, up to `readers`, reused; `_idle` holds the free ones.
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._readers: list[Any] = []
        self._reader_turns = threading.BoundedSemaphore(readers)
        self._pool_lock = threading.Lock()  # `_readers` (not the store's lock: a query never waits for it)
        self._create_schema()

    def close(self) -> None:
        with self._lock, self._pool_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
            self._session.close()

    @contextmanager
    def _reader(self) -> Iterator[Any]:
        """A reader session of the pool, for one query (waits while `readers` queries run)."""
        with self._reader_turns:
            try:
                reader = self._idle.get_nowait()
            except queue.Empty:
                with self._pool_lock:
                    reader = chdb_session.Session(str(self.path))
                    self._readers.append(reader)
            try:
                yield reader
            except BaseException:
                # A query stopped midway (its limit, a kill) leaves part of its output on the session, which
                # the session's next query would return before its own (chDB 4.4): the session is dropped.
                with self._pool_lock:
                    self._readers.remove(reader)
                    reader.close()
                raise
            self._idle.put(reader)

    # chDB's query ids are its own (a query cannot choose one): a budget's queries carry their id in the
    # `log_comment` setting, which `system.processes` shows (a comment in the SQL does not survive there: a
    # query with parameters is listed as formatted after their substitution).
    _BUDGET_QUERIES = "startsWith(Settings['log_comment'], {prefix:String})"

    def _select_limited(self, sql: str, params: Mapping[str, Any] | None, budget: QueryBudget) -> Results:
        settings = f"log_comment = '{budget.next_query_id()}'"  # letters, digits and '-' only
        if budget.limit_seconds is not None:
            settings += f", max_execution_time = {max(budget.limit_seconds, 0.001):.6f}"
        marked = _append_settings(sql, settings)
        with self._reader() as reader:
            try:
                raw = reader.query(marked, "JSONCompact", params=bind_params(params)).bytes()
            except Exception as error:
                raise budget.refused(str(error)) from error
        return _results(raw)

    def query(self, sql: str, params: Mapping[str, Any] | None = None, persons: bool = False) -> Results:
        if current_budget() is not None:  # an analytics query: the lock for the dictionary's reload only
            return super().query(sql, params, persons)
        with self._lock:  # the dictionary's reload and the query, with no insert between them
            return super().query(sql, params, persons)

    def _run(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            try:
                self._session.query(sql, "Null", params=bind_params(params))
            except Exception as error:  # chDB raises plain RuntimeError/ChdbError
                raise EventStoreError(str(error)) from error

    def _select(self, sql: str, params: Mapping[str, Any] | None = None) -> Results:
        with self._lock:
            try:
                raw = self._session.query(sql, "JSONCompact", params=bind_params(params)).bytes()
            except Exception as error:
                raise EventStoreError(str(error)) from error
        return _results(raw)

    def query_arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run a query: its rows as an Arrow table (`funnels.store.copy` reads batches so)."""
        with self._lock:
            try:
                raw = self._session.query(sql, "ArrowStream", params=bind_params(params)).bytes()
            except Exception as error:
                raise EventStoreError(str(error)) from error
        return pa.ipc.open_stream(raw).read_all()

    def _insert(self, table: pa.Table, token: str | None) -> None:
        # chDB reads the Arrow table from this frame (`Python(table)`): no copy through a format.
        names = ", ".join(table.column_names)
        self._run(f"INSERT INTO events ({names}) SELECT {names} FROM Python(table)")

    @contextmanager
    def bulk_load(self, received_ms: int) -> Iterator[None]:
        """No insert-time deduplication (3x faster writes in chDB), background merges paused (they compete
        for the same cores: 0.72M → 1.11M rows/s raw insert at 10M rows), and the identity links and the
        identify events' table filled once after the load instead of per inserted block (`views_after_load`).
        All are restored afterwards; merges then collapse duplicates and compact the new parts in the background."""
        row = self.query("SELECT getSetting('optimize_on_insert')").first()
        self.execute("SET optimize_on_insert = 0")
        self.execute("SYSTEM STOP MERGES events")
        try:
            with self.views_after_load(received_ms):
                yield
        finally:
            self.execute("SYSTEM START MERGES events")
            self.execute(f"SET optimize_on_insert = {0 if row is not None and not row[0] else 1}")

    def parquet_source(self, path: Path) -> tuple[str, dict[str, Any]]:
        return "file({path:String}, 'Parquet')", {"path": str(path)}
