"""`funnels events copy --to URL` as a user runs it: a real process copying a data directory's embedded store
to the server backend on clickhouse-connect's chDB interface (a `chdb://` URL in tmp_path), interrupted by a
batch the target refuses, resumed, checked; and a node switched to the copy ships what the copy lacks."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import parse_funnel_query
from funnels.clock import ManualClock
from funnels.events import Event
from funnels.services import Services
from funnels.store.chdb_events import ChdbEventStore
from funnels.store.events import EventStore
from funnels.store.server_events import ServerEventStore
from tests.processes import free_port, start_server

pytestmark = pytest.mark.process  # a real server or CLI subprocess

FUNNELS = Path(sys.executable).parent / "funnels"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000
STEPS = [
    {"type": "track", "event": "view", "name": "view"},
    {"type": "track", "event": "signup", "name": "signup"},
    {"type": "track", "event": "buy", "name": "buy"},
]


def sample_events(count: int, received_ms: int | None = None) -> list[Event]:
    """Events over three months (received when they happened, or at `received_ms`); half of them from
    visitors who identify later (identity links to copy)."""
    rng = random.Random(7)
    events = []
    for number in range(count):
        user = rng.randrange(count // 8 + 1)
        user_id = f"u{user}" if rng.random() < 0.5 else ""
        ts = T0 + rng.randrange(90 * DAY)
        events.append(
            Event(
                event_id=f"e{number}",
                type="track",
                event=rng.choice(["view", "view", "signup", "buy"]),
                user_key=user_id or f"a{user}",
                ts_ms=ts,
                received_ms=ts if received_ms is None else received_ms,
                user_id=user_id,
                anonymous_id=f"a{user}",
            )
        )
    return events


def answers(store: EventStore) -> dict[str, Any]:
    """A closed funnel, raw and stitched, with its statistics left out."""
    found = {}
    for identity in ("raw", "stitched"):
        query = parse_funnel_query(
            {
                "date_from": "2026-01-01",
                "date_to": "2026-03-31",
                "steps": orjson.dumps(STEPS).decode(),
                "window_seconds": str(30 * 86_400),
                "identity": identity,
            }
        )
        found[identity] = {k: v for k, v in run_funnel(store, query).items() if k != "statistics"}
    return found


def month_counts(store: EventStore) -> list[list[Any]]:
    """Per month: the events (a row stored twice once, merged or not yet) and their distinct ids."""
    return store.query(
        "SELECT toYYYYMM(ts) AS m, count(), uniqExact(event_id) FROM events FINAL GROUP BY m ORDER BY m"
    ).rows


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, dict[str, Any], list[list[Any]]]:
    """A data directory of 4,000 events (half shipped with log sequence numbers, half imported, 100 of
    those twice and not merged yet), with the funnel's answers and the counts per month it gives."""
    data = tmp_path / "data"
    store = ChdbEventStore(data / "events")
    try:
        events = sample_events(4_000)
        store.insert_events(events[:2_000], list(range(1, 2_001)))
        store.insert_events(events[2_000:])
        store.insert_events(events[2_000:2_100])  # imported again: the same rows, collapsed by a merge
        return data, answers(store), month_counts(store)
    finally:
        store.close()


def copy(data: Path, to: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FUNNELS), "events", "copy", "--data-dir", str(data), "--to", to, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_copy_holds_every_event_and_answers_every_funnel_alike(
    tmp_path: Path, source: tuple[Path, dict[str, Any], list[list[Any]]]
) -> None:
    data, expected, counts = source
    target = tmp_path / "target"
    result = copy(data, f"chdb://{target}", "--batch-rows", "700")
    assert result.returncode == 0, result.stderr
    assert re.search(r"copied 4,[01]00 events; checking the copy", result.stderr)  # merged or not yet
    assert "every event of 3 month(s): counts, checksums and funnels agree" in result.stdout
    store = ServerEventStore.on_chdb(target)
    try:
        assert month_counts(store) == counts
        assert store.max_log_seq() == 2_000  # the shipper's watermark travels with the rows
        assert answers(store) == expected  # the target's own view made the identity links
        assert expected["stitched"] != expected["raw"]  # so the links were there to copy
    finally:
        store.close()
    again = copy(data, f"chdb://{target}")
    assert again.returncode == 0, again.stderr
    assert "copied 0 events" in again.stderr


def test_a_copy_interrupted_by_a_failing_batch_resumes_and_doubles_nothing(
    tmp_path: Path, source: tuple[Path, dict[str, Any], list[list[Any]]]
) -> None:
    data, expected, counts = source
    target = tmp_path / "target"
    store = ServerEventStore.on_chdb(target)  # the target refuses the batches holding one February user
    store.execute(
        "ALTER TABLE events ADD CONSTRAINT refused CHECK NOT (user_key = 'u100' AND toMonth(ts) = 2)"
    )
    store.close()
    failed = copy(data, f"chdb://{target}", "--batch-rows", "300")
    assert failed.returncode == 1
    assert "run the same command again to resume" in failed.stderr
    store = ServerEventStore.on_chdb(target)
    try:
        partial = dict((m, c) for m, c, _ in month_counts(store))
        assert partial[202601] == counts[0][1]  # January whole,
        assert 0 < partial.get(202602, 0) < counts[1][1]  # February cut at a batch,
        assert 202603 not in partial  # March not begun
        store.execute("ALTER TABLE events DROP CONSTRAINT refused")
    finally:
        store.close()
    resumed = copy(data, f"chdb://{target}", "--batch-rows", "300")
    assert resumed.returncode == 0, resumed.stderr
    assert "events are on the target already" in resumed.stderr
    store = ServerEventStore.on_chdb(target)
    try:
        assert month_counts(store) == counts  # each event once
        assert answers(store) == expected
    finally:
        store.close()


def test_the_copy_refuses_a_directory_a_running_server_holds(
    tmp_path: Path, source: tuple[Path, dict[str, Any], list[list[Any]]]
) -> None:
    data, _, _ = source
    server = start_server(data, free_port())
    try:
        result = copy(data, f"chdb://{tmp_path / 'target'}")
    finally:
        server.terminate()
        server.wait(30)
    assert result.returncode == 1
    assert "is held by" in result.stderr and "stop it first" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "target").exists()


def test_no_password_is_printed(tmp_path: Path, source: tuple[Path, dict[str, Any], list[list[Any]]]) -> None:
    data, _, _ = source
    result = copy(data, "http://funnels:s3cr%40t@127.0.0.1:9/funnels")
    assert result.returncode == 1
    assert "unreachable" in result.stderr and "funnels:***@127.0.0.1:9" in result.stderr
    assert "s3cr" not in result.stderr + result.stdout


def test_a_node_switched_to_the_copy_ships_exactly_what_the_copy_lacks(tmp_path: Path) -> None:
    """Copy a snapshot of the events while the node runs on, then switch: the target's `max(log_seq)` is
    the snapshot's, and the state store's log holds every event accepted after it."""
    data, clock = tmp_path / "data", ManualClock(start_ms=T0 + 95 * DAY)
    events = sample_events(300, received_ms=clock.now_ms())  # the log keeps them 7 days from then
    svc = Services.open(data, clock)
    svc.ingest(events[:200])
    assert svc.shipper.flush() == 200
    svc.close()
    shutil.copytree(data / "events", tmp_path / "snapshot" / "events", symlinks=True)  # cp -a, node stopped
    svc = Services.open(data, clock)  # and back, accepting more while the copy runs
    svc.ingest(events[200:])
    assert svc.shipper.flush() == 100
    svc.close()
    target = tmp_path / "target"
    result = copy(tmp_path / "snapshot", f"chdb://{target}")
    assert result.returncode == 0, result.stderr
    svc = Services.open(data, clock, events_url=f"chdb://{target}")  # switched
    try:
        assert svc.shipper.flush() == 100
        row = svc.events.query("SELECT count(), uniqExact(event_id), max(log_seq) FROM events").first()
        assert row is not None and [int(v) for v in row] == [300, 300, 300]
    finally:
        svc.close()


def test_a_target_holding_other_events_is_refused_before_anything_is_written(
    tmp_path: Path, source: tuple[Path, dict[str, Any], list[list[Any]]]
) -> None:
    data, _, _ = source
    target = tmp_path / "target"
    store = ServerEventStore.on_chdb(target)
    december = Event("x1", "track", "view", "u1", T0 - DAY, T0 - DAY, user_id="u1")
    store.insert_events([december])  # a month the source does not have
    store.close()
    result = copy(data, f"chdb://{target}")
    assert result.returncode == 1
    assert "the target holds events this store does not, in 2025-12" in result.stderr
    store = ServerEventStore.on_chdb(target)
    try:
        assert store.count() == 1
    finally:
        store.close()
