"""The shipper: moves the write-ahead event log into the event store.

How it works: an ingest transaction (`funnels.ingest.transaction`) commits its events to the event log in
the state store (synchronous=FULL) and only then answers 2xx, so an acknowledged event survives a crash.
Event ids are unique in the log, so a repeated message id is a no-op for as long as its row is kept (the
dedup window, 7 days by default).

The shipper copies log rows to the event store in sequence order, each tagged with its `log_seq`. Its
watermark is `max(log_seq)` read back from the event store at start, so a crash between "inserted into
the event store" and anything recorded afterwards never ships a row twice, and nothing is skipped.

An insert that fails may still have been stored (a server that went away mid-answer, a timeout), so after
a failure the watermark is read back from the store again before the next try, and the next try sends
the same rows (up to the failed batch's last sequence number), so it carries the same deduplication
token (`EventStore.insert_events`): a server that stored the first try drops the second. A store that
cannot be reached keeps failing the round; the rows wait in the log.
"""

from __future__ import annotations

import logging
import threading

from funnels.background import BackgroundLoop
from funnels.clock import Clock
from funnels.store import eventlog
from funnels.store.events import EventStore, EventStoreUnavailable
from funnels.store.state import StateStore

log = logging.getLogger(__name__)

DEDUP_WINDOW_MS = 7 * 24 * 3600 * 1000


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
        # The highest sequence number stored (None: to be read back from the store before the next batch),
        # and the last one of a batch that failed, which the next try must end at.
        self.watermark: int | None = None
        self._retry_until: int | None = None
        try:
            self.watermark = events.max_log_seq()
        except EventStoreUnavailable:  # a server not up yet: read at the first round
            log.warning("the event store is unreachable; shipping will wait for it")
        self._lock = threading.Lock()
        self.failure: str | None = None  # why the last round failed, until one succeeds (`/healthz`)
        super().__init__()

    def ship_once(self) -> int:
        """Ship one batch; returns how many events it shipped."""
        with self._lock:
            if self.watermark is None:
                self.watermark = self.events.max_log_seq()
            watermark, until = self.watermark, self._retry_until
            if until is not None and until <= watermark:  # the failed batch was stored after all
                until = self._retry_until = None
            with self.state.read() as connection:
                rows = eventlog.events_after(connection, watermark, self.batch_size)
            if until is not None:
                rows = [row for row in rows if row.seq <= until]
            if not rows:
                return 0
            try:
                self.events.insert_events([row.event for row in rows], [row.seq for row in rows])
            except Exception:
                self.watermark, self._retry_until = None, rows[-1].seq  # stored or not: ask the store
                raise
            self.watermark, self._retry_until = rows[-1].seq, None
            self._prune(rows[-1].seq)
            return len(rows)

    def _prune(self, watermark: int) -> None:
        """Drop shipped rows older than the dedup window, at most once a `prune_every_ms`: the delete visits
        every shipped row still kept, which must not be paid per batch (it holds the writer)."""
        now = self.clock.now_ms()
        if now < self._next_prune_ms:
            return
        self._next_prune_ms = now + self.prune_every_ms
        with self.state.write() as connection:
            eventlog.prune(connection, watermark, now - self.dedup_window_ms)

    def flush(self) -> int:
        """Ship until the log is empty; returns how many events were shipped."""
        total = 0
        while shipped := self.ship_once():
            total += shipped
        return total

    def backlog(self) -> int:
        with self.state.read() as connection:  # an unknown watermark: every row kept may be unshipped
            return eventlog.backlog(connection, self.watermark or 0)

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
