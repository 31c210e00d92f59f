"""The server's parts wired together over one data directory: stores, clock, event log shipper."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from funnels.clock import Clock, SystemClock
from funnels.events import Event
from funnels.ingest.log import AppendResult, Shipper, append_events
from funnels.store.events import EventStore, EventStoreError
from funnels.store.state import StateStore


class DataDirBusy(Exception):
    """Another process (usually a running server) holds the data directory's event store."""


def open_event_store(data_dir: Path) -> EventStore:
    try:
        return EventStore(data_dir / "events")
    except EventStoreError as error:
        raise DataDirBusy(str(error)) from error
    except RuntimeError as error:  # chDB refuses a second process on the same directory
        raise DataDirBusy(
            f"the event store in {data_dir} is in use by another process (a running `funnels serve`?): {error}"
        ) from error


@dataclass
class Services:
    data_dir: Path
    clock: Clock
    state: StateStore
    events: EventStore
    shipper: Shipper

    @classmethod
    def open(cls, data_dir: Path, clock: Clock | None = None) -> Services:
        clock = clock or SystemClock()
        data_dir.mkdir(parents=True, exist_ok=True)
        state = StateStore(data_dir / "state.sqlite3")
        events = open_event_store(data_dir)
        return cls(
            data_dir=data_dir, clock=clock, state=state, events=events, shipper=Shipper(state, events, clock)
        )

    def ingest(self, events: Sequence[Event]) -> AppendResult:
        """Make events durable (the event log), then nudge the shipper; returns once they are durable."""
        result = append_events(self.state, events)
        if result.accepted:
            self.shipper.wake()
        return result

    def close(self) -> None:
        self.shipper.stop()
        self.events.close()
        self.state.close()
