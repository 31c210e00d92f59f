"""The server's parts wired together over one data directory: stores, clock, event log shipper, and
automation (the loaded config and the action worker)."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from funnels.auth import KeyCache
from funnels.automation.engine import Outcome, Signal
from funnels.automation.process import WorkerProcess
from funnels.automation.runtime import Automation
from funnels.automation.worker import Worker, release_jobs
from funnels.clock import Clock, SystemClock
from funnels.events import Event
from funnels.ingest.committer import GroupCommitter
from funnels.ingest.log import Shipper
from funnels.ingest.transaction import apply_signals
from funnels.settings import DEFAULT_QUERY_TIMEOUT_SECONDS, DIR_MODE, tighten_data_dir
from funnels.store.chdb_events import ChdbEventStore
from funnels.store.events import EventStore, EventStoreError
from funnels.store.notify import due_soon
from funnels.store.server_events import ServerEventStore
from funnels.store.state import StateStore

log = logging.getLogger(__name__)


class DataDirBusy(Exception):
    """Another process (usually a running server) holds the data directory's event store."""


class ImportRunning(Exception):
    """An import into this data directory's event store is already running (one at a time)."""


def open_event_store(data_dir: Path, events_url: str | None = None) -> EventStore:
    """The event store `events_url` names (a ClickHouse server), else the data directory's embedded one.
    `EventStoreUnavailable` when the server cannot be reached; `DataDirBusy` when another process holds
    the directory's."""
    if events_url:
        return ServerEventStore.connect(events_url)
    try:
        return ChdbEventStore(data_dir / "events")
    except EventStoreError as error:
        raise DataDirBusy(str(error)) from error
    except RuntimeError as error:  # chDB refuses a second process on the same directory
        raise DataDirBusy(
            f"the event store in {data_dir} is in use by another process (a running `funnels serve`?): {error}"
        ) from error


@dataclass(frozen=True)
class IngestResult:
    outcomes: list[Outcome]

    @property
    def duplicates(self) -> int:
        return sum(outcome.status == "duplicate" for outcome in self.outcomes)

    @property
    def refused(self) -> list[tuple[int, Outcome]]:
        """The identifies refused for a cap (index in the request, outcome): nothing of them was stored."""
        return [(index, outcome) for index, outcome in enumerate(self.outcomes) if outcome.refused]

    @property
    def accepted(self) -> int:
        return len(self.outcomes) - self.duplicates - len(self.refused)


@dataclass
class Services:
    data_dir: Path
    clock: Clock
    state: StateStore
    events: EventStore
    shipper: Shipper
    automation: Automation
    worker: Worker  # delivers in this process when the app runs it (`run_worker`)
    worker_process: WorkerProcess | None = None  # or a child process does (`funnels serve`'s default)
    # Whether `close` closes the event store (not when `open` was given an open one: its opener closes it).
    owns_events: bool = True
    # Each query of an analytics request stops after this long (`--query-timeout`; None: no limit).
    query_timeout_seconds: float | None = DEFAULT_QUERY_TIMEOUT_SECONDS
    # Group commit for the HTTP endpoints (`ingest_async`); started and stopped with the app.
    committer: GroupCommitter[Signal, Outcome] = field(init=False)
    keys: KeyCache = field(init=False)  # API-key verification for requests
    _import_turn: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.committer = GroupCommitter(self._commit)
        self.keys = KeyCache(self.state)

    @classmethod
    def open(
        cls,
        data_dir: Path,
        clock: Clock | None = None,
        config_path: Path | None = None,
        state_url: str | None = None,
        events_url: str | None = None,
        events: EventStore | None = None,
    ) -> Services:
        """Open the stores (the state in `state_url`'s PostgreSQL database, else in the data directory; the
        events on `events_url`'s ClickHouse server, else in the data directory); with `config_path`, load
        the automation config (`ConfigInvalid` if it has problems). `events`: an event store already open,
        used instead of opening one, and left open by `close` (the tests share one per process: chDB starts
        its embedded server once per process)."""
        clock = clock or SystemClock()
        tighten_data_dir(data_dir)
        state = StateStore(state_url or data_dir / "state.sqlite3")
        automation = Automation(state, clock, config_path)
        owns_events = events is None
        if events is None:
            events = open_event_store(data_dir, events_url)
        return cls(
            data_dir=data_dir,
            clock=clock,
            state=state,
            events=events,
            shipper=Shipper(state, events, clock),
            automation=automation,
            worker=Worker(state, automation.delivery, clock, allow=automation.network_allow),
            owns_events=owns_events,
        )

    def ingest(self, items: Sequence[Event | Signal]) -> IngestResult:
        """Make events durable (the event log) with everything automation makes of them (progress, action
        jobs) in one transaction, then nudge the worker if a job is due; returns once all is durable."""
        signals = self._signals(items)
        return IngestResult(self._commit(signals) if signals else [])

    async def ingest_async(self, items: Sequence[Event | Signal]) -> IngestResult:
        """`ingest` for request handlers: shares a transaction with concurrent requests (group commit);
        returns once all is durable."""
        signals = self._signals(items)
        return IngestResult(await self.committer.submit(signals) if signals else [])

    def _signals(self, items: Sequence[Event | Signal]) -> list[Signal]:
        return [item if isinstance(item, Signal) else self.automation.signal_for(item) for item in items]

    def _commit(self, signals: Sequence[Signal]) -> list[Outcome]:
        plan, now_ms = self.automation.plan, self.clock.now_ms()
        # Run again if PostgreSQL picks this transaction to give way to another node's (a deadlock).
        outcomes = self.state.run_write(lambda connection: apply_signals(connection, plan, signals, now_ms))
        # The shipper is not woken: it ships every second, so a busy server ships a few large batches rather
        # than one per request (a chDB insert costs ~18 ms of CPU whatever its size; every 0.2 s cost two
        # nodes ~12% of their CPU per event at 400 events/s: docs/benchmarks.md).
        if any(due_soon(job["due_ms"], now_ms) for outcome in outcomes for job in outcome.scheduled):
            self.wake_worker()
        return outcomes

    @contextmanager
    def importing(self) -> Iterator[Path]:
        """A turn to import into the event store (`POST /v0/import`), one at a time: the importer's bulk-load
        mode (settings, paused merges, the links view dropped) is the store's, so two imports would undo
        each other's. Yields an empty private directory for the uploaded file, removed afterwards (and
        before: what an import cut off by a crash left). `ImportRunning` when it is not our turn."""
        if not self._import_turn.acquire(blocking=False):
            raise ImportRunning(
                "an import into this data directory is running: try again when it has finished"
            )
        uploads = self.data_dir / "imports"
        try:
            shutil.rmtree(uploads, ignore_errors=True)
            uploads.mkdir(mode=DIR_MODE)
            yield uploads
        finally:
            shutil.rmtree(uploads, ignore_errors=True)
            self._import_turn.release()

    def wake_worker(self) -> None:
        """A job may be due now: wake whichever worker delivers (the thread, or the child process)."""
        self.worker.wake()
        if self.worker_process is not None:
            self.worker_process.wake()

    def release_jobs(self, owner: str) -> None:
        """A delivery process exited: release the jobs it held now instead of when their lease ends."""
        released, unknown = release_jobs(self.state, owner, self.clock.now_ms())
        if released or unknown:
            log.warning(
                "released %d job(s) of the delivery process that exited; %d at-most-once send(s) cut off "
                "mid-send are now unknown",
                released,
                unknown,
            )

    def close(self) -> None:
        self.committer.stop()
        if self.worker_process is not None:
            self.worker_process.stop()
        self.worker.close()
        self.shipper.stop()
        if self.owns_events:
            self.events.close()
        self.state.close()
