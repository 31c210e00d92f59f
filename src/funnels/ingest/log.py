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

Several nodes, one shared event store (a ClickHouse server: `EventStore.single_writer` is false): one node at
a time ships, the holder of the lease `shipper:<the store's database id>` in the state store
(`funnels.store.leases`). The others try to take it every `LEASE_RENEW_MS`, and do when its holder has not
renewed it for `LEASE_TTL_MS` (a node that died) or released it (a node that stopped); the new holder reads
its watermark back from the store first, so it ships from where the last one stopped. The lease is time
fencing: a holder starts a batch only while more than half of its lease is left, which it renews every few
seconds, so the last batch of a holder that stalled has ended long before another node may start. (An
insert that hangs for longer than that could overlap its successor's: the rows would be stored twice until
a merge collapses them.) With an event store of its own (the embedded chDB) each node ships the whole log
into it, with no lease.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading

from funnels.background import BackgroundLoop
from funnels.clock import Clock
from funnels.store import eventlog, leases
from funnels.store.events import EventStore, EventStoreUnavailable
from funnels.store.state import StateStore

log = logging.getLogger(__name__)

DEDUP_WINDOW_MS = 7 * 24 * 3600 * 1000
LEASE_TTL_MS = 60_000  # a shipping node that has not renewed its lease for this long is replaced
LEASE_RENEW_MS = 5_000  # how often the holder renews it, and the others try to take it


class Shipper(BackgroundLoop):
    """Ships the event log to the event store in batches, on a background thread or on demand."""

    thread_name = "funnels-shipper"

    def __init__(
        self,
        state: StateStore,
        events: EventStore,
        clock: Clock,
        batch_size: int = 10_000,
        interval_s: float = 1.0,
        dedup_window_ms: int = DEDUP_WINDOW_MS,
        prune_every_ms: int = 60_000,
        holder: str | None = None,
        lease_ttl_ms: int = LEASE_TTL_MS,
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
        # A shared event store: the lease this node ships under (see above).
        self.holder = holder or f"shipper-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.lease_ttl_ms = lease_ttl_ms
        self._lease_name: str | None = None  # read from the store at the first round that needs it
        self.lease: leases.Lease | None = None  # as it stood at the last try (who ships, and how far)
        self._lease_tried_ms: int | None = None
        super().__init__()

    def ship_once(self) -> int:
        """Ship one batch; returns how many events it shipped."""
        with self._lock:
            if not self._may_ship():
                return 0
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

    @property
    def ships_here(self) -> bool:
        """Whether this node ships: always with an event store of its own, else while it holds the lease."""
        return self.events.single_writer or (self.lease is not None and self.lease.holder == self.holder)

    def _may_ship(self) -> bool:
        """With a shared event store: take or renew the lease when it is time to, and whether this node
        may start a batch now (it holds the lease, with more than half of it left)."""
        if self.events.single_writer:
            return True
        now = self.clock.now_ms()
        if self._lease_tried_ms is None or now - self._lease_tried_ms >= LEASE_RENEW_MS:
            if self._lease_name is None:
                self._lease_name = f"shipper:{self.events.store_id()}"
            held = self.ships_here
            self._lease_tried_ms = now
            self.lease = leases.hold(
                self.state,
                self._lease_name,
                self.holder,
                now,
                self.lease_ttl_ms,
                self.watermark if held else None,
            )
            if not held and self.ships_here:  # taken over: another node may have shipped meanwhile
                self.watermark = None
                log.info("this node ships the event log now (lease %s)", self._lease_name)
        lease = self.lease
        return (
            lease is not None
            and lease.holder == self.holder
            and now < lease.expires_ms - self.lease_ttl_ms // 2
        )

    def _release(self) -> None:
        if self._lease_name is not None and self.ships_here:
            leases.release(self.state, self._lease_name, self.holder)
            self.lease = None

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
        """The events the log holds that are not shipped yet: after this node's watermark, or, while another
        node ships, after the watermark that node last reported with its lease."""
        seq = self.watermark
        if not self.ships_here and self.lease is not None:
            seq = self.lease.progress
        with self.state.read() as connection:  # an unknown watermark: every row kept may be unshipped
            return eventlog.backlog(connection, seq or 0)

    def stop(self) -> None:
        """End the background loop, then ship what is left and hand the lease on."""
        super().stop()
        try:
            self.flush()
        finally:
            self._release()

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
