"""The shipper: the event log into the event store, each event once; with a shared event store (the server
backend, on clickhouse-connect's chDB interface here) only the lease's holder ships, and another node takes
over when the holder dies or stops."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from funnels.clock import ManualClock
from funnels.events import Event
from funnels.ingest.log import LEASE_RENEW_MS, LEASE_TTL_MS, Shipper
from funnels.store import eventlog, leases
from funnels.store.chdb_events import ChdbEventStore
from funnels.store.events import EventStore
from funnels.store.server_events import ServerEventStore
from funnels.store.state import StateStore


@pytest.fixture
def state(state_target: Path | str) -> Iterator[StateStore]:
    store = StateStore(state_target)
    yield store
    store.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerEventStore]:
    store = ServerEventStore.on_chdb(tmp_path / "server")
    yield store
    store.close()


def log_events(state: StateStore, first: int, count: int) -> None:
    events = [
        Event(
            event_id=f"e{i}",
            type="track",
            event="sign_up",
            user_key=f"u{i % 7}",
            ts_ms=1_775_001_600_000 + i,
            received_ms=1_775_001_600_000 + i,
            properties={},
        )
        for i in range(first, first + count)
    ]
    with state.write() as connection:
        eventlog.append(connection, events)


def stored(events: EventStore) -> tuple[int, int]:
    """(rows, distinct event ids) in the event store."""
    row = events.query("SELECT count(), uniqExact(event_id) FROM events").first()
    assert row is not None
    return int(row[0]), int(row[1])


def two_nodes(
    state: StateStore, server: ServerEventStore, **options: int
) -> tuple[ManualClock, Shipper, Shipper]:
    """One clock and the shippers of two nodes, `node-a` and `node-b`, over one state store and one server."""
    clock = ManualClock()
    a, b = (Shipper(state, server, clock, holder=f"node-{n}", **options) for n in "ab")
    return clock, a, b


def test_with_a_shared_store_only_the_lease_holder_ships_and_each_event_is_stored_once(
    state: StateStore, server: ServerEventStore
) -> None:
    clock, a, b = two_nodes(state, server, batch_size=30)
    log_events(state, 0, 100)
    shipped = {"a": 0, "b": 0}
    for _ in range(5):  # the two nodes' rounds interleaved
        shipped["a"] += a.ship_once()
        shipped["b"] += b.ship_once()
    assert shipped == {"a": 100, "b": 0}
    assert stored(server) == (100, 100)
    assert a.ships_here and not b.ships_here
    lease = leases.find(state, f"shipper:{server.store_id()}")
    assert lease is not None and lease.holder == "node-a"
    # The other node's backlog is measured from the holder's reported watermark, once it has renewed.
    log_events(state, 100, 5)
    clock.advance(LEASE_RENEW_MS)
    assert a.ship_once() == 5 and b.ship_once() == 0
    clock.advance(LEASE_RENEW_MS)
    assert a.ship_once() == 0 and b.ship_once() == 0
    assert b.backlog() == 0 and a.backlog() == 0
    log_events(state, 105, 3)
    assert b.backlog() == 3


def test_when_the_holder_dies_another_node_takes_over_after_the_lease_and_ships_the_rest_once(
    state: StateStore, server: ServerEventStore
) -> None:
    clock, a, b = two_nodes(state, server, batch_size=30)
    log_events(state, 0, 50)
    assert a.ship_once() == 30 and b.ship_once() == 0
    # node-a dies here (it ships nothing more, and does not renew): node-b waits for its lease to run out.
    log_events(state, 50, 20)
    clock.advance(LEASE_TTL_MS - 1)
    assert b.ship_once() == 0  # node-a's lease has 1 ms left
    clock.advance(LEASE_RENEW_MS)  # node-b's next try
    assert b.flush() == 40  # from the watermark read back from the store: 30 stored by node-a
    assert stored(server) == (70, 70)
    assert b.ships_here


def test_a_node_that_stops_hands_the_lease_on_at_once(state: StateStore, server: ServerEventStore) -> None:
    clock, a, b = two_nodes(state, server)
    log_events(state, 0, 10)
    assert a.ship_once() == 10 and b.ship_once() == 0
    log_events(state, 10, 5)
    a.stop()  # ships what is left first, then releases
    assert stored(server) == (15, 15)
    log_events(state, 15, 5)
    clock.advance(LEASE_RENEW_MS)  # node-b's next try
    assert b.ship_once() == 5
    assert stored(server) == (20, 20)


def test_a_holder_whose_lease_has_run_half_out_starts_no_batch_until_it_renews(
    state: StateStore, server: ServerEventStore
) -> None:
    """Time fencing: a node that stalled past half its lease (and so past several renewals) renews before
    shipping again; if another node took the lease meanwhile, it ships nothing."""
    clock, a, b = two_nodes(state, server)
    log_events(state, 0, 5)
    assert a.ship_once() == 5
    clock.advance(LEASE_TTL_MS)  # node-a stalls for a whole lease; node-b takes it
    log_events(state, 5, 5)
    assert b.ship_once() == 5
    log_events(state, 10, 5)
    assert a.ship_once() == 0  # node-a comes back: it tries to renew, finds node-b holding, and stops
    assert not a.ships_here
    assert b.ship_once() == 5
    assert stored(server) == (15, 15)


def test_with_an_event_store_of_its_own_a_node_ships_without_a_lease(
    state: StateStore, tmp_path: Path
) -> None:
    embedded = ChdbEventStore(tmp_path / "events")
    try:
        shipper = Shipper(state, embedded, ManualClock())
        log_events(state, 0, 10)
        assert shipper.ship_once() == 10
        assert shipper.ships_here
        with state.read() as connection:
            assert connection.execute(leases.leases.select()).first() is None
    finally:
        embedded.close()
