"""Instances, their ids and relationships as stored: creating and updating instances, claiming ids (an id
another instance holds stays its), reading owners and ids, relationships by id."""

from __future__ import annotations

from funnels.store import identity
from funnels.store.identity import Relationship
from funnels.store.state import Connection, StateStore


def new(connection: Connection, model: str, *ids: str, now_ms: int = 100) -> int:
    instance_id = identity.create_instance(connection, model, ids[0], None, '{"plan": "free"}', now_ms)
    assert identity.claim_ids(connection, model, ids, instance_id, 0) == dict.fromkeys(ids, instance_id)
    return instance_id


def test_a_created_instance_is_found_by_any_of_its_ids_in_its_model(state: StateStore) -> None:
    with state.write() as connection:
        c1 = identity.create_instance(connection, "customer", "c1", "Ada", '{"plan": "free"}', 100)
        identity.claim_ids(connection, "customer", ["c1", "ada@example.com"], c1, 0)
        o1 = new(connection, "organization", "c1")  # the same id in another model: another instance
    with state.read() as connection:
        found = identity.instance_by_id(connection, "customer", "ada@example.com")
        assert found is not None
        assert (found.id, found.model, found.primary_id, found.display_name) == (c1, "customer", "c1", "Ada")
        assert (found.properties, found.created_ms, found.updated_ms) == ({"plan": "free"}, 100, 100)
        assert found.ref() == {"model": "customer", "id": "c1"}
        assert identity.instance_by_id(connection, "customer", "nobody") is None
        assert identity.instance_by_id(connection, "organization", "ada@example.com") is None
        assert identity.owners_in(connection, "customer", ["c1", "ada@example.com", "x"]) == {
            "c1": c1,
            "ada@example.com": c1,
        }
        owners, named = identity.instances_named(connection, ["c1", "ada@example.com", "x"])
        assert sorted(owners["c1"]) == sorted([("customer", c1), ("organization", o1)])
        assert owners["ada@example.com"] == [("customer", c1)] and "x" not in owners
        assert named == identity.load_instances(connection, [c1, o1])
        assert set(identity.load_instances(connection, [c1, o1, 999])) == {c1, o1}
        assert identity.count_instances(connection) == 2
        assert identity.count_ids(connection, c1) == 2


def test_an_id_another_instance_holds_is_not_claimed_and_its_holder_is_read_back(state: StateStore) -> None:
    with state.write() as connection:
        first = new(connection, "customer", "c1", "shared")
        second = identity.create_instance(connection, "customer", "c2", None, "{}", 100)
        holders = identity.claim_ids(connection, "customer", ["c2", "shared"], second, 0)
        assert holders == {"c2": second, "shared": first}
        identity.release_ids(connection, "customer", ["c2", "shared"], second)  # only what it holds
        assert identity.owners_in(connection, "customer", ["c1", "c2", "shared"]) == {
            "c1": first,
            "shared": first,
        }
        identity.delete_instance(connection, first)
        assert identity.owners_in(connection, "customer", ["c1", "shared"]) == {}
        assert set(identity.load_instances(connection, [first, second])) == {second}


def test_update_replaces_what_is_given_and_keeps_the_rest(state: StateStore) -> None:
    with state.write() as connection:
        c1 = identity.create_instance(connection, "customer", "c1", "Ada", '{"plan": "free"}', 100)
        identity.update_instance(connection, c1, 200, properties=None, display_name=None)
        kept = identity.load_instances(connection, [c1])[c1]
        identity.update_instance(connection, c1, 300, properties='{"plan": "pro"}', display_name="Ada L.")
        changed = identity.load_instances(connection, [c1])[c1]
    assert (kept.properties, kept.display_name, kept.created_ms, kept.updated_ms) == (
        {"plan": "free"},
        "Ada",
        100,
        200,
    )
    assert (changed.properties, changed.display_name, changed.updated_ms) == ({"plan": "pro"}, "Ada L.", 300)


def test_ids_of_lists_the_ids_in_the_order_they_were_added_up_to_a_limit(state: StateStore) -> None:
    with state.write() as connection:
        c1 = new(connection, "customer", "m-primary", "z-second", "a-third")
        new(connection, "customer", "other")
        assert identity.claim_ids(connection, "customer", ["b-fourth"], c1, 3) == {"b-fourth": c1}
    with state.read() as connection:
        assert identity.ids_of(connection, c1, 10) == ["m-primary", "z-second", "a-third", "b-fourth"]
        assert identity.ids_of(connection, c1, 2) == ["m-primary", "z-second"]


def test_relationships_pair_by_id_and_are_kept_once(state: StateStore) -> None:
    with state.write() as connection:
        identity.relate(
            connection,
            [
                Relationship("organization", "o1", "customer", "c2"),
                Relationship("organization", "o1", "customer", "c1"),
                Relationship("organization", "o2", "customer", "c1"),
            ],
            100,
        )
        identity.relate(connection, [Relationship("organization", "o0", "customer", "c1")], 200)
        identity.relate(
            connection, [Relationship("organization", "o1", "customer", "c1")], 300
        )  # kept already
        identity.relate(connection, [], 400)
    with state.read() as connection:
        assert identity.children_of(connection, "organization", ["o2", "o1"]) == [
            ("customer", "c1"),
            ("customer", "c2"),
            ("customer", "c1"),
        ]
        assert identity.children_of(connection, "customer", ["o1"]) == []
        # oldest pair first: o0 was related after o1 and o2
        assert identity.parents_of(connection, "customer", ["c1"]) == [
            ("organization", "o1"),
            ("organization", "o2"),
            ("organization", "o0"),
        ]


def test_an_instances_ids_come_in_the_order_they_were_added(state: StateStore) -> None:
    """Not alphabetically: the primary id first (templates read `ids[0]`), then each later one; more
    instances than one IN list holds."""
    with state.write() as connection:
        c1 = new(connection, "customer", "zed", "alpha")
        c2 = new(connection, "customer", "m")
        identity.claim_ids(connection, "customer", ["beta"], c1, 2)
        many = [new(connection, "customer", f"id-{n}") for n in range(600)]
    with state.read() as connection:
        found = identity.instances_with_ids(connection, [c1, c2, 10_000])
        assert {key: ids for key, (_instance, ids) in found.items()} == {
            c1: ["zed", "alpha", "beta"],
            c2: ["m"],
        }
        assert {key: instance for key, (instance, _ids) in found.items()} == identity.load_instances(
            connection, [c1, c2]
        )
        assert identity.instances_with_ids(connection, []) == {}
        assert {
            key: ids for key, (_instance, ids) in identity.instances_with_ids(connection, many).items()
        } == {key: [f"id-{n}"] for n, key in enumerate(many)}


def test_memberships_are_every_id_of_each_child_and_the_groups_own_ids(state: StateStore) -> None:
    """What `aggregate_by` counts (funnels.store.groups): a child's every id → its organization's primary id,
    whichever side stored the pair and by whichever id; a child of two organizations in both; pairs naming
    a missing instance, and other models' pairs, contribute nothing. The generation moves with each change."""
    with state.write() as connection:
        new(connection, "organization", "acme", "acme.test")
        new(connection, "organization", "globex")
        new(connection, "customer", "c1", "c1@acme.test")
        new(connection, "customer", "c2")
        identity.relate(
            connection,
            [
                Relationship("organization", "acme.test", "customer", "c1@acme.test"),  # by other ids
                Relationship("organization", "acme", "customer", "c2"),
                Relationship("organization", "globex", "customer", "c2"),  # c2 in two organizations
                Relationship("organization", "ghost", "customer", "c1"),  # no such organization
                Relationship("organization", "globex", "customer", "c9"),  # no such customer (yet)
                Relationship("team", "acme", "customer", "c1"),  # another model's pair
            ],
            200,
        )
    with state.read() as connection:
        before = identity.memberships_generation(connection, "organization")
        assert identity.memberships(connection, "organization") == [
            ("acme", "acme"),
            ("acme.test", "acme"),
            ("c1", "acme"),
            ("c1@acme.test", "acme"),
            ("c2", "acme"),
            ("c2", "globex"),
            ("globex", "globex"),
        ]
        assert identity.memberships(connection, "team") == []
        assert identity.memberships_generation(connection, "organization") == before
    with state.write() as connection:
        new(connection, "customer", "c9", now_ms=300)  # the pair naming it now counts
    with state.read() as connection:
        assert identity.memberships_generation(connection, "organization") != before
        assert ("c9", "globex") in identity.memberships(connection, "organization")
