"""The write-ahead event log as the state store keeps it: events in sequence order, unique by event id.

`funnels.ingest` owns what the log is for (the durable acknowledgement, dedup by event id, shipping to the
event store); this module appends, reads and prunes its rows in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import Connection, bindparam, delete, func, select

from funnels.events import Event
from funnels.store.dialect import insert, transaction_lock
from funnels.store.state import chunks, event_log


class LoggedEvent(NamedTuple):
    seq: int  # the log's sequence number: shipping order, and `log_seq` in the event store
    event: Event


# Built once: these run for every ingest transaction and every shipped batch.
_KNOWN = select(event_log.c.event_id).where(event_log.c.event_id.in_(bindparam("ids", expanding=True)))
_AFTER = (
    select(event_log.c.seq, event_log.c.record)
    .where(event_log.c.seq > bindparam("seq"))
    .order_by(event_log.c.seq)
    .limit(bindparam("limit"))
)
_BACKLOG = select(func.count()).select_from(event_log).where(event_log.c.seq > bindparam("seq"))


def known_event_ids(connection: Connection, event_ids: Sequence[str]) -> set[str]:
    """Which of these event ids the log holds (the dedup window)."""
    found: set[str] = set()
    for chunk in chunks(dict.fromkeys(event_ids)):
        found.update(connection.execute(_KNOWN, {"ids": chunk}).scalars())
    return found


_APPEND_LOCK = 7370545839205168236  # the `transaction_lock` every append takes (see `append`)


def append(connection: Connection, events: Sequence[Event]) -> None:
    """Append events to the log (one statement); an event id the log holds already is skipped.

    Readers ship the log by sequence number, trusting that no row will later appear below one they have
    read. On SQLite that holds: one writer at a time. On PostgreSQL a transaction draws its sequence numbers
    when it inserts and they become visible when it commits, so a later number could commit first and an
    earlier one be skipped. Each append therefore takes a transaction-level advisory lock first, held until
    commit: appends commit in the order they drew their numbers. Callers append last in their transaction,
    so the lock covers only the insert and the commit."""
    if events:
        transaction_lock(connection, _APPEND_LOCK)
        connection.execute(
            insert(connection, event_log).on_conflict_do_nothing(index_elements=["event_id"]),
            [
                {"event_id": e.event_id, "record": e.to_log_record(), "received_ms": e.received_ms}
                for e in events
            ],
        )


def events_after(connection: Connection, seq: int, limit: int) -> list[LoggedEvent]:
    """The first `limit` events after sequence number `seq`, in sequence order."""
    rows = connection.execute(_AFTER, {"seq": seq, "limit": limit})
    return [LoggedEvent(row.seq, Event.from_log_record(row.record)) for row in rows]


def backlog(connection: Connection, seq: int) -> int:
    """How many events the log holds after sequence number `seq`."""
    return int(connection.execute(_BACKLOG, {"seq": seq}).scalar_one())


def prune(connection: Connection, through_seq: int, received_before_ms: int) -> None:
    """Delete the events up to sequence number `through_seq` that were received before `received_before_ms`."""
    connection.execute(
        delete(event_log).where(event_log.c.seq <= through_seq, event_log.c.received_ms < received_before_ms)
    )
