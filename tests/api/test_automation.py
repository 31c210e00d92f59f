"""`POST /api/v1/identify`, `/api/v1/events` and `/api/v1/event` over real stores, and automation driven by
the analytics endpoints (`/v0/events`, Segment `/v1/*`)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from funnels.services import Services
from tests.automation.conftest import Config, World, default_config, error_of, satisfied, scheduled
from tests.automation.conftest import open_world as open_world  # the fixture, used by `world` below
from tests.conftest import bearer


def api_config() -> Config:
    config = default_config()
    config["segment"] = {"model": "organization"}  # not the first model: the default would be customer
    config["funnels"].append(
        {
            "id": "org_welcome",
            "forModels": "organization",
            "steps": {
                "event": "$identify",
                "actions": {"type": "webhook", "args": {"url": "http://127.0.0.1:9/"}},
            },
        }
    )
    return config


@pytest.fixture
def world(open_world: Callable[[Config], World]) -> World:
    return open_world(api_config())


def basic(key: str) -> dict[str, str]:
    """HTTP Basic with the key as username, as Segment's libraries send it."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def stored_count(world: World) -> int:
    world.svc.shipper.flush()
    return world.svc.events.count()


def test_identify_takes_one_object_or_an_array(world: World) -> None:
    one = world.post("/api/v1/identify", {"model": "customer", "ids": ["c1"], "displayName": "Ada"})
    assert (one["success"], one["accepted"], one["duplicates"]) == (True, 1, 0)
    assert [result["status"] for result in one["results"]] == ["processed"]
    assert one["results"][0]["instance"] == {"model": "customer", "id": "c1"}
    many = world.post(
        "/api/v1/identify",
        [{"model": "customer", "ids": ["c2"]}, {"model": "organization", "ids": ["acme"]}],
    )
    assert many["accepted"] == 2
    assert [result["instance"] for result in many["results"]] == [
        {"model": "customer", "id": "c2"},
        {"model": "organization", "id": "acme"},
    ]
    assert world.get("/v0/models/organization/acme")["id"] == "acme"


def test_events_take_name_or_event_on_both_paths(world: World) -> None:
    world.identify(["c1"])
    named = world.post("/api/v1/events", {"name": "sign_up", "ids": ["c1"]})
    assert satisfied(named["results"][0]) == [("onboarding", 1)]
    aliased = world.post("/api/v1/event", {"event": "development_api_call", "ids": ["c1"]})
    assert satisfied(aliased["results"][0]) == [("onboarding", 2)]
    batch = world.post(
        "/api/v1/event", [{"event": "production_api_call", "ids": ["c1"]}, {"name": "visit", "ids": ["c1"]}]
    )
    assert [satisfied(result) for result in batch["results"]] == [[("onboarding", 3)], [("twice", 1)]]
    assert [result["event"] for result in batch["results"]] == ["production_api_call", "visit"]


def test_each_event_gets_its_own_result(world: World) -> None:
    world.identify(["c1"])
    before = stored_count(world)
    answer = world.post(
        "/api/v1/events",
        [
            {"name": "sign_up", "ids": ["c1"], "properties": {"plan": "pro"}},
            {"name": "sign_up", "ids": ["ghost", 404]},
            {"name": "noise", "ids": ["c1"]},
        ],
    )
    processed, unmatched, nothing = answer["results"]
    assert processed["status"] == "processed"
    assert satisfied(processed) == [("onboarding", 1)]
    assert scheduled(processed) == [("onboarding", 1, 1), ("onboarding", 1, 2)]
    assert all(isinstance(item["id"], int) and item["type"] == "webhook" for item in processed["scheduled"])
    assert unmatched["status"] == "unmatched"
    assert "ghost" in unmatched["reason"] and "404" in unmatched["reason"]
    assert unmatched["satisfied"] == [] and unmatched["scheduled"] == []
    assert nothing["status"] == "processed" and nothing["satisfied"] == [] and nothing["reason"]
    assert answer["accepted"] == 3
    # Every event is kept for analytics, the unmatched one too (keyed by its first id).
    assert stored_count(world) == before + 3
    assert sorted(row["user_key"] for row in world.stored_events(where="event = 'sign_up'")) == [
        "c1",
        "ghost",
    ]
    world.get("/v0/models/customer/ghost", expect=404)  # an event does not create an instance


def test_a_repeated_message_id_is_a_duplicate_and_schedules_nothing(world: World) -> None:
    world.identify(["c1"])
    first = world.post("/api/v1/events", {"name": "visit", "ids": ["c1"], "messageId": "m-1"})
    assert satisfied(first["results"][0]) == [("twice", 1)]
    # Without the dedup, the same event again would satisfy step 2 of `twice` ([visit, visit, buy]).
    again = world.post("/api/v1/events", {"name": "visit", "ids": ["c1"], "messageId": "m-1"})
    assert (again["accepted"], again["duplicates"]) == (0, 1)
    (result,) = again["results"]
    assert result["status"] == "duplicate"
    assert result["id"] == "m-1"
    assert result["satisfied"] == [] and result["scheduled"] == []
    assert [job["step"] for job in world.jobs(funnel="twice")] == [1]
    snake = world.post("/api/v1/events", {"name": "visit", "ids": ["c1"], "message_id": "m-1"})
    assert snake["results"][0]["status"] == "duplicate"
    assert world.stored_events(where="event = 'visit'") == [{"event": "visit", "user_key": "c1"}]


# (path, body, a details key it must have, a word its message must contain)
INVALID: list[tuple[str, Any, str, str]] = [
    ("/api/v1/events", [{"name": "sign_up"}], "body.0.ids", ""),
    ("/api/v1/events", [{"name": "sign_up", "ids": ["c1"]}, {"ids": ["c1"]}], "body.1.name", ""),
    ("/api/v1/events", {"name": "sign_up", "ids": ["c1"], "model": "robot"}, "body.model", "customer"),
    ("/api/v1/identify", {"model": "robot", "ids": ["c1"]}, "body.model", "organization"),
    ("/api/v1/identify", {"ids": ["c1"]}, "body.model", ""),
    ("/api/v1/events", {"ids": ["c1"]}, "body.name", ""),
    ("/api/v1/events", {"name": "", "ids": ["c1"]}, "body.name", ""),
    ("/api/v1/identify", {"model": "customer", "ids": ["c1"], "childIds": ["x"]}, "body", "childModel"),
    ("/api/v1/identify", {"model": "customer", "ids": ["c1"], "parentIds": ["x"]}, "body", "parentModel"),
    (
        "/api/v1/identify",
        {"model": "customer", "ids": ["c1"], "childIds": ["x"], "childModel": "robot"},
        "body.childModel",
        "robot",
    ),
    ("/api/v1/identify", {"model": "customer", "ids": []}, "body.ids", ""),
    ("/api/v1/events", {"name": "sign_up", "ids": [""]}, "body.ids", ""),
    ("/api/v1/events", {"name": 5, "ids": ["c1"]}, "body.name", ""),
    ("/api/v1/events", {"name": "sign_up", "ids": {"a": 1}}, "body.ids", ""),
    ("/api/v1/events", {"name": "sign_up", "ids": [True]}, "body.ids", ""),
    ("/api/v1/events", {"name": "sign_up", "ids": ["c1"], "properties": "plan"}, "body.properties", ""),
    ("/api/v1/events", {"name": "sign_up", "ids": ["c1"], "timestamp": "yesterday"}, "body.timestamp", ""),
    ("/api/v1/identify", {"model": "customer", "ids": ["c1"], "displayName": 7}, "body.displayName", ""),
    ("/api/v1/events", [{"name": "sign_up", "ids": ["c1"]}, 5], "body.1", ""),
    ("/api/v1/events", [], "body", "1000"),
    ("/api/v1/events", [{"name": "sign_up", "ids": ["c1"]}] * 1001, "body", "1000"),
]


def test_invalid_bodies_are_rejected_whole_with_details_and_store_nothing(world: World) -> None:
    world.identify(["c1"])
    stored = stored_count(world)
    for path, body, key, word in INVALID:
        response = world.client.post(path, json=body, headers=world.writer)
        error = error_of(response, 400, "INVALID_VALIDATION_REQUEST")
        assert key in error["details"], (path, body if not isinstance(body, list) else body[:2], error)
        assert word in error["details"][key], (key, error["details"])
    assert stored_count(world) == stored
    assert world.jobs(funnel="onboarding") == []
    world.get("/v0/models/customer/x", expect=404)


def test_a_body_that_is_not_an_object_or_array_is_a_bad_request(world: World) -> None:
    for raw in ('"hello"', "42", "null", "{not json"):
        response = world.client.post(
            "/api/v1/events", content=raw, headers={**world.writer, "Content-Type": "application/json"}
        )
        error_of(response, 400, "BAD_REQUEST")
    assert stored_count(world) == 0


def test_auth_needs_an_events_write_key(world: World) -> None:
    body = {"model": "customer", "ids": ["c1"]}
    for path in ("/api/v1/identify", "/api/v1/events", "/api/v1/event"):
        payload = body if path.endswith("identify") else {"name": "sign_up", "ids": ["c1"]}
        error_of(world.client.post(path, json=payload), 401, "UNAUTHORIZED")
        error_of(world.client.post(path, json=payload, headers=bearer("fk_nope_nope")), 401, "UNAUTHORIZED")
        forbidden = world.client.post(path, json=payload, headers=bearer(world.keys["query:read"]))
        assert "events:write" in error_of(forbidden, 403, "FORBIDDEN")["message"]
    assert stored_count(world) == 0
    assert world.client.post("/api/v1/identify", json=body, headers=world.writer).status_code == 200


def test_without_a_config_identify_says_no_config_is_loaded(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    response = client.post(
        "/api/v1/identify", json={"model": "customer", "ids": ["c1"]}, headers=bearer(keys["events:write"])
    )
    error = error_of(response, 400, "INVALID_VALIDATION_REQUEST")
    assert "no config is loaded" in error["details"]["body.model"]
    event = client.post(
        "/api/v1/events", json={"name": "sign_up", "ids": ["c1"]}, headers=bearer(keys["events:write"])
    )
    assert event.status_code == 200, event.text
    (result,) = event.json()["results"]
    assert result["status"] == "off" and "config" in result["reason"]


def test_v0_events_for_a_known_instance_drive_its_funnel(world: World) -> None:
    world.identify(["c1", "ada@example.com"])
    answer = world.post(
        "/v0/events",
        [
            {"event": "sign_up", "user_id": "ada@example.com"},
            {"event": "sign_up", "user_id": "stranger"},
        ],
    )
    assert answer["accepted"] == 2
    jobs = world.jobs(funnel="onboarding")
    assert [(job["instance"], job["step"], job["action"]) for job in jobs] == [
        ({"model": "customer", "id": "c1"}, 1, 1),
        ({"model": "customer", "id": "c1"}, 1, 2),
    ]
    world.get("/v0/models/customer/stranger", expect=404)
    # The user keys as sent: analytics is unchanged by automation.
    assert sorted(row["user_key"] for row in world.stored_events(where="event = 'sign_up'")) == [
        "ada@example.com",
        "stranger",
    ]


def test_segment_track_for_a_known_instance_drives_its_funnel(world: World) -> None:
    world.identify([42, "ada@example.com"])
    response = world.client.post(
        "/v1/track", json={"userId": "42", "event": "sign_up"}, headers=basic(world.keys["events:write"])
    )
    assert response.status_code == 200, response.text
    assert [(job["instance"]["id"], job["step"]) for job in world.jobs(funnel="onboarding")] == [
        ("42", 1),
        ("42", 1),
    ]
    batch = world.client.post(
        "/v1/batch",
        json={"batch": [{"type": "track", "userId": "ada@example.com", "event": "development_api_call"}]},
        headers=basic(world.keys["events:write"]),
    )
    assert batch.status_code == 200, batch.text
    progress = world.get("/v0/models/customer/42")["funnels"]
    assert next(f for f in progress if f["id"] == "onboarding")["level"] == 2


def test_segment_identify_creates_an_instance_of_the_segment_model(world: World) -> None:
    response = world.client.post(
        "/v1/identify",
        json={"userId": "org-7", "traits": {"name": "Acme", "plan": "enterprise", "seats": 40}},
        headers=basic(world.keys["events:write"]),
    )
    assert response.status_code == 200, response.text
    body = world.get("/v0/models/organization/org-7")
    assert body["properties"] == {"name": "Acme", "plan": "enterprise", "seats": 40}
    assert body["displayName"] == "Acme"
    world.get("/v0/models/customer/org-7", expect=404)
    # The identify fired `$identify` for it.
    assert [(job["funnel"], job["instance"]["id"]) for job in world.jobs(model="organization")] == [
        ("org_welcome", "org-7")
    ]
    world.client.post(
        "/v1/identify",
        json={"userId": "org-7", "traits": {"plan": "growth"}},
        headers=basic(world.keys["events:write"]),
    )
    assert world.get("/v0/models/organization/org-7")["properties"] == {
        "name": "Acme",
        "plan": "growth",
        "seats": 40,
    }


def test_api_v1_events_carry_the_primary_id_as_user_key(world: World) -> None:
    world.identify(["p1", "s1"])
    world.event("sign_up", ["s1"])
    world.post("/api/v1/events", {"name": "visit", "ids": ["unknown", "s1"]})
    assert world.stored_events("user_key", where="event IN ('sign_up', 'visit')") == [
        {"user_key": "p1"},
        {"user_key": "p1"},
    ]
