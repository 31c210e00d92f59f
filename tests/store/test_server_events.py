"""The event store on a ClickHouse server (`funnels.store.server_events`), through clickhouse-connect.

No ClickHouse server can be installed here, so these run the backend on clickhouse-connect's embedded chDB
interface (the whole analytics suite does too: `make test`'s third pass). What they prove: a retried
batch is stored once (its deduplication token), the shipper's watermark after an insert whose outcome is
unknown, a clear error for an unreachable server, and a password never printed. `test_real_server` runs
the same against a real server when `FUNNELS_TEST_CLICKHOUSE_URL` is set, and is skipped, saying so,
when it is not.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import parse_funnel_query
from funnels.services import Services
from funnels.store.events import EventStoreUnavailable, QueryBudget, QueryCancelled, QueryTimeout
from funnels.store.server_events import ServerEventStore, redact
from tests.analytics.conftest import at, ev, funnel_query, step, users
from tests.processes import wait_until
from tests.slow_funnels import PARAMS, add_events

REAL_SERVER = os.environ.get("FUNNELS_TEST_CLICKHOUSE_URL")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ServerEventStore]:
    opened = ServerEventStore.on_chdb(tmp_path / "server")
    yield opened
    opened.close()


def test_a_retried_batch_is_stored_once(store: ServerEventStore) -> None:
    batch = [ev("u1", at(0, i), "track", "connect", anonymous_id="a1") for i in range(3)]
    store.insert_events(batch, [1, 2, 3])
    store.insert_events(batch, [1, 2, 3])  # the same log rows again: the same token
    assert store.count() == 3 and store.max_log_seq() == 3
    store.insert_events(batch[:1], [4])  # other rows: stored
    assert store.count() == 4


def test_the_events_table_keeps_insert_tokens(store: ServerEventStore) -> None:
    row = store.query(
        "SELECT value FROM system.merge_tree_settings WHERE name = 'non_replicated_deduplication_window'"
    ).first()
    engine = store.query(
        "SELECT engine_full FROM system.tables WHERE name = 'events' AND database = 'funnels'"
    )
    assert row is not None and "non_replicated_deduplication_window = 1000" in engine.rows[0][0]


@pytest.mark.parametrize("events_backend", ["clickhouse-connect"])
def test_the_shipper_reads_its_watermark_back_after_a_failed_insert(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure whose outcome is unknown (stored, then the answer lost; or never stored): the next round
    reads the watermark from the store and sends the failed batch's rows again, and only them, so the
    server's deduplication drops a second copy. Nothing is lost, nothing counted twice."""
    events, shipper = services.events, services.shipper
    real = events._insert
    sent: list[list[int]] = []

    def stored_then_lost(table: pa.Table, token: str | None) -> None:
        real(table, token)
        sent.append(table.column("log_seq").to_pylist())
        raise EventStoreUnavailable("the answer was lost")

    def never_stored(table: pa.Table, token: str | None) -> None:
        sent.append(table.column("log_seq").to_pylist())
        raise EventStoreUnavailable("the server is down")

    services.ingest([ev("u1", at(0, i), "track", "connect") for i in range(3)])
    monkeypatch.setattr(events, "_insert", stored_then_lost)
    with pytest.raises(EventStoreUnavailable):
        shipper.ship_once()
    assert shipper.watermark is None  # to be read back
    services.ingest([ev("u2", at(0, i), "track", "connect") for i in range(2)])
    monkeypatch.setattr(events, "_insert", never_stored)
    with pytest.raises(EventStoreUnavailable):
        shipper.ship_once()  # reads 3 back: the first batch was stored; tries the next two
    assert sent == [[1, 2, 3], [4, 5]]
    services.ingest([ev("u3", at(0), "track", "connect")])
    monkeypatch.setattr(events, "_insert", real)
    assert shipper.ship_once() == 2  # the failed batch again, exactly: rows 4 and 5, not 6
    assert shipper.flush() == 1
    assert events.count() == 6 and shipper.watermark == 6 and shipper.backlog() == 0


def test_links_another_writer_adds_reach_the_next_stitched_query(tmp_path: Path) -> None:
    """Two stores on one database, as two processes open it (two nodes; a node and `funnels import`). chDB
    runs one engine per process, so here they are two handles of this process on one engine: each with its
    own generation, links known and reload decisions, which is all a second process has of its own."""
    reader = ServerEventStore.on_chdb(tmp_path / "server")
    writer = ServerEventStore.on_chdb(tmp_path / "server")
    try:
        reader.insert_events(
            [ev("", at(0, 0), "page", anonymous_id="a1"), ev("u1", at(0, 2000), "track", "Purchased")], [1, 2]
        )
        query: Any = funnel_query([step("page", "page"), step("track", "Purchased")])
        assert users(run_funnel(reader, query)) == [1, 0]  # a1 and u1: two persons so far
        loads = reader.persons_loads
        assert users(run_funnel(reader, query)) == [1, 0]
        assert reader.persons_loads == loads  # nothing changed anywhere: no reload
        writer.insert_events([ev("u1", at(0, 1000), "identify", anonymous_id="a1")], [3])  # links a1 → u1
        assert users(run_funnel(reader, query)) == [1, 1]
        assert reader.persons_loads == loads + 1
        writer.insert_events([ev("u1", at(0, 3000), "track", "Purchased", anonymous_id="a1")], [4])
        assert users(run_funnel(reader, query)) == [1, 1]
        assert reader.persons_loads == loads + 1  # a known link repeated: no change told, no reload
    finally:
        writer.close()
        reader.close()


def test_an_unreachable_server_is_a_clear_error_without_the_password() -> None:
    started = time.monotonic()
    with pytest.raises(EventStoreUnavailable) as raised:
        ServerEventStore.connect("http://funnels:s3cret@127.0.0.1:9/funnels")  # discard port: refused
    assert "unreachable" in str(raised.value) and "s3cret" not in str(raised.value)
    assert "funnels:***@127.0.0.1:9" in str(raised.value)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p%40ss@ch.internal:8443/funnels", "https://u:***@ch.internal:8443/funnels"),
        ("http://ch.internal/funnels", "http://ch.internal/funnels"),
    ],
)
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize("url", ["ftp://h/db", "https:///db", "http://u:p@h:8123/bad-name"])
def test_a_url_of_another_shape_is_refused(url: str) -> None:
    with pytest.raises(ValueError) as raised:
        ServerEventStore.connect(url)
    assert ":p@" not in str(raised.value)


# A query that runs as long as it is let (a billion hashes on one thread), for the limit and the cancel.
LONG_QUERY = (
    "SELECT count() FROM numbers(1000000000) WHERE sipHash64(number) % 7 = 0 SETTINGS max_threads = 1"
)


def test_an_analytics_query_past_its_limit_stops_and_the_client_goes_on(store: ServerEventStore) -> None:
    add_events(store, 20_000)
    query = parse_funnel_query(PARAMS)
    with store.limited(QueryBudget(limit_seconds=0.05)), pytest.raises(QueryTimeout) as stopped:
        store.query(LONG_QUERY)
    assert stopped.value.limit_seconds == 0.05
    with store.limited(QueryBudget(limit_seconds=600)):  # the same client answers, as outside a budget
        assert run_funnel(store, query)["data"] == run_funnel(store, query)["data"]
    assert store.query("SELECT getSetting('max_execution_time')").first() == [0]  # not left on the client


# --- a real server --------------------------------------------------------------------------------------


@pytest.fixture
def server_store() -> Iterator[ServerEventStore]:
    if not REAL_SERVER:
        pytest.skip(
            "no ClickHouse server given: set FUNNELS_TEST_CLICKHOUSE_URL=http[s]://user:password@host:port/"
            "database (a throwaway database is made beside it) to run these against one"
        )
    database = f"funnels_test_{uuid.uuid4().hex[:12]}"
    base = REAL_SERVER.rsplit("/", 1)[0] if REAL_SERVER.count("/") > 2 else REAL_SERVER
    opened = ServerEventStore.connect(f"{base}/{database}")
    try:
        yield opened
    finally:
        opened.execute(f"DROP DATABASE IF EXISTS {database}")
        opened.close()


def test_real_server(server_store: ServerEventStore) -> None:
    """The schema, a deduplicated retry, the persons dictionary (its source's user and password) and a
    stitched funnel on a real server."""
    store = server_store
    batch = [
        ev("", at(0, 0), "page", anonymous_id="a1"),
        ev("u1", at(0, 1000), "identify", anonymous_id="a1"),
        ev("u1", at(0, 2000), "track", "Purchased"),
    ]
    store.insert_events(batch, [1, 2, 3])
    store.insert_events(batch, [1, 2, 3])
    assert store.count() == 3 and store.max_log_seq() == 3
    query: Any = funnel_query([step("page", "page"), step("track", "Purchased")])
    assert users(run_funnel(store, query)) == [1, 1]
    assert store.linked_users("a1") == ["u1"] and store.keys_linked_to(["u1"], 10) == ["a1"]
    store.probe()
    # An analytics budget's query runs beside the store's other calls and is killed by its query id.
    budget = QueryBudget()
    failed: list[BaseException] = []

    def long() -> None:
        try:
            with store.limited(budget):
                store.query(LONG_QUERY)
        except BaseException as error:  # handed to the test
            failed.append(error)

    thread = threading.Thread(target=long)
    thread.start()
    wait_until(lambda: store.running(budget) or failed or not thread.is_alive(), interval=0.01)
    store.probe()  # while it runs
    store.cancel(budget)
    thread.join()
    assert len(failed) == 1 and isinstance(failed[0], QueryCancelled) and store.running(budget) == 0
