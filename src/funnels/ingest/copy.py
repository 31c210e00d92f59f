"""Copying a data directory's embedded event store into another event store (a ClickHouse server):
`funnels events copy --to URL`.

How it works: chDB runs one embedded engine per process, so the source is read by a child process
(`SourceStore`, spawned) that opens the directory's store and answers requests over a pipe: the months it
holds, batches as Arrow IPC, a funnel's answer. This process writes the target. Month by month (a month is
a partition), the target's count decides: equal, the month was copied before; none, it is copied from its
start; fewer, the copy resumes after the target's greatest sort key, since a month on the target is always
a whole number of batches in sort order (`funnels.store.copy`; on a cluster, where a batch may reach some
shards only, the month starts over and the batches' tokens drop what each shard holds); more, the copy
refuses (the target holds events that are not this store's). The child reads the next batch while this
process inserts the last one, so memory is two batches in the child and one here. Every batch is one
insert with a deduplication token made of its month, the sort key it starts after and its size, so an
insert retried after an error of unknown outcome is stored once. The target's own materialized view makes
the identity links of the rows it receives, as it does for shipped ones.

At the end (`verify_copy`), per month, the counts and a checksum of every row's sort key are compared
(rows stored twice counted once: the source or the target may not have merged them yet), and a funnel of
the store's most frequent events over its whole time span is answered by both, raw and stitched. The rows
keep their log sequence numbers, so the target's `max(log_seq)` is the source's: a node switched to the
target ships, from the state store's log, exactly the events the copy did not contain (docs/deploy.md,
"Moving to a ClickHouse server").
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import pyarrow as pa

from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import parse_funnel_query
from funnels.store.chdb_events import ChdbEventStore
from funnels.store.copy import Key, last_key, month_counts, read_batch, stored_until, time_span, top_events
from funnels.store.events import EventStore

BATCH_ROWS = 100_000


class CopyError(Exception):
    """The copy cannot go on (the source cannot be read, the target holds other events, a check failed)."""


def _serve(path: str, connection: Connection) -> None:
    """The child process: open the source store, then answer requests until told to stop (None)."""
    try:
        store = ChdbEventStore(Path(path))
    except Exception as error:  # chDB refuses a directory another process holds
        connection.send(("error", f"the event store in {path} cannot be opened: {error}"))
        return
    connection.send(("ok", None))
    ahead: tuple[tuple[Any, ...], Any] | None = None  # the batch read ahead, and its request
    try:
        while (request := connection.recv()) is not None:
            try:
                answer = ahead[1] if ahead is not None and ahead[0] == request else _answer(store, request)
            except Exception as error:
                connection.send(("error", str(error)))
                continue
            finally:
                ahead = None
            connection.send(("ok", answer))
            if request[0] == "batch" and answer[1] is not None:
                # While the parent inserts this batch, read the one it will ask for next.
                following = ("batch", request[1], answer[1], request[3])
                with contextlib.suppress(Exception):  # asked for again, it reports its error then
                    ahead = (following, _answer(store, following))
    finally:
        store.close()


def _answer(store: ChdbEventStore, request: tuple[Any, ...]) -> Any:
    verb, *args = request
    if verb == "months":
        return month_counts(store, checksum=args[0])
    if verb == "batch":  # the batch as Arrow IPC, with its last sort key (None when it is empty)
        sink = pa.BufferOutputStream()
        table = read_batch(store, *args)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes(), last_key(table) if table.num_rows else None
    if verb == "funnel":
        return run_funnel(store, parse_funnel_query(args[0]))
    if verb == "verification":
        return verification_funnel(store)
    raise ValueError(f"unknown request {verb!r}")


class SourceStore:
    """The embedded event store of a data directory, read in a child process (a context manager)."""

    def __init__(self, events_dir: Path) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no chDB engine yet
        self._connection, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(str(events_dir), child), name="funnels-copy-source", daemon=True
        )
        self._process.start()
        child.close()  # so that a child that dies is an EOF here
        self._receive()

    def __enter__(self) -> SourceStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _receive(self) -> Any:
        try:
            status, value = self._connection.recv()
        except EOFError:
            raise CopyError("the process reading the source store ended unexpectedly") from None
        if status == "error":
            raise CopyError(value)
        return value

    def _call(self, *request: Any) -> Any:
        self._connection.send(request)
        return self._receive()

    def months(self, checksum: bool = False) -> dict[int, tuple[int, int]]:
        result: dict[int, tuple[int, int]] = self._call("months", checksum)
        return result

    def batch(self, month: int, after: Key | None, rows: int) -> tuple[pa.Table, Key | None]:
        """The next batch of `month` after `after`, and its last sort key (None when it is empty)."""
        data, last = self._call("batch", month, after, rows)
        return pa.ipc.open_stream(data).read_all(), last

    def funnel(self, params: dict[str, str]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("funnel", params)
        return result

    def verification(self) -> dict[str, str] | None:
        result: dict[str, str] | None = self._call("verification")
        return result

    def close(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(OSError):  # a child that died already
                self._connection.send(None)
            self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._connection.close()


def month_label(month: int) -> str:
    return f"{month // 100}-{month % 100:02d}"


@dataclass
class MonthCopy:
    """One month of the copy: the events the source holds, and those the target held before this run."""

    month: int
    source: int
    target: int

    @property
    def left(self) -> int:
        return self.source - self.target


def plan_copy(source: SourceStore, target: EventStore) -> list[MonthCopy]:
    """The source's months with what the target holds of each; `CopyError` when the target holds events of
    a month the source has fewer of, or of a month the source does not have (they are not this store's)."""
    theirs = {month: count for month, (count, _) in month_counts(target).items()}
    plan = [MonthCopy(month, count, theirs.pop(month, 0)) for month, (count, _) in source.months().items()]
    extra = [month_label(month) for month, count in theirs.items() if count]
    extra += [f"{month_label(m.month)} ({m.target:,} > {m.source:,})" for m in plan if m.left < 0]
    if extra:
        raise CopyError(
            f"the target holds events this store does not, in {', '.join(extra)}: copy into an empty "
            "database (or one a copy of this store filled)"
        )
    return plan


def _token(month: int, after: Key | None, rows: int) -> str:
    start = hashlib.sha256(orjson.dumps(after)).hexdigest()[:32]
    return f"copy:{month}:{start}:{rows}"


def copy_month(
    source: SourceStore,
    target: EventStore,
    month: MonthCopy,
    batch_rows: int = BATCH_ROWS,
    advance: Callable[[int], None] = lambda rows: None,
) -> int:
    """Copy what the target lacks of one month, batch by batch (`advance` is told each batch's rows);
    returns the events copied."""
    if month.left == 0:
        return 0
    # Where the target's part of the month ends, when it is whole batches; else from the start again, the
    # tokens dropping the batches each shard holds.
    after = stored_until(target, month.month) if month.target and target.whole_batches else None
    copied = 0
    while True:
        table, last = source.batch(month.month, after, batch_rows)
        if last is None:
            return copied
        target.insert_copied(table, _token(month.month, after, table.num_rows))
        after = last
        copied += table.num_rows
        advance(table.num_rows)


def verification_funnel(store: EventStore) -> dict[str, str] | None:
    """The funnel both stores must answer alike: the three most frequent (type, event) pairs as steps, over
    the whole time span; None when the store has fewer than two."""
    steps = [
        {"type": kind, "event": event, "name": f"{kind}:{event}"} for kind, event in top_events(store, 3)
    ]
    span = time_span(store)
    if len(steps) < 2 or span is None:
        return None
    return {
        "date_from": span[0],
        "date_to": span[1],
        "steps": orjson.dumps(steps).decode(),
        "window_seconds": str(30 * 24 * 3600),
    }


def _answer_of(body: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in body.items() if name != "statistics"}


def verify_copy(source: SourceStore, target: EventStore) -> list[str]:
    """What differs between the source and the target: per month, the counts and checksums; then a funnel's
    answers, raw and stitched. Empty when the copy is whole."""
    problems: list[str] = []
    theirs = month_counts(target, checksum=True)
    for month, (count, digest) in source.months(checksum=True).items():
        count_there, digest_there = theirs.get(month, (0, 0))
        if count_there != count:
            problems.append(f"{month_label(month)}: {count:,} events here, {count_there:,} on the target")
        elif digest_there != digest:
            problems.append(f"{month_label(month)}: the same count, but not the same events")
    if problems:
        return problems
    params = source.verification()
    if params is not None:
        for identity in ("raw", "stitched"):
            query = {**params, "identity": identity}
            if _answer_of(source.funnel(query)) != _answer_of(run_funnel(target, parse_funnel_query(query))):
                problems.append(f"the {identity} funnel {params['steps']} differs between the two stores")
    return problems
