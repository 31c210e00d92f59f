"""The caps on what identify may store on one instance (properties per identify, merged properties, ids), on
every path that identifies, each tested at its boundary; and the instance view's query staying bounded
whatever an instance holds."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import insert

from funnels.automation.identity import (
    MAX_IDENTIFY_PROPERTIES_BYTES,
    MAX_INSTANCE_IDS,
    MAX_INSTANCE_PROPERTIES_BYTES,
)
from funnels.store.state import instance_ids
from tests.automation.conftest import World, error_of


def sized(key: str, size: int) -> dict[str, str]:
    """`{key: "xxx…"}` whose compact JSON is exactly `size` bytes."""
    properties = {key: "x" * (size - len(orjson.dumps({key: ""})))}
    assert len(orjson.dumps(properties)) == size
    return properties


def instance(world: World, id_: str, expect: int = 200) -> dict[str, Any]:
    return world.get(f"/v0/models/customer/{id_}", expect=expect)  # type: ignore[no-any-return]


def stored(world: World, id_: str) -> dict[str, Any]:
    """The instance as stored: everything the view shows but the timeline (events ship in the background)."""
    body = instance(world, id_)
    del body["timeline"]
    return body


def identify_events(world: World) -> int:
    return len(world.stored_events(where="type = 'identify'"))


def filler_to_cap(world: World, id_: str, key: str) -> dict[str, str]:
    """Properties under `key` that take the instance's merged properties to exactly the cap."""
    current = instance(world, id_)["properties"]
    room = MAX_INSTANCE_PROPERTIES_BYTES - len(orjson.dumps({**current, key: ""}))
    assert 0 < room <= MAX_IDENTIFY_PROPERTIES_BYTES - 16
    return {key: "y" * room}


def fill_two_thirds(world: World, id_: str) -> None:
    """Two identifies of ~21.8 KB each: a third one can reach the merged cap without its own cap in the way."""
    third = MAX_INSTANCE_PROPERTIES_BYTES // 3
    for key in ("a", "b"):
        result = world.identify([id_], properties=sized(key, third))
        assert result["status"] == "processed", result


def test_one_identifys_properties_are_capped_at_the_byte(world: World) -> None:
    world.identify(["c1"], properties={"plan": "trial"})
    before = stored(world, "c1")
    events = identify_events(world)
    over = world.client.post(
        "/api/v1/identify",
        json={
            "model": "customer",
            "ids": ["c1"],
            "properties": sized("p", MAX_IDENTIFY_PROPERTIES_BYTES + 1),
        },
        headers=world.writer,
    )
    error = error_of(over, 400, "INVALID_VALIDATION_REQUEST")
    assert "body.properties" in error["details"]
    assert f"{MAX_IDENTIFY_PROPERTIES_BYTES:,}" in error["details"]["body.properties"]
    assert stored(world, "c1") == before
    assert identify_events(world) == events

    at_cap = world.identify(["c1"], properties=sized("p", MAX_IDENTIFY_PROPERTIES_BYTES))
    assert at_cap["status"] == "processed"
    assert len(instance(world, "c1")["properties"]["p"]) > 32_000


def test_merged_properties_are_capped_at_the_byte_and_a_refused_identify_changes_nothing(
    world: World,
) -> None:
    fill_two_thirds(world, "c1")
    before = stored(world, "c1")
    events = identify_events(world)
    fill = filler_to_cap(world, "c1", "c")

    over = world.client.post(
        "/api/v1/identify",
        json={"model": "customer", "ids": ["c1", "c1-alt"], "properties": {"c": fill["c"] + "z"}},
        headers=world.writer,
    )
    error = error_of(over, 400, "INVALID_VALIDATION_REQUEST")
    assert error["param"] == "body.properties"
    assert f"{MAX_INSTANCE_PROPERTIES_BYTES + 1:,} bytes" in error["message"]
    assert stored(world, "c1") == before  # properties, ids and updated_at untouched
    instance(world, "c1-alt", expect=404)
    assert identify_events(world) == events  # not logged either: the client may send it again

    at_cap = world.identify(["c1"], properties=fill)
    assert at_cap["status"] == "processed"
    assert len(orjson.dumps(instance(world, "c1")["properties"])) == MAX_INSTANCE_PROPERTIES_BYTES
    assert identify_events(world) == events + 1

    # At the cap, replacing a value by one no longer keeps the instance there.
    assert world.identify(["c1"], properties={"c": "short"})["status"] == "processed"


def test_in_a_batch_only_the_identify_over_the_cap_is_refused(world: World) -> None:
    fill_two_thirds(world, "c1")
    fill = filler_to_cap(world, "c1", "c")
    answer = world.post(
        "/api/v1/identify",
        [
            {"model": "customer", "ids": ["c1"], "properties": {"c": fill["c"] + "z"}},
            {"model": "customer", "ids": ["c2"], "properties": {"plan": "pro"}},
        ],
    )
    refused, stored = answer["results"]
    assert refused["status"] == "refused" and "over the limit" in refused["reason"]
    assert stored["status"] == "processed"
    assert answer["accepted"] == 1
    assert "c" not in instance(world, "c1")["properties"]
    assert instance(world, "c2")["properties"] == {"plan": "pro"}


def test_ids_per_instance_are_capped(world: World) -> None:
    ids = [f"id-{n}" for n in range(MAX_INSTANCE_IDS)]
    too_many = world.client.post(
        "/api/v1/identify",
        json={"model": "customer", "ids": [*ids, "one-more"]},
        headers=world.writer,
    )
    assert "body.ids" in error_of(too_many, 400, "INVALID_VALIDATION_REQUEST")["details"]
    instance(world, "id-0", expect=404)

    assert world.identify(ids[:60])["status"] == "processed"
    assert world.identify([ids[0], *ids[60:]])["status"] == "processed"  # exactly the cap
    before = stored(world, "id-0")
    assert len(before["ids"]) == MAX_INSTANCE_IDS

    over = world.client.post(
        "/api/v1/identify",
        json={"model": "customer", "ids": ["id-5", "one-more"], "properties": {"plan": "pro"}},
        headers=world.writer,
    )
    error = error_of(over, 400, "INVALID_VALIDATION_REQUEST")
    assert error["param"] == "body.ids"
    assert stored(world, "id-0") == before
    instance(world, "one-more", expect=404)


def test_segment_and_native_identifies_are_capped_too(world: World) -> None:
    """Segment's `/v1/identify` and `/v1/batch` and native `/v0/events` identify `segment.model` (here the
    first model, customer)."""
    fill_two_thirds(world, "u1")
    before = stored(world, "u1")
    fill = filler_to_cap(world, "u1", "c")
    over = {"c": fill["c"] + "z"}

    single = world.client.post("/v1/identify", json={"userId": "u1", "traits": over}, headers=world.writer)
    assert "body.traits" in error_of(single, 400, "INVALID_VALIDATION_REQUEST")["details"]
    native = world.client.post(
        "/v0/events", json={"type": "identify", "user_id": "u1", "properties": over}, headers=world.writer
    )
    assert "body.properties" in error_of(native, 400, "INVALID_VALIDATION_REQUEST")["details"]

    batch = world.post(
        "/v1/batch",
        {
            "batch": [
                {"type": "track", "userId": "u1", "event": "ok"},
                {"type": "identify", "userId": "u1", "traits": over},
                {"type": "identify", "userId": "u2", "traits": {"plan": "pro"}},
            ]
        },
    )
    assert batch["accepted"] == 2
    assert [item["index"] for item in batch["rejected"]] == [1]
    assert "body.batch.1.traits" in batch["rejected"][0]["details"]
    natives = world.post(
        "/v0/events",
        [
            {"type": "identify", "user_id": "u1", "properties": over},
            {"type": "identify", "user_id": "u3", "properties": {"plan": "pro"}},
        ],
    )
    assert [item["index"] for item in natives["rejected"]] == [0]
    assert "body.0.properties" in natives["rejected"][0]["details"]
    after = instance(world, "u1")
    assert after["properties"] == before["properties"]
    assert instance(world, "u2")["properties"]["plan"] == "pro"

    at_cap = world.client.post("/v1/identify", json={"userId": "u1", "traits": fill}, headers=world.writer)
    assert at_cap.status_code == 200, at_cap.text
    assert len(orjson.dumps(instance(world, "u1")["properties"])) == MAX_INSTANCE_PROPERTIES_BYTES


def test_an_instance_with_30000_ids_from_an_older_release_is_still_shown(world: World) -> None:
    """The instance view's event query binds the ids as one array parameter (its SQL does not grow with
    them) and reads at most `MAX_INSTANCE_IDS` of them: 30,000 ids used to exceed ClickHouse's
    max_query_size (500)."""
    world.identify(["legacy"], properties={"plan": "pro"})
    with world.svc.state.read() as connection:
        (row,) = connection.exec_driver_sql("SELECT id FROM instances").all()
    with world.svc.state.write() as connection:
        connection.execute(
            insert(instance_ids),
            [
                {"model": "customer", "id_text": f"legacy-{n:05}", "instance_id": row.id}
                for n in range(30_000)
            ],
        )
    world.post("/v0/events", {"event": "opened", "user_id": "legacy", "properties": {"it's": "a\\b"}})
    world.svc.shipper.flush()  # the timeline reads the event store, which the shipper feeds
    body = instance(world, "legacy-29999")
    assert body["id"] == "legacy"
    assert len(body["ids"]) == MAX_INSTANCE_IDS
    events = [item for item in body["timeline"]["items"] if item["kind"] == "event"]
    assert [item["event"] for item in events if item["event"] == "opened"] == ["opened"]
