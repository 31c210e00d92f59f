"""The events table's `names_by_day` projection: present on new and older tables, and counting what the table
holds after a merge collapses duplicates."""

from __future__ import annotations

import time
from pathlib import Path

from funnels.store.events import NAMES_PROJECTION, EventStore
from tests.analytics.conftest import at, ev


def projections(store: EventStore) -> list[str]:
    rows = store.query("SELECT name FROM system.projections WHERE table = 'events'").rows
    return [row[0] for row in rows]


def names(store: EventStore) -> tuple[list[tuple[str, int]], int]:
    """(event, events) pairs, counted the way the projection can answer, and the rows that read."""
    results = store.query("SELECT event, count() FROM events GROUP BY type, event ORDER BY event")
    return [(event, int(n)) for event, n in results.rows], int(results.statistics["rows_read"])


def test_a_table_made_before_the_projection_gets_it_on_open(tmp_path: Path) -> None:
    store = EventStore(tmp_path)  # this test process holds no other store
    try:
        store.execute(f"ALTER TABLE events DROP PROJECTION {NAMES_PROJECTION}")
        store.execute("ALTER TABLE events RESET SETTING deduplicate_merge_projection_mode")
        assert projections(store) == []
        store.insert_events([ev(f"u{i}", at(0, i), "track", "connect") for i in range(500)])
    finally:
        store.close()
    store = EventStore(tmp_path)
    try:
        assert projections(store) == [NAMES_PROJECTION]
        deadline = time.monotonic() + 10  # the existing part is projected by a background mutation
        while names(store)[1] >= 500 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert names(store) == ([("connect", 500)], 1)
    finally:
        store.close()


def test_the_projection_counts_duplicates_until_a_merge_collapses_them(tmp_path: Path) -> None:
    store = EventStore(tmp_path)
    try:
        event = ev("u1", at(0), "track", "connect", event_id="same")
        store.insert_events([event])
        store.insert_events([event])  # a second part: the same row, as a repeated import would write
        assert names(store)[0] == [("connect", 2)] and store.count() == 2
        store.execute("OPTIMIZE TABLE events FINAL")
        assert names(store)[0] == [("connect", 1)] and store.count() == 1
    finally:
        store.close()
