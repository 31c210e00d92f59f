"""Automation's admin endpoints over real stores: the delivery log, one instance, the config and its reload."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from funnels.services import Services
from tests.automation.conftest import DEAD_URL, Config, World, default_config, error_of, satisfied
from tests.automation.conftest import open_world as open_world  # the fixture, used by `world` below
from tests.conftest import bearer

MINUTE_MS = 60_000


def admin_config() -> Config:
    config = default_config()
    config["funnels"].append(
        {
            "id": "org_welcome",
            "forModels": "organization",
            "steps": [{"event": "$identify", "actions": [{"type": "webhook", "args": {"url": DEAD_URL}}]}],
        }
    )
    return config


@pytest.fixture
def world(open_world: Callable[[Config], World]) -> World:
    return open_world(admin_config())


def populate(world: World) -> None:
    """c1 (two ids): sign_up, visit, development_api_call; c2: sign_up; organization acme: identified.
    The worker runs once: immediate jobs fail (nothing listens on the URL), c2's reminder stays scheduled,
    c1's is cancelled."""
    world.identify(["c1", "ada@example.com"], displayName="Ada")
    world.identify(["c2"])
    world.identify(["acme"], model="organization")
    world.clock.advance(MINUTE_MS)
    world.event("sign_up", ["c1"])
    world.event("sign_up", ["c2"])
    world.event("visit", ["ada@example.com"])
    world.clock.advance(MINUTE_MS)
    world.event("development_api_call", ["c1"])
    world.run()


def summary(jobs: list[dict[str, Any]]) -> list[tuple[str, str, int, int, str]]:
    return sorted(
        (job["instance"]["id"], job["funnel"], job["step"], job["action"], job["status"]) for job in jobs
    )


def test_the_delivery_log_filters_by_status_funnel_model_and_any_id(world: World) -> None:
    populate(world)
    everything = world.jobs()
    assert summary(everything) == [
        ("acme", "org_welcome", 1, 1, "failed"),
        ("c1", "onboarding", 1, 1, "failed"),
        ("c1", "onboarding", 1, 2, "cancelled"),
        ("c1", "onboarding", 2, 1, "failed"),
        ("c1", "twice", 1, 1, "failed"),
        ("c2", "onboarding", 1, 1, "failed"),
        ("c2", "onboarding", 1, 2, "scheduled"),
    ]
    assert summary(world.jobs(status="scheduled")) == [("c2", "onboarding", 1, 2, "scheduled")]
    assert summary(world.jobs(status="cancelled")) == [("c1", "onboarding", 1, 2, "cancelled")]
    assert len(world.jobs(status="failed")) == 5
    assert world.jobs(status="sent") == []
    assert summary(world.jobs(funnel="twice")) == [("c1", "twice", 1, 1, "failed")]
    assert summary(world.jobs(model="organization")) == [("acme", "org_welcome", 1, 1, "failed")]
    by_secondary = world.jobs(id="ada@example.com")
    assert by_secondary == world.jobs(id="c1")
    assert {job["instance"]["id"] for job in by_secondary} == {"c1"} and len(by_secondary) == 4
    assert world.jobs(id="c1", model="organization") == []
    assert world.jobs(id="nobody") == []
    assert summary(world.jobs(funnel="onboarding", id="c2", status="failed")) == [
        ("c2", "onboarding", 1, 1, "failed")
    ]
    failed = world.jobs(status="failed")[0]
    assert (
        failed["attempts"] == 1 and failed["last_error"] and failed["attempt_log"][0]["outcome"] == "failed"
    )
    assert failed["next_attempt_at"] is not None


def test_the_delivery_log_is_paginated_newest_first(world: World) -> None:
    populate(world)
    full = world.get("/v0/actions", size=200)
    assert (full["total"], full["page"], full["size"], full["has_more"]) == (7, 1, 200, False)
    ids = [job["id"] for job in full["data"]]
    assert ids == sorted(ids, reverse=True)
    pages = [world.get("/v0/actions", page=page, size=3) for page in (1, 2, 3)]
    assert [len(page["data"]) for page in pages] == [3, 3, 1]
    assert [page["has_more"] for page in pages] == [True, True, False]
    assert {page["total"] for page in pages} == {7}
    assert [job["id"] for page in pages for job in page["data"]] == ids
    past = world.get("/v0/actions", page=4, size=3)
    assert (past["data"], past["has_more"], past["total"]) == ([], False, 7)
    filtered = world.get("/v0/actions", status="failed", size=2, page=3)
    assert (len(filtered["data"]), filtered["total"], filtered["has_more"]) == (1, 5, False)


def test_invalid_list_parameters_are_400_in_the_envelope(world: World) -> None:
    response = world.client.get("/v0/actions", params={"status": "lost"}, headers=world.admin)
    error = error_of(response, 400, "INVALID_VALIDATION_REQUEST")
    assert "scheduled" in error["details"]["status"]
    for params in ({"page": 0}, {"size": 0}, {"size": 201}, {"page": "x"}):
        error_of(
            world.client.get("/v0/actions", params=params, headers=world.admin),
            400,
            "INVALID_VALIDATION_REQUEST",
        )


MAX_INT64 = 2**63 - 1
OUT_OF_RANGE = [
    ("GET", f"/v0/actions/{MAX_INT64 + 1}", {}, "path.job_id"),
    ("POST", f"/v0/actions/{MAX_INT64 + 1}/retry", {}, "path.job_id"),
    ("GET", f"/v0/actions/{10**30}", {}, "path.job_id"),
    ("GET", "/v0/actions", {"page": "1e20"}, "query.page"),
    ("GET", "/v0/actions", {"page": MAX_INT64}, "query.page"),
    ("GET", "/v0/actions", {"page": 10**20}, "query.page"),
    ("GET", "/v0/actions", {"size": 10**30}, "query.size"),
    ("GET", "/v0/models/customer/c1", {"limit": 10**30}, "query.limit"),
    ("GET", "/v0/models/customer", {"limit": 10**30}, "query.limit"),
    ("GET", "/v0/models/customer", {"cursor": str(10**20)}, "cursor"),
    ("GET", "/v0/models/customer", {"cursor": "0"}, "cursor"),
    ("GET", "/v0/models/customer", {"cursor": "-1"}, "cursor"),
    ("GET", "/v0/models/customer", {"cursor": "١٢"}, "cursor"),  # Arabic-Indic digits: isdigit(), not ours
    ("GET", "/v0/models/customer/c1", {"before": "1:action:x"}, "before"),
    ("GET", "/v0/models/customer/c1", {"before": f"{10**20}:event:n1"}, "before"),
    ("GET", "/v0/models/customer/c1", {"before": f"{10**20}:action:1"}, "before"),
    ("GET", "/v0/models/customer/c1", {"before": f"1:action:{10**20}"}, "before"),
]


@pytest.mark.parametrize(("method", "path", "params", "param"), OUT_OF_RANGE)
def test_out_of_range_integers_are_400_naming_the_parameter(
    world: World, method: str, path: str, params: dict[str, Any], param: str
) -> None:
    world.identify(["c1"])
    response = world.client.request(method, path, params=params, headers=world.admin)
    assert error_of(response, 400, "INVALID_VALIDATION_REQUEST")["param"] == param


def test_the_largest_integers_in_range_are_answered(world: World) -> None:
    error_of(world.client.get(f"/v0/actions/{MAX_INT64}", headers=world.admin), 404, "NOT_FOUND")
    response = world.client.post(f"/v0/actions/{MAX_INT64}/retry", headers=world.admin)
    error_of(response, 404, "NOT_FOUND")
    last_page = world.get("/v0/actions", page=MAX_INT64 // 200, size=200)
    assert (last_page["data"], last_page["page"], last_page["has_more"]) == ([], MAX_INT64 // 200, False)


def test_the_integer_bounds_are_in_the_openapi_document(world: World) -> None:
    paths = world.client.get("/openapi.json").json()["paths"]

    def schema(path: str, method: str, name: str) -> dict[str, Any]:
        (found,) = [item for item in paths[path][method]["parameters"] if item["name"] == name]
        return found["schema"]  # type: ignore[no-any-return]

    for path, method in (("/v0/actions/{job_id}", "get"), ("/v0/actions/{job_id}/retry", "post")):
        assert (schema(path, method, "job_id")["minimum"], schema(path, method, "job_id")["maximum"]) == (
            1,
            MAX_INT64,
        )
    assert schema("/v0/actions", "get", "page")["maximum"] == MAX_INT64 // 200
    assert schema("/v0/actions", "get", "size")["maximum"] == 200
    assert schema("/v0/models/{model}/{instance_id}", "get", "limit")["maximum"] == 200


ADMIN_CALLS = [
    ("GET", "/v0/actions"),
    ("GET", "/v0/actions/1"),
    ("POST", "/v0/actions/1/retry"),
    ("GET", "/v0/models/customer/c1"),
    ("GET", "/v0/models/customer"),
    ("GET", "/v0/config"),
    ("POST", "/v0/config/reload"),
]


def test_every_admin_endpoint_needs_the_admin_scope(world: World) -> None:
    world.identify(["c1"])
    world.event("sign_up", ["c1"])
    before = world.config_path.read_text()
    for method, path in ADMIN_CALLS:
        error_of(world.client.request(method, path), 401, "UNAUTHORIZED")
        for scope in ("events:write", "query:read"):
            response = world.client.request(method, path, headers=bearer(world.keys[scope]))
            assert "admin" in error_of(response, 403, "FORBIDDEN")["message"], (method, path, scope)
        assert world.client.request(method, path, headers=world.admin).status_code == (
            409 if path.endswith("retry") else 200
        ), (method, path)
    assert world.config_path.read_text() == before


def test_one_instance_with_ids_properties_and_progress(world: World) -> None:
    populate(world)
    world.identify(["c1"], properties={"plan": "pro"})
    body = world.get("/v0/models/customer/ada@example.com")
    assert (body["model"], body["id"], body["ids"]) == ("customer", "c1", ["c1", "ada@example.com"])
    assert body["displayName"] == "Ada"
    assert body["properties"] == {"plan": "pro"}
    progress = {funnel["id"]: funnel for funnel in body["funnels"]}
    assert set(progress) == {"onboarding", "twice"}  # the customer model's funnels only
    onboarding = progress["onboarding"]
    assert (onboarding["level"], onboarding["completed"]) == (2, False)
    assert [step["event"] for step in onboarding["steps"]] == [
        "sign_up",
        "development_api_call",
        "production_api_call",
    ]
    assert [step["satisfied_at"] for step in onboarding["steps"]] == [
        "2026-04-01T00:01:00.000Z",
        "2026-04-01T00:02:00.000Z",
        None,
    ]
    assert all(step["event_id"] for step in onboarding["steps"][:2])
    assert [step["satisfied_at"] is not None for step in progress["twice"]["steps"]] == [True, False, False]


def test_the_timeline_has_events_and_actions_newest_first(world: World) -> None:
    populate(world)
    world.svc.shipper.flush()
    timeline = world.get("/v0/models/customer/c1", limit=200)["timeline"]
    items = timeline["items"]
    assert timeline["next_before"] is None
    events = [item["event"] for item in items if item["kind"] == "event"]
    assert sorted(events) == ["development_api_call", "identify", "sign_up", "visit"]
    actions = [(item["funnel"], item["step"], item["action"]) for item in items if item["kind"] == "action"]
    assert sorted(actions) == [
        ("onboarding", 1, 1),
        ("onboarding", 1, 2),
        ("onboarding", 2, 1),
        ("twice", 1, 1),
    ]
    times = [item["at"] for item in items]
    assert times == sorted(times, reverse=True)
    assert items[0]["at"] == "2026-04-01T00:02:00.000Z"


def walk_timeline(world: World, limit: int) -> list[dict[str, Any]]:
    """Every item of c1's timeline, page by page (`limit`, then `before` = the previous `next_before`)."""
    walked: list[dict[str, Any]] = []
    before: int | None = None
    for _ in range(50):
        params: dict[str, Any] = {"limit": limit} if before is None else {"limit": limit, "before": before}
        page = world.get("/v0/models/customer/c1", **params)["timeline"]
        assert len(page["items"]) <= limit
        walked += page["items"]
        before = page["next_before"]
        if before is None:
            return walked
    raise AssertionError("the timeline never ended")


def item_key(item: dict[str, Any]) -> tuple[str, str]:
    return (item["kind"], str(item["id"]))


def test_timeline_pages_by_limit_and_next_before(world: World) -> None:
    world.identify(["c1"])
    for minute in (1, 2, 3, 4):  # events at distinct times, none a step: no actions
        world.event(
            "noise", ["c1"], timestamp=world.clock.now_ms() + minute * MINUTE_MS, messageId=f"n{minute}"
        )
    world.svc.shipper.flush()
    first = world.get("/v0/models/customer/c1", limit=2)["timeline"]
    assert [item["id"] for item in first["items"]] == ["n4", "n3"]
    assert first["next_before"] == f"{world.clock.now_ms() + 3 * MINUTE_MS}:event:n3"  # the last item shown
    second = world.get("/v0/models/customer/c1", limit=2, before=first["next_before"])["timeline"]
    assert [item["id"] for item in second["items"]] == ["n2", "n1"]
    last = world.get("/v0/models/customer/c1", limit=2, before=second["next_before"])["timeline"]
    assert [item["event"] for item in last["items"]] == ["identify"]
    assert last["next_before"] is None
    assert len(walk_timeline(world, 3)) == 5
    at_time = world.get("/v0/models/customer/c1", before=str(world.clock.now_ms() + 3 * MINUTE_MS))[
        "timeline"
    ]
    assert [item["id"] for item in at_time["items"]][:2] == ["n2", "n1"]  # a plain time: strictly before it


def test_timeline_pages_cover_every_item_once_when_times_tie(world: World) -> None:
    """An event and the actions it schedules share a millisecond; a page boundary among them must not lose
    any of them."""
    populate(world)
    world.svc.shipper.flush()
    full = world.get("/v0/models/customer/c1", limit=200)["timeline"]["items"]
    assert len(full) == 8
    for limit in (1, 2, 3):
        walked = walk_timeline(world, limit)
        assert sorted(map(item_key, walked)) == sorted(map(item_key, full)), f"limit={limit}: items lost"


def test_an_instance_is_found_by_an_anonymous_id_linked_to_it(world: World) -> None:
    """Identity stitching on the People page: a visitor browses anonymously, then the app identifies them
    (analytics.js sends the anonymous id along); the anonymous id finds the instance, and the visitor's
    anonymous events are in its timeline."""
    world.identify(["c1"])
    world.identify(["c2"])
    batch = [
        {"type": "page", "anonymousId": "anon-1", "name": "Pricing", "messageId": "p1"},
        {"type": "identify", "userId": "c1", "anonymousId": "anon-1", "messageId": "i1"},
        {"type": "alias", "userId": "c2", "previousId": "old-c2", "messageId": "a1"},
        {"type": "page", "anonymousId": "anon-9", "name": "Pricing", "messageId": "p9"},
    ]
    assert world.client.post("/v1/batch", json={"batch": batch}, headers=world.writer).status_code == 200
    world.svc.shipper.flush()
    body = world.get("/v0/models/customer/anon-1")
    assert (body["id"], body["ids"], body["linked_ids"]) == ("c1", ["c1"], ["anon-1"])
    assert {item["id"] for item in body["timeline"]["items"]} >= {"p1", "i1"}
    assert world.get("/v0/models/customer/c1")["linked_ids"] == ["anon-1"]
    aliased = world.get("/v0/models/customer/old-c2")
    assert (aliased["id"], aliased["linked_ids"]) == ("c2", ["old-c2"])
    error_of(world.client.get("/v0/models/customer/anon-9", headers=world.admin), 404, "NOT_FOUND")
    error_of(world.client.get("/v0/models/organization/anon-1", headers=world.admin), 404, "NOT_FOUND")


def test_any_user_key_is_a_person_with_its_keys_instances_and_events(world: World) -> None:
    """/v0/users/{key}: an anonymous visitor who never identified is a person of their own; an anonymous
    id identified as c1 (and an id aliased to an alias of c1: two links) is c1's, with every key and the
    instance; the timeline pages through all their events, newest first."""
    world.identify(["c1"])
    batch = [
        {
            "type": "page",
            "anonymousId": "anon-1",
            "name": "Pricing",
            "messageId": "p1",
            "timestamp": "2026-01-01T00:00:01Z",
        },
        {
            "type": "identify",
            "userId": "c1",
            "anonymousId": "anon-1",
            "messageId": "i1",
            "timestamp": "2026-01-01T00:00:02Z",
        },
        {
            "type": "alias",
            "userId": "c1",
            "previousId": "old-1",
            "messageId": "a1",
            "timestamp": "2026-01-01T00:00:03Z",
        },
        {
            "type": "alias",
            "userId": "old-1",
            "previousId": "older-1",
            "messageId": "a2",
            "timestamp": "2026-01-01T00:00:04Z",
        },
        {
            "type": "track",
            "userId": "older-1",
            "event": "visit",
            "messageId": "t1",
            "timestamp": "2026-01-01T00:00:05Z",
        },
        {
            "type": "page",
            "anonymousId": "anon-9",
            "name": "Pricing",
            "messageId": "p9",
            "timestamp": "2026-01-01T00:00:06Z",
        },
    ]
    assert world.client.post("/v1/batch", json={"batch": batch}, headers=world.writer).status_code == 200
    world.svc.shipper.flush()

    alone = world.get("/v0/users/anon-9")
    assert (alone["person"], alone["keys"], alone["instances"]) == ("anon-9", ["anon-9"], [])
    assert [item["id"] for item in alone["timeline"]["items"]] == ["p9"]

    for key in ("anon-1", "c1", "old-1", "older-1"):
        body = world.get(f"/v0/users/{key}")
        assert body["user_key"] == key and body["person"] == "c1"
        assert body["keys"][0] == "c1" and sorted(body["keys"]) == ["anon-1", "c1", "old-1", "older-1"]
        assert body["instances"] == [{"model": "customer", "id": "c1"}]
        # The automation identify (now, in April: newest), then the batch's events of all four keys.
        (identify, *items) = body["timeline"]["items"]
        assert identify["type"] == "identify" and identify["at"].startswith("2026-04-01")
        assert [item["id"] for item in items] == ["t1", "a2", "a1", "i1", "p1"]

    seen, before = [], None
    while True:
        page = world.get("/v0/users/anon-1", limit=2, **({"before": before} if before else {}))
        seen += [item["id"] for item in page["timeline"]["items"]]
        before = page["timeline"]["next_before"]
        if before is None:
            break
    assert seen[1:] == ["t1", "a2", "a1", "i1", "p1"] and len(seen) == 6

    error_of(world.client.get("/v0/users/nobody", headers=world.admin), 404, "NOT_FOUND")
    bad = error_of(
        world.client.get("/v0/users/c1", params={"before": "yesterday"}, headers=world.admin),
        400,
        "INVALID_VALIDATION_REQUEST",
    )
    assert bad["param"] == "before"
    assert world.client.get("/v0/users/c1", headers=bearer(world.keys["query:read"])).status_code == 403


def test_an_unknown_instance_is_404(world: World) -> None:
    world.identify(["c1"])
    error_of(world.client.get("/v0/models/customer/nobody", headers=world.admin), 404, "NOT_FOUND")
    error_of(world.client.get("/v0/models/organization/c1", headers=world.admin), 404, "NOT_FOUND")
    error_of(world.client.get("/v0/models/robot/c1", headers=world.admin), 404, "NOT_FOUND")
    error_of(world.client.get("/v0/actions/12345", headers=world.admin), 404, "NOT_FOUND")


def test_config_shows_what_is_loaded(world: World) -> None:
    body = world.get("/v0/config")
    assert body["path"] == str(world.config_path)
    assert body["valid"] is True and body["errors"] == []
    assert body["loaded_at"] == "2026-04-01T00:00:00.000Z"
    assert body["models"] == ["customer", "organization"]
    funnels = {funnel["id"]: funnel for funnel in body["funnels"]}
    assert list(funnels) == ["onboarding", "twice", "org_welcome"]
    assert funnels["onboarding"]["forModels"] == ["customer"]
    reminder = funnels["onboarding"]["steps"][0]["actions"][1]
    assert reminder == {"type": "webhook", "delay_seconds": 3 * 86_400, "unless": ["development_api_call"]}


def test_reload_puts_a_new_funnel_to_use(world: World) -> None:
    world.identify(["c1"])
    assert world.event("upgrade", ["c1"])["satisfied"] == []
    config = admin_config()
    config["funnels"].append(
        {
            "id": "upsell",
            "forModels": "customer",
            "steps": [{"event": "upgrade", "actions": [{"type": "webhook", "args": {"url": DEAD_URL}}]}],
        }
    )
    world.write_config(config)
    world.clock.advance(MINUTE_MS)
    response = world.client.post("/v0/config/reload", headers=world.admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [funnel["id"] for funnel in body["funnels"]] == ["onboarding", "twice", "org_welcome", "upsell"]
    assert body["loaded_at"] == "2026-04-01T00:01:00.000Z" and body["valid"] is True
    upgraded = world.event("upgrade", ["c1"])
    assert satisfied(upgraded) == [("upsell", 1)]
    assert [item["funnel"] for item in upgraded["scheduled"]] == ["upsell"]
    assert [job["funnel"] for job in world.jobs(funnel="upsell")] == ["upsell"]


def test_reload_of_an_invalid_file_keeps_the_old_config(world: World) -> None:
    world.identify(["c1"])
    config = admin_config()
    config["funnels"].append(
        {
            "id": "broken",
            "forModels": ["customer", "robot"],
            "steps": [
                {
                    "event": "upgrade",
                    "actions": [{"type": "webhook", "delay": "soon", "args": {"url": DEAD_URL}}],
                }
            ],
        }
    )
    world.write_config(config)
    response = world.client.post("/v0/config/reload", headers=world.admin)
    error = error_of(response, 400, "INVALID_VALIDATION_REQUEST")
    assert set(error["details"]) == {"funnels[3].forModels[1]", "funnels[3].steps[0].actions[0].delay"}
    assert "robot" in error["details"]["funnels[3].forModels[1]"]
    assert "previous config" in error["message"]

    status = world.get("/v0/config")
    assert [funnel["id"] for funnel in status["funnels"]] == ["onboarding", "twice", "org_welcome"]
    assert status["valid"] is False and len(status["errors"]) == 2
    assert world.event("upgrade", ["c1"])["satisfied"] == []  # the broken file's funnel is not in use
    assert satisfied(world.event("sign_up", ["c1"])) == [("onboarding", 1)]  # the old one still is

    world.config_path.write_text("{not json")
    unreadable = error_of(
        world.client.post("/v0/config/reload", headers=world.admin), 400, "INVALID_VALIDATION_REQUEST"
    )
    assert list(unreadable["details"]) == [str(world.config_path)]
    assert [funnel["id"] for funnel in world.get("/v0/config")["funnels"]] == [
        "onboarding",
        "twice",
        "org_welcome",
    ]

    world.write_config(admin_config())  # fixed: a good reload clears the errors
    assert world.client.post("/v0/config/reload", headers=world.admin).status_code == 200
    assert world.get("/v0/config")["valid"] is True


def test_reload_without_a_config_is_409(client: TestClient, keys: dict[str, str], services: Services) -> None:
    error = error_of(client.post("/v0/config/reload", headers=bearer(keys["admin"])), 409, "CONFLICT")
    assert "config" in error["message"]
    body = client.get("/v0/config", headers=bearer(keys["admin"])).json()
    assert (body["path"], body["funnels"], body["models"]) == (None, [], [])
    assert body["valid"] is True


def test_a_models_instances_newest_first_page_by_page(world: World) -> None:
    for n in range(7):
        world.identify([f"c{n}", f"person{n}@example.com"], displayName=f"Person {n}")
    world.identify(["acme"], model="organization")
    first = world.get("/v0/models/customer", limit=3)
    assert [item["id"] for item in first["data"]] == ["c6", "c5", "c4"]
    item = first["data"][0]
    assert (item["model"], item["ids"], item["id_count"], item["displayName"]) == (
        "customer",
        ["c6", "person6@example.com"],
        2,
        "Person 6",
    )
    assert item["created_at"] and item["updated_at"]
    second = world.get("/v0/models/customer", limit=3, cursor=first["next_cursor"])
    third = world.get("/v0/models/customer", limit=3, cursor=second["next_cursor"])
    assert [item["id"] for item in second["data"] + third["data"]] == ["c3", "c2", "c1", "c0"]
    assert third["next_cursor"] is None
    assert [item["id"] for item in world.get("/v0/models/organization")["data"]] == ["acme"]
    assert world.get("/v0/models/nobody") == {"data": [], "next_cursor": None}


def test_a_models_instances_searched_by_any_id_or_the_name(world: World) -> None:
    world.identify(["c1", "ada@example.com"], displayName="Ada Lovelace")
    world.identify(["c2", "grace@example.com"], displayName="Grace Hopper")
    world.identify(["c3", "100%_sure@example.com"])

    def found(q: str, **params: Any) -> list[str]:
        return [item["id"] for item in world.get("/v0/models/customer", q=q, **params)["data"]]

    assert found("LOVELACE") == ["c1"]  # the name, any case
    assert found("grace@") == ["c2"]  # an id that is not the primary one
    assert found("example.com") == ["c3", "c2", "c1"]
    assert found("%") == ["c3"]  # LIKE's wildcards are plain characters
    assert found("_") == ["c3"]
    assert found("nobody") == []
    page = world.get("/v0/models/customer", q="example", limit=2)
    assert [item["id"] for item in page["data"]] == ["c3", "c2"]
    rest = world.get("/v0/models/customer", q="example", limit=2, cursor=page["next_cursor"])
    assert ([item["id"] for item in rest["data"]], rest["next_cursor"]) == (["c1"], None)
    error = error_of(
        world.client.get("/v0/models/customer", params={"q": "x" * 501}, headers=world.admin),
        400,
        "INVALID_VALIDATION_REQUEST",
    )
    assert error["param"] == "query.q"
