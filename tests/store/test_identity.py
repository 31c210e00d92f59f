"""Model instances and their ids on a real state store (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import NoResultFound

from funnels.store.identity import count_instances, ids_by_instance, instance_times
from funnels.store.state import StateStore, instance_ids, instances


@pytest.fixture
def store(state_target: Path | str) -> Iterator[StateStore]:
    state = StateStore(state_target)
    yield state
    state.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[StateStore]:
    """`ids_by_instance` orders by SQLite's rowid until identify numbers each id (`position`)."""
    state = StateStore(tmp_path / "state.sqlite3")
    yield state
    state.close()


def add_instance(
    store: StateStore, instance_id: int, *ids: str, created_ms: int = 5, updated_ms: int = 5
) -> None:
    with store.write() as connection:
        connection.execute(
            insert(instances).values(
                id=instance_id,
                model="customer",
                primary_id=ids[0],
                properties="{}",
                created_ms=created_ms,
                updated_ms=updated_ms,
            )
        )
        connection.execute(
            insert(instance_ids),
            [{"model": "customer", "id_text": id_, "instance_id": instance_id} for id_ in ids],
        )


# --- reads for delivery, people and replay (from the outbox branch)


def test_ids_come_in_the_order_they_were_added(sqlite_store: StateStore) -> None:
    """Not alphabetically: the primary id first (templates read `ids[0]`), then each later one."""
    add_instance(sqlite_store, 1, "zed", "alpha")
    add_instance(sqlite_store, 2, "m")
    with sqlite_store.write() as connection:
        connection.execute(insert(instance_ids).values(model="customer", id_text="beta", instance_id=1))
    with sqlite_store.read() as connection:
        assert ids_by_instance(connection, [1, 2, 3]) == {1: ["zed", "alpha", "beta"], 2: ["m"]}
        assert ids_by_instance(connection, []) == {}


def test_ids_of_more_instances_than_one_in_list_holds(sqlite_store: StateStore) -> None:
    with sqlite_store.write() as connection:
        connection.execute(
            insert(instance_ids),
            [{"model": "customer", "id_text": f"id-{n}", "instance_id": n} for n in range(1_200)],
        )
    with sqlite_store.read() as connection:
        found = ids_by_instance(connection, range(1_200))
    assert found == {n: [f"id-{n}"] for n in range(1_200)}


def test_an_instances_times_and_the_count(store: StateStore) -> None:
    with store.read() as connection:
        assert count_instances(connection) == 0
    add_instance(store, 1, "a", created_ms=10, updated_ms=20)
    add_instance(store, 2, "b")
    with store.read() as connection:
        assert instance_times(connection, 1) == (10, 20)
        assert count_instances(connection) == 2
        with pytest.raises(NoResultFound):
            instance_times(connection, 3)
