"""The events table's `names_by_day` projection: present on new and older tables, and counting what the table
holds after a merge collapses duplicates. The identity links: backfilled once on a table made before them,
rebuilt from the first version's table, read back for keys the store does not remember, and found by user
through the keys-by-user table. The identify events' own table: fed by its view, backfilled once on a table
made before it, again after a backfill or a bulk load a crash cut short."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from unittest.mock import ANY

import pytest

from funnels.store.chdb_events import ChdbEventStore
from funnels.store.events import (
    IDENTIFIES_TABLE,
    IDENTIFIES_VIEW,
    KEYS_BY_USER,
    KEYS_BY_USER_VIEW,
    LINKS_TABLE,
    LINKS_VIEW,
    NAMES_PROJECTION,
    PERSONS_DICTIONARY,
    PERSONS_SOURCE,
    EventStore,
)
from tests.analytics.conftest import at, ev


def projections(store: EventStore) -> list[str]:
    rows = store.query("SELECT name FROM system.projections WHERE table = 'events'").rows
    return [row[0] for row in rows]


def names(store: EventStore) -> tuple[list[tuple[str, int]], int]:
    """(event, events) pairs, counted the way the projection can answer, and the rows that read."""
    results = store.query("SELECT event, count() FROM events GROUP BY type, event ORDER BY event")
    return [(event, int(n)) for event, n in results.rows], int(results.statistics["rows_read"])


def test_a_table_made_before_the_projection_gets_it_on_open(tmp_path: Path) -> None:
    store = ChdbEventStore(tmp_path)  # this test process holds no other store
    try:
        store.execute(f"ALTER TABLE events DROP PROJECTION {NAMES_PROJECTION}")
        store.execute("ALTER TABLE events RESET SETTING deduplicate_merge_projection_mode")
        assert projections(store) == []
        store.insert_events([ev(f"u{i}", at(0, i), "track", "connect") for i in range(500)])
    finally:
        store.close()
    store = ChdbEventStore(tmp_path)
    try:
        assert projections(store) == [NAMES_PROJECTION]
        deadline = time.monotonic() + 10  # the existing part is projected by a background mutation
        while names(store)[1] >= 500 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert names(store) == ([("connect", 500)], 1)
    finally:
        store.close()


def test_the_projection_counts_duplicates_until_a_merge_collapses_them(tmp_path: Path) -> None:
    store = ChdbEventStore(tmp_path)
    try:
        event = ev("u1", at(0), "track", "connect", event_id="same")
        store.insert_events([event])
        store.insert_events([event])  # a second part: the same row, as a repeated import would write
        assert names(store)[0] == [("connect", 2)] and store.count() == 2
        store.execute("OPTIMIZE TABLE events FINAL")
        assert names(store)[0] == [("connect", 1)] and store.count() == 1
    finally:
        store.close()


def links(store: EventStore) -> list[list[str]]:
    return store.query(f"SELECT key, min(claim).3 FROM {LINKS_TABLE} GROUP BY key ORDER BY key").rows


def test_a_table_made_before_identity_links_is_backfilled_once_on_open(tmp_path: Path) -> None:
    store = ChdbEventStore(tmp_path)
    try:  # a data directory as an older version left it: events, no links table, view or dictionary
        for statement in (
            f"DROP DICTIONARY {PERSONS_DICTIONARY}",
            f"DROP VIEW {PERSONS_SOURCE}",
            f"DROP VIEW {KEYS_BY_USER_VIEW}",
            f"DROP TABLE {KEYS_BY_USER}",
            f"DROP VIEW {LINKS_VIEW}",
            f"DROP TABLE {LINKS_TABLE}",
        ):
            store.execute(statement)
        store.insert_events(
            [
                ev("", at(0, 0), "page", anonymous_id="a1"),
                ev("u1", at(0, 1000), "identify", anonymous_id="a1"),
                ev("u2", at(0, 2000), "alias", props={"previousId": "u1"}),
                ev("u3", at(0, 500), "identify", anonymous_id="a1"),  # the earliest claim on a1
            ]
        )
    finally:
        store.close()
    store = ChdbEventStore(tmp_path)
    try:
        assert links(store) == [["a1", "u3"], ["u1", "u2"]]
        store.insert_events([ev("u4", at(0, 3000), "identify", anonymous_id="a4")])  # the view feeds it now
        assert links(store) == [["a1", "u3"], ["a4", "u4"], ["u1", "u2"]]
    finally:
        store.close()
    store = ChdbEventStore(tmp_path)  # opened again: no second backfill (it would change nothing anyway)
    try:
        assert links(store) == [["a1", "u3"], ["a4", "u4"], ["u1", "u2"]]
        rows = store.query(f"SELECT count() FROM {LINKS_TABLE}").first()
        assert rows is not None and int(rows[0]) == 3
        person = store.query(
            f"SELECT dictGet('{PERSONS_DICTIONARY}', 'person', sipHash64('a4')) = sipHash64('u4'), "
            f"dictGet('{PERSONS_DICTIONARY}', 'person', sipHash64('u1')) = sipHash64('u2')",
            persons=True,
        ).first()
        assert person == [1, 1]
    finally:
        store.close()


def test_a_links_table_of_argmin_states_is_rebuilt_with_each_claims_time_on_open(tmp_path: Path) -> None:
    store = ChdbEventStore(tmp_path)
    try:  # the first version's table and view: an argMin state per key, which does not tell a claim's time
        store.insert_events(
            [
                ev("u2", at(0, 2000), "identify", anonymous_id="a1"),
                ev("u1", at(0, 1000), "track", anonymous_id="a1"),
            ]
        )
        for statement in (
            f"DROP VIEW {KEYS_BY_USER_VIEW}",
            f"DROP TABLE {KEYS_BY_USER}",
            f"DROP VIEW {LINKS_VIEW}",
            f"DROP TABLE {LINKS_TABLE}",
        ):
            store.execute(statement)
        store.execute(
            f"CREATE TABLE {LINKS_TABLE} (key String, "
            "claim AggregateFunction(argMin, String, Tuple(DateTime64(3, 'UTC'), String))) "
            "ENGINE = AggregatingMergeTree ORDER BY key"
        )
        old_select = (
            "SELECT anonymous_id AS key, argMinState(user_id, (ts, event_id)) AS claim FROM events "
            "WHERE user_id != '' AND anonymous_id NOT IN ('', user_id) GROUP BY key"
        )
        store.execute(f"INSERT INTO {LINKS_TABLE} {old_select}")
        store.execute(f"CREATE MATERIALIZED VIEW {LINKS_VIEW} TO {LINKS_TABLE} AS {old_select}")
    finally:
        store.close()
    store = ChdbEventStore(tmp_path)
    try:
        claims = store.query(
            f"SELECT key, toUnixTimestamp64Milli(min(claim).1), min(claim).2, min(claim).3 FROM {LINKS_TABLE} "
            "GROUP BY key"
        ).rows
        assert [[key, int(ms), *rest] for key, ms, *rest in claims] == [["a1", at(0, 1000), ANY, "u1"]]
        store.insert_events([ev("u3", at(0, 500), "identify", anonymous_id="a1")])  # the new view feeds it
        assert links(store) == [["a1", "u3"]]
    finally:
        store.close()


def test_known_links_are_read_back_after_an_eviction_and_a_restart(tmp_path: Path) -> None:
    """A key this process does not remember (pushed out of its memory of two keys, or from before a restart)
    is looked up in the links table: repeating its link marks nothing behind, a new key does."""
    store = ChdbEventStore(tmp_path, known_links=2)
    try:
        identifies = [ev(f"u{n}", at(0, n), "identify", anonymous_id=f"a{n}") for n in range(4)]
        before = store.links_generation
        store.insert_events(identifies)
        assert store.links_generation == before + 1
        store.insert_events([ev("u0", at(0, 100), "track", anonymous_id="a0")])  # a0 was pushed out
        assert store.links_generation == before + 1
    finally:
        store.close()
    store = ChdbEventStore(tmp_path)
    try:
        before = store.links_generation
        store.insert_events([ev(f"u{n}", at(0, 200), "track", anonymous_id=f"a{n}") for n in range(4)])
        assert store.links_generation == before
        store.insert_events([ev("u9", at(0, 300), "identify", anonymous_id="a9")])
        assert store.links_generation == before + 1
    finally:
        store.close()


def test_keys_linked_to_users_come_from_the_keys_by_user_table_checked_against_the_links(
    tmp_path: Path,
) -> None:
    store = ChdbEventStore(tmp_path)
    try:
        store.insert_events(
            [
                ev("u1", at(0, 1000), "identify", anonymous_id="a2"),
                ev("u1", at(0, 1000), "identify", anonymous_id="a1"),
                ev("u1", at(0, 1000), "identify", anonymous_id="a3"),
                ev("u2", at(0, 2000), "identify", anonymous_id="a4"),
            ]
        )
        assert store.keys_linked_to(["u1"], 10) == ["a1", "a2", "a3"]
        assert store.keys_linked_to(["u1"], 2) == ["a1", "a2"]
        store.insert_events([ev("u2", at(0, 500), "identify", anonymous_id="a1")])  # a1 is u2's now
        assert store.keys_linked_to(["u1"], 10) == ["a2", "a3"]
        assert store.keys_linked_to(["u1", "u2"], 10) == ["a1", "a2", "a3", "a4"]
        # What it looks users up in: every claim that was its key's least when stored, a1's old one too.
        pairs = store.query(f"SELECT user, key FROM {KEYS_BY_USER} FINAL ORDER BY user, key").rows
        assert pairs == [["u1", "a1"], ["u1", "a2"], ["u1", "a3"], ["u2", "a1"], ["u2", "a4"]]
        # A data directory from before the table: backfilled from the links on open.
        store.execute(f"DROP VIEW {KEYS_BY_USER_VIEW}")
        store.execute(f"DROP TABLE {KEYS_BY_USER}")
    finally:
        store.close()
    store = ChdbEventStore(tmp_path)
    try:
        pairs = store.query(f"SELECT user, key FROM {KEYS_BY_USER} FINAL ORDER BY user, key").rows
        assert pairs == [["u1", "a2"], ["u1", "a3"], ["u2", "a1"], ["u2", "a4"]]  # the links alone
        assert store.keys_linked_to(["u1"], 10) == ["a2", "a3"]
        store.insert_events([ev("u5", at(0, 100), "identify", anonymous_id="a5")])  # the view feeds it
        assert store.keys_linked_to(["u5"], 10) == ["a5"]
    finally:
        store.close()


def test_a_bulk_load_marks_the_dictionary_behind_once_at_its_end_even_when_it_fails(tmp_path: Path) -> None:
    store = ChdbEventStore(tmp_path)
    try:
        received = at(1)
        before = store.links_generation
        with store.views_after_load(received):  # the view is off: the load's rows are not told apart
            store.insert_events([replace(ev("u1", at(0), anonymous_id="a1"), received_ms=received)])
            assert store.links_generation == before
        assert store.links_generation == before + 1 and links(store) == [["a1", "u1"]]
        with pytest.raises(RuntimeError), store.views_after_load(received):
            raise RuntimeError("the load failed")
        assert store.links_generation == before + 2
        store.insert_events([ev("u2", at(0, 5), anonymous_id="a2")])  # told apart again: a new key
        assert store.links_generation == before + 3 and links(store) == [["a1", "u1"], ["a2", "u2"]]
    finally:
        store.close()


def identifies(store: EventStore) -> list[list[str]]:
    """The identify table's rows (user key, event id), each once, as a read sees them after merges."""
    return store.query(f"SELECT DISTINCT user_key, event_id FROM {IDENTIFIES_TABLE} ORDER BY event_id").rows


def identify_rows(store: EventStore) -> int:
    row = store.query(f"SELECT count() FROM {IDENTIFIES_TABLE}").first()
    return int(row[0]) if row else -1


OLD_IDENTIFIES = [
    ev("u1", at(0, 0), "identify", event_id="i1", props={"plan": "free"}),
    ev("u1", at(0, 10), "track", "connect", event_id="t1"),
    ev("u2", at(1, 0), "identify", event_id="i2", props={"plan": "team"}),
]


def test_a_store_made_before_the_identify_table_copies_its_identify_rows_once_on_open(tmp_path: Path) -> None:
    store = ChdbEventStore(tmp_path)
    try:  # a data directory as an older version left it: events, no identify table or view
        store.execute(f"DROP VIEW {IDENTIFIES_VIEW}")
        store.execute(f"DROP TABLE {IDENTIFIES_TABLE}")
        store.insert_events(OLD_IDENTIFIES)
    finally:
        store.close()
    store = ChdbEventStore(tmp_path)
    try:
        assert identifies(store) == [["u1", "i1"], ["u2", "i2"]]  # the identify rows only
        store.insert_events(
            [ev("u3", at(2, 0), "identify", event_id="i3"), ev("u3", at(2, 1), event_id="p3")]
        )
        assert identifies(store) == [["u1", "i1"], ["u2", "i2"], ["u3", "i3"]]  # the view feeds it now
    finally:
        store.close()
    store = ChdbEventStore(tmp_path)  # opened again: no second copy
    try:
        assert identify_rows(store) == 3
    finally:
        store.close()


def test_a_copy_a_crash_cut_short_is_made_again_on_the_next_open(tmp_path: Path) -> None:
    store = ChdbEventStore(tmp_path)
    try:  # the view made, the copy not (yet) done: the table says so in its comment
        store.insert_events(OLD_IDENTIFIES)
        store.execute(f"TRUNCATE TABLE {IDENTIFIES_TABLE}")
        store.execute(f"ALTER TABLE {IDENTIFIES_TABLE} MODIFY COMMENT 'backfilling'")
    finally:
        store.close()
    store = ChdbEventStore(tmp_path)
    try:
        assert identifies(store) == [["u1", "i1"], ["u2", "i2"]]
    finally:
        store.close()


def during_a_load(store: EventStore) -> tuple[str, bool]:
    """The identify table's comment, and whether its view exists."""
    comment = store.query(f"SELECT comment FROM system.tables WHERE name = '{IDENTIFIES_TABLE}'").first()
    view = store.query(f"SELECT count() FROM system.tables WHERE name = '{IDENTIFIES_VIEW}'").first()
    assert comment is not None and view is not None
    return str(comment[0]), int(view[0]) == 1


def test_a_bulk_load_fills_the_identify_table_once_after_it_even_after_a_crash(tmp_path: Path) -> None:
    store = ChdbEventStore(tmp_path)
    try:
        received = at(5)
        with store.views_after_load(received):  # the view is off during the load
            store.insert_events([replace(event, received_ms=received) for event in OLD_IDENTIFIES])
            assert identify_rows(store) == 0
            assert during_a_load(store) == ("backfilling", False)  # what a crash here leaves
        assert identifies(store) == [["u1", "i1"], ["u2", "i2"]]
        assert during_a_load(store) == ("complete", True)
        # A load the process dies in: the state the load's start left, and rows stored meanwhile.
        store.execute(f"ALTER TABLE {IDENTIFIES_TABLE} MODIFY COMMENT 'backfilling'")
        store.execute(f"DROP VIEW {IDENTIFIES_VIEW}")
        store.insert_events([replace(ev("u4", at(2, 0), "identify", event_id="i4"), received_ms=at(6))])
    finally:
        store.close()
    store = ChdbEventStore(tmp_path)
    try:
        assert identifies(store) == [["u1", "i1"], ["u2", "i2"], ["u4", "i4"]]
        store.insert_events([ev("u5", at(3, 0), "identify", event_id="i5")])  # and the view is back
        assert identifies(store)[-1] == ["u5", "i5"]
    finally:
        store.close()
