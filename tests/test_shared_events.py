"""The tests' shared embedded event store (tests/shared_events.py): what one test leaves in it, the next never
sees. A test fills the store every way tests do (events with identity links, the persons dictionary loaded,
`aggregate_by`'s memberships loaded, the health check's table, an import's paused merges), then the reset
the fixtures run after each test must leave it exactly as a new store: every table, view and dictionary
empty, the same objects with the same statements as a newly opened store's, and the store object
remembering nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from funnels.events import Event
from funnels.services import Services
from funnels.store.chdb_events import ChdbEventStore
from funnels.store.events import PERSONS_DICTIONARY
from funnels.store.groups import GROUPS_DICTIONARY, GROUPS_LOADS, GROUPS_TABLE, load_groups
from tests.analytics.test_aggregate_by import organizations
from tests.shared_events import SHARED, stored_rows

MS = 1_775_001_600_000


@pytest.fixture
def events_backend() -> str:
    return "chdb"  # the shared store is the embedded backend's, whatever $FUNNELS_TEST_EVENTS says


def _event(event_id: str, user_id: str, anonymous_id: str) -> Event:
    return Event(
        event_id=event_id,
        type="track",
        event="sign_up",
        user_key=user_id or anonymous_id,
        user_id=user_id,
        anonymous_id=anonymous_id,
        ts_ms=MS,
        received_ms=MS,
        properties={"plan": "pro"},
        columns={},
    )


def _fill(services: Services) -> None:
    """Leave behind everything a test can: rows in every table, loaded dictionaries, the memberships'
    tables, the health table, merges stopped, links known and generations moved on the store object."""
    store = services.events
    store.insert_events([_event("e1", "u1", "anon1"), _event("e2", "", "anon2")], log_seqs=[1, 2])
    assert store.linked_users("anon1") == ["u1"]
    person = store.query(
        f"SELECT dictGet('{PERSONS_DICTIONARY}', 'person', sipHash64('anon1')) = sipHash64('u1')",
        persons=True,
    ).first()
    assert person == [1]
    org, _ = organizations(services, {"acme": []}, {"c1": []}, [("acme", "c1")])
    load_groups(services.state, store, org)
    assert store.groups_created and store.groups_reloaded
    store.probe()  # the health check's table
    store.execute("SYSTEM STOP MERGES events")
    rows = stored_rows(store)
    assert rows["events"] == 2 and rows[GROUPS_TABLE] > 0 and rows[GROUPS_LOADS] == 1, rows
    assert rows["identity_links"] == 1 and rows["identity_keys_by_user"] == 1, rows
    assert store.persons_loads == 1 and store.links_generation > 1


def test_the_reset_leaves_the_shared_store_as_a_new_one(
    services: Services, tmp_path_factory: pytest.TempPathFactory
) -> None:
    store = services.events
    assert isinstance(store, ChdbEventStore) and store is SHARED.store
    assert not services.owns_events
    _fill(services)
    SHARED.reset()
    assert SHARED.store is store, "a store that a test only wrote to is reused"
    rows = stored_rows(store)
    assert set(rows) >= {"events", "identity_links", "identity_keys_by_user", PERSONS_DICTIONARY}
    assert not any(rows.values()), rows  # every table, view and dictionary: no rows
    assert not {GROUPS_TABLE, GROUPS_LOADS, GROUPS_DICTIONARY, "health"} & set(rows), rows
    assert store.linked_users("anon1") == []
    assert (store.persons_loads, store.links_generation) == (0, 1)
    assert not store.groups_created and store.groups_reloaded == {}
    # What the reset store holds is what a store opened anew holds, statement for statement.
    objects = "SELECT name, engine, create_table_query FROM system.tables WHERE database = currentDatabase()"
    reset = (store.query(objects).rows, rows)
    SHARED.release()
    fresh = SHARED.acquire(tmp_path_factory)
    assert fresh is not store
    assert (fresh.query(objects).rows, stored_rows(fresh)) == reset


def test_a_store_the_reset_cannot_make_new_is_replaced(
    services: Services, tmp_path_factory: pytest.TempPathFactory
) -> None:
    store = services.events
    opened = SHARED.opened
    store.execute("SET max_threads = 1")  # a session setting: not a new store's
    SHARED.reset()
    assert SHARED.store is None
    replacement = SHARED.acquire(tmp_path_factory)
    assert replacement is not store and SHARED.opened == opened + 1
    assert not any(stored_rows(replacement).values())


def test_opening_another_embedded_store_closes_the_shared_one(services: Services, tmp_path: Path) -> None:
    """chDB refuses a second directory while one is open: a test's own store releases the shared one."""
    services.events.insert_events([_event("e1", "u1", "anon1")])
    own = ChdbEventStore(tmp_path / "own")
    try:
        assert SHARED.store is None
        assert own.count() == 0  # a store of its own, not the shared one's rows
    finally:
        own.close()


# The fixtures' wiring, in file order (one process runs a file's tests in order, under xdist's loadfile too):
# the first leaves everything behind in the shared store, the next gets the same store and sees none of it.
LEFT_BEHIND: list[object] = []


def test_a_test_leaves_its_data_in_the_shared_store(services: Services) -> None:
    _fill(services)
    services.events.execute("SYSTEM START MERGES events")  # the store stays reusable: the next test gets it
    assert SHARED.store is services.events
    LEFT_BEHIND.append(services.events)


def test_the_next_test_in_the_process_sees_none_of_it(services: Services) -> None:
    store = services.events
    if LEFT_BEHIND:  # run after the test above (not alone): the very store it filled
        assert store is LEFT_BEHIND[-1]
    rows = stored_rows(store)
    assert not any(rows.values()), rows
    assert not {GROUPS_TABLE, GROUPS_LOADS, GROUPS_DICTIONARY, "health"} & set(rows), rows
    assert store.linked_users("anon1") == [] and store.count() == 0
    assert (store.persons_loads, store.links_generation, store.groups_created) == (0, 1, False)
