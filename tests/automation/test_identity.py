"""Model instances through `POST /api/v1/identify`: several ids per instance, merging, conflicts,
relationships that pair up later, and how an event picks its instance."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from funnels.automation.identity import Identify, IdentityConflict, identify
from funnels.store import identity as stored
from funnels.store.state import Connection, StateStore
from tests.automation.conftest import World


def instance(world: World, model: str, id_: Any, expect: int = 200) -> dict[str, Any]:
    return world.get(f"/v0/models/{model}/{id_}", expect=expect)  # type: ignore[no-any-return]


def test_a_match_on_any_id_updates_the_instance_and_adds_new_ids(world: World) -> None:
    created = world.identify(["c1", "ada@example.com"], properties={"plan": "trial"})
    assert created["status"] == "processed"
    assert created["instance"] == {"model": "customer", "id": "c1"}
    updated = world.identify(["ada@example.com", "cus_42"], properties={"plan": "pro"})
    assert updated["instance"] == {"model": "customer", "id": "c1"}  # the primary id stays the first
    for id_ in ("c1", "ada@example.com", "cus_42"):
        body = instance(world, "customer", id_)
        assert body["id"] == "c1"
        assert body["ids"] == ["c1", "ada@example.com", "cus_42"]
        assert body["properties"] == {"plan": "pro"}
    answer = world.post("/v0/events", {"event": "x", "user_id": "u"})  # unrelated: no instance made
    assert answer["accepted"] == 1
    instance(world, "customer", "u", expect=404)


def test_a_later_identify_leading_with_a_new_id_keeps_the_primary_id(world: World) -> None:
    world.identify(["first"])
    result = world.identify(["second", "first"])
    assert result["instance"] == {"model": "customer", "id": "first"}
    body = instance(world, "customer", "second")
    assert (body["id"], body["ids"]) == ("first", ["first", "second"])


def test_numbers_and_strings_name_the_same_id(world: World) -> None:
    world.identify([1], displayName="One")
    again = world.identify(["1", 2.5])
    assert again["instance"] == {"model": "customer", "id": "1"}
    body = instance(world, "customer", 1)
    assert body["ids"] == ["1", "2.5"]
    assert body["displayName"] == "One"
    assert world.event("sign_up", [1])["instance"] == {"model": "customer", "id": "1"}
    assert world.event("sign_up", ["2.5"])["instance"] == {"model": "customer", "id": "1"}


def test_properties_merge_with_last_write_wins(world: World) -> None:
    world.identify(["c1"], properties={"a": 1, "b": 1, "nested": {"x": 1}})
    world.identify(["c1"], properties={"b": 2, "c": 3, "nested": {"y": 2}})
    world.identify(["c1"])  # no properties: nothing removed
    assert instance(world, "customer", "c1")["properties"] == {"a": 1, "b": 2, "c": 3, "nested": {"y": 2}}


def test_a_batch_merges_in_order(world: World) -> None:
    world.post(
        "/api/v1/identify",
        [
            {"model": "customer", "ids": ["c1"], "properties": {"plan": "trial", "seats": 1}},
            {"model": "customer", "ids": ["c1", "c1-alt"], "properties": {"plan": "pro"}},
        ],
    )
    body = instance(world, "customer", "c1-alt")
    assert body["properties"] == {"plan": "pro", "seats": 1}
    assert body["ids"] == ["c1", "c1-alt"]


def test_display_name_is_replaced_when_given_and_kept_when_not(world: World) -> None:
    world.identify(["c1"], displayName="Ada")
    assert instance(world, "customer", "c1")["displayName"] == "Ada"
    world.identify(["c1"], displayName="Ada Lovelace")
    assert instance(world, "customer", "c1")["displayName"] == "Ada Lovelace"
    world.identify(["c1"], properties={"plan": "pro"})
    assert instance(world, "customer", "c1")["displayName"] == "Ada Lovelace"


def test_ids_of_two_instances_are_a_conflict_and_change_nothing(world: World) -> None:
    world.identify(["a1", "a@example.com"], displayName="A", properties={"plan": "trial"})
    world.identify(["b1"], displayName="B", properties={"plan": "pro"})
    before = {name: instance(world, "customer", name) for name in ("a1", "b1")}
    result = world.identify(
        ["a@example.com", "b1", "new-id"], displayName="Merged?", properties={"plan": "enterprise"}
    )
    assert result["status"] == "conflict"
    assert result["satisfied"] == [] and result["scheduled"] == []
    assert "a1" in result["reason"] and "b1" in result["reason"]
    after = {name: instance(world, "customer", name) for name in ("a1", "b1")}
    for name in ("a1", "b1"):
        for field in ("ids", "displayName", "properties", "updated_at"):
            assert after[name][field] == before[name][field], (name, field)
    instance(world, "customer", "new-id", expect=404)


def test_ids_are_unique_within_a_model_not_across_models(world: World) -> None:
    world.identify(["7"], displayName="Customer 7")
    world.identify(["7"], model="organization", displayName="Org 7")
    assert instance(world, "customer", "7")["displayName"] == "Customer 7"
    assert instance(world, "organization", "7")["displayName"] == "Org 7"


def test_relationships_to_ids_that_do_not_exist_yet_pair_up_when_they_appear(world: World) -> None:
    world.identify(["c1"], parentModel="organization", parentIds=["acme-billing"])
    assert instance(world, "customer", "c1")["parents"] == [
        {"model": "organization", "id": "acme-billing", "exists": False}
    ]
    world.identify(["o9"], model="organization", childModel="customer", childIds=["c2"])
    assert instance(world, "organization", "o9")["children"] == [
        {"model": "customer", "id": "c2", "exists": False}
    ]

    # The organization appears, primary id "acme", with the id the customer named as a second id.
    world.identify(["acme", "acme-billing"], model="organization", displayName="Acme")
    assert instance(world, "customer", "c1")["parents"] == [
        {"model": "organization", "id": "acme", "exists": True}
    ]
    assert instance(world, "organization", "acme")["children"] == [
        {"model": "customer", "id": "c1", "exists": True}
    ]
    world.identify(["c2"])
    assert instance(world, "organization", "o9")["children"] == [
        {"model": "customer", "id": "c2", "exists": True}
    ]
    assert instance(world, "customer", "c2")["parents"] == [
        {"model": "organization", "id": "o9", "exists": True}
    ]


def test_an_event_without_model_picks_the_first_declared_model_with_a_matching_id(world: World) -> None:
    # Declared: customer, then organization. The organization exists first, so creation order cannot decide.
    world.identify(["shared"], model="organization")
    world.identify(["org-only"], model="organization")
    assert world.event("ping", ["shared"])["instance"] == {"model": "organization", "id": "shared"}
    world.identify(["shared"])
    assert world.event("ping", ["shared"])["instance"] == {"model": "customer", "id": "shared"}
    assert world.event("ping", ["org-only"])["instance"] == {"model": "organization", "id": "org-only"}
    # The model order decides first: an earlier id of a later model does not win.
    assert world.event("ping", ["nobody", "org-only", "shared"])["instance"] == {
        "model": "customer",
        "id": "shared",
    }


def test_an_event_with_model_only_looks_at_that_model(world: World) -> None:
    world.identify(["shared"])
    world.identify(["shared"], model="organization")
    world.identify(["cust-only"])
    named = world.event("ping", ["shared"], model="organization")
    assert named["instance"] == {"model": "organization", "id": "shared"}
    missing = world.event("ping", ["cust-only"], model="organization")
    assert missing["status"] == "unmatched"
    assert "organization" in missing["reason"] and "cust-only" in missing["reason"]
    assert world.event("ping", ["cust-only"])["instance"] == {"model": "customer", "id": "cust-only"}


# Concurrent identifies (several writers, on PostgreSQL): another writer commits an id between this
# identify's read of who holds its ids and its insert of them. Staged on both dialects by hiding the other
# writer's instance from the identify's first read, and raced for real on PostgreSQL.


def stale_first_read(monkeypatch: pytest.MonkeyPatch, hidden: int) -> None:
    """The next read of id holders misses instance `hidden`, as if it had not committed yet."""
    real = stored.owners_in
    reads: list[int] = []

    def owners_in(connection: Connection, model: str, ids: Any) -> dict[str, int]:
        found = real(connection, model, ids)
        reads.append(1)
        return (
            {id_: holder for id_, holder in found.items() if holder != hidden} if len(reads) == 1 else found
        )

    monkeypatch.setattr(stored, "owners_in", owners_in)


def in_store(target: Path | str, run: Callable[[Connection], Any]) -> Any:
    store = StateStore(target)
    try:
        with store.write() as connection:
            return run(connection)
    finally:
        store.close()


def test_a_first_identify_beaten_to_its_id_updates_the_winner(
    state_target: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(connection: Connection) -> None:
        winner, _ = identify(connection, Identify("customer", ("c1",), properties={"seats": 1}), 100)
        stale_first_read(monkeypatch, winner.id)
        second = Identify("customer", ("c1", "c1-alt"), display_name="Ada", properties={"plan": "pro"})
        instance, created = identify(connection, second, 200)
        assert (instance.id, created) == (winner.id, False)
        assert (instance.properties, instance.display_name) == ({"seats": 1, "plan": "pro"}, "Ada")
        assert stored.ids_of(connection, winner.id, 10) == ["c1", "c1-alt"]
        assert stored.count_instances(connection) == 1  # the instance it began to create is gone

    in_store(state_target, run)


def test_an_update_beaten_to_a_new_id_is_a_conflict_and_changes_nothing(
    state_target: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(connection: Connection) -> None:
        a, _ = identify(connection, Identify("customer", ("a1",), properties={"plan": "trial"}), 100)
        b, _ = identify(connection, Identify("customer", ("b1",)), 100)
        stale_first_read(monkeypatch, b.id)
        with pytest.raises(IdentityConflict) as conflict:
            identify(connection, Identify("customer", ("a1", "b1", "fresh"), properties={"plan": "pro"}), 200)
        assert conflict.value.owners == {"a1": "a1", "b1": "b1"}
        assert stored.owners_in(connection, "customer", ["a1", "b1", "fresh"]) == {"a1": a.id, "b1": b.id}
        assert stored.load_instances(connection, [a.id])[a.id] == a

    in_store(state_target, run)


BLOCKED = (
    "SELECT count(*) FROM pg_locks JOIN pg_stat_activity USING (pid)"
    " WHERE NOT pg_locks.granted AND pg_stat_activity.datname = current_database()"
)


def test_two_writers_identifying_one_new_id_at_once_both_commit(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second writer reads no holder of `c1` (the first has not committed), creates an instance and
    waits on inserting `c1` until the first commits; then it gets nothing, reads the winner back and
    updates it instead. Neither transaction fails."""
    store = StateStore(postgres_url)
    begun: list[int] = []  # instances the second writer began and deleted again
    real_delete = stored.delete_instance

    def delete_instance(connection: Connection, instance_id: int) -> None:
        begun.append(instance_id)
        real_delete(connection, instance_id)

    monkeypatch.setattr(stored, "delete_instance", delete_instance)
    inserted = threading.Event()

    def first() -> None:
        with store.write() as connection:
            identify(connection, Identify("customer", ("c1",), properties={"seats": 1}), 100)
            inserted.set()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # commit once the second writer waits on our `c1`
                with store.read() as probe:
                    if probe.exec_driver_sql(BLOCKED).scalar_one():
                        break
                time.sleep(0.01)

    try:
        thread = threading.Thread(target=first)
        thread.start()
        assert inserted.wait(10)
        with store.write() as connection:
            second = Identify("customer", ("c1", "c1-alt"), properties={"plan": "pro"})
            instance, created = identify(connection, second, 200)
        thread.join(10)
        assert not created and len(begun) == 1 and begun[0] != instance.id
        with store.read() as connection:
            assert stored.count_instances(connection) == 1
            assert stored.ids_of(connection, instance.id, 10) == ["c1", "c1-alt"]
            assert stored.load_instances(connection, [instance.id])[instance.id].properties == {
                "seats": 1,
                "plan": "pro",
            }
    finally:
        store.close()
