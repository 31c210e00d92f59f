"""The write-ahead event log and the shipper that moves it into the event store.

How it works: an ingest request commits its events to `event_log` in SQLite (synchronous=FULL) and only
then answers 2xx, so an acknowledged event survives a crash. `event_log.event_id` is unique, so a repeated
message id is a no-op for as long as its row is kept (the dedup window, 7 days by default).

The shipper copies log rows to the event store in sequence order, each tagged with its `log_seq`. Its
watermark is `max(log_seq)` read back from the event store at start, so a crash between "inserted into
chDB" and anything recorded afterwards never ships a row twice, and nothing is skipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from sqlalchemy import Connection, delete, func, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from funnels.background import BackgroundLoop
from funnels.clock import Clock
from funnels.events import Event
from funnels.store.events import EventStore
from funnels.store.state import StateStore, chunks, event_log

log = logging.getLogger(__name__)

DEDUP_WINDOW_MS = 7 * 24 * 3600 * 1000


def known_event_ids(connection: Connection, event_ids: Sequence[str]) -> set[str]:
    """Which of these event ids the log already holds (the dedup window)."""
    found: set[str] = set()
    for chunk in chunks(dict.fromkeys(event_ids)):
        found.update(
            connection.execute(select(event_log.c.event_id).where(event_log.c.event_id.in_(chunk))).scalars()
        )
    return found


def log_events(connection: Connection, events: Sequence[Event]) -> None:
    """Append events to the log in the caller's transaction (their ids must be new: see `known_event_ids`)."""
    if events:
        connection.execute(
            sqlite_insert(event_log).on_conflict_do_nothing(index_elements=["event_id"]),
            [
                {"event_id": e.event_id, "record": e.to_log_record(), "received_ms": e.received_ms}
                for e in events
            ],
        )


class Shipper(BackgroundLoop):
    """Ships the event log to the event store in batches, on a background thread or on demand."""

    thread_name = "funnels-shipper"

    def __init__(
        self,
        state: StateStore,
        events: EventStore,
        clock: Clock,
        batch_size: int = 10_000,
        interval_s: float = 0.2,
        dedup_window_ms: int = DEDUP_WINDOW_MS,
        prune_every_ms: int = 60_000,
    ) -> None:
        self.state = state
        self.events = events
        self.clock = clock
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.dedup_window_ms = dedup_window_ms
        self.prune_every_ms = prune_every_ms
        self._next_prune_ms = 0
        self.watermark = events.max_log_seq()
        self._lock = threading.Lock()
        self.failure: str | None = None  # why the last round failed, until one succeeds (`/healthz`)
        super().__init__()

    def ship_once(self) -> int:
        """Ship one batch; returns how many events it shipped."""
        with self._lock:
            with self.state.read() as connection:
                rows = connection.execute(
                    select(event_log.c.seq, event_log.c.record)
                    .where(event_log.c.seq > self.watermark)
                    .order_by(event_log.c.seq)
                    .limit(self.batch_size)
                ).all()
            if not rows:
                return 0
            self.events.insert_events([Event.from_log_record(r.record) for r in rows], [r.seq for r in rows])
            self.watermark = rows[-1].seq
            self._prune()
            return len(rows)

    def _prune(self) -> None:
        """Drop shipped rows older than the dedup window, at most once a `prune_every_ms`: the delete visits
        every shipped row still kept, which must not be paid per batch (it holds the writer)."""
        now = self.clock.now_ms()
        if now < self._next_prune_ms:
            return
        self._next_prune_ms = now + self.prune_every_ms
        cutoff = now - self.dedup_window_ms
        with self.state.write() as connection:
            connection.execute(
                delete(event_log).where(event_log.c.seq <= self.watermark, event_log.c.received_ms < cutoff)
            )

    def flush(self) -> int:
        """Ship until the log is empty; returns how many events were shipped."""
        total = 0
        while shipped := self.ship_once():
            total += shipped
        return total

    def backlog(self) -> int:
        with self.state.read() as connection:
            return int(
                connection.execute(
                    select(func.count()).select_from(event_log).where(event_log.c.seq > self.watermark)
                ).scalar_one()
            )

    def stop(self) -> None:
        """End the background loop, then ship what is left."""
        super().stop()
        self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            try:
                while not self._stop.is_set() and self.ship_once() == self.batch_size:
                    pass
                self.failure = None
            except Exception as error:  # keep shipping after a transient failure; rows stay in the log
                if self.failure is None:
                    log.exception("shipping the event log failed; will retry")
                self.failure = str(error)
                self._stop.wait(1.0)
