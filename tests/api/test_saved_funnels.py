"""`/v0/saved_funnels` (scope `query:read`): save, list, open (its parameters run as `/v0/funnel` runs them),
update at a version, delete; every bad input a 400 naming it, conflicts 409, unknown ids 404; and
`/v0/funnel?compare=previous_period`. On both state dialects."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from funnels.analytics import saved
from funnels.clock import ManualClock
from funnels.events import Event
from funnels.services import Services
from tests.conftest import bearer
from tests.postgres import BOTH

pytestmark = BOTH

STEPS = [
    {"type": "event", "event": "page", "name": "page"},
    {"type": "track", "event": "connect", "name": "c"},
]
PARAMETERS = {"date_from": "2026-04-02", "date_to": "2026-04-03", "steps": json.dumps(STEPS)}
DAY_MS = 86_400_000
START_MS = 1_775_001_600_000  # 2026-04-01


def load(services: Services) -> None:
    """Day 0 (in the previous period of days 1–2: days -1 and 0): two entered, one connected; days 1–2: three
    entered, three connected."""
    rows = [("a", 0, "page"), ("a", 0, "connect"), ("b", 0, "page")]
    rows += [
        (user, day, kind) for user, day in (("c", 1), ("d", 1), ("e", 2)) for kind in ("page", "connect")
    ]
    services.events.insert_events(
        [
            Event(
                event_id=f"e{i}",
                type="page" if kind == "page" else "track",
                event=kind,
                user_key=user,
                user_id=user,
                ts_ms=START_MS + day * DAY_MS + i * 1000,
                received_ms=START_MS,
                properties={},
                columns={},
            )
            for i, (user, day, kind) in enumerate(rows)
        ]
    )


def error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code and body["doc_url"].endswith(f"/errors#{code.lower()}")
    return body


def test_save_list_open_update_and_delete(
    client: TestClient, keys: dict[str, str], services: Services, clock: ManualClock
) -> None:
    load(services)
    reader = bearer(keys["query:read"])
    created = client.post(
        "/v0/saved_funnels", json={"name": "Connect", "parameters": PARAMETERS}, headers=reader
    )
    assert created.status_code == 201, created.text
    funnel = created.json()
    assert funnel == {
        "id": funnel["id"],
        "name": "Connect",
        "version": 1,
        "created": "2026-04-01T00:00:00.000Z",
        "updated": "2026-04-01T00:00:00.000Z",
        "link": f"/funnels?saved={funnel['id']}",
        "parameters": PARAMETERS,
    }
    listed = client.get("/v0/saved_funnels", headers=reader).json()
    assert listed == {
        "data": [{key: value for key, value in funnel.items() if key != "parameters"}],
        "rows": 1,
    }

    # Opened, its parameters are a /v0/funnel query string as they are.
    opened = client.get(f"/v0/saved_funnels/{funnel['id']}", headers=reader).json()
    assert opened == funnel
    answer = client.get("/v0/funnel", params=opened["parameters"], headers=reader).json()
    assert [row["users"] for row in answer["data"]] == [3, 3]

    clock.advance(60_000)
    changed = PARAMETERS | {"compare": "previous_period", "funnel_type": "open"}
    update = {"name": "Connect (open)", "parameters": changed, "version": 1}
    updated = client.put(f"/v0/saved_funnels/{funnel['id']}", json=update, headers=reader)
    assert updated.status_code == 200, updated.text
    assert updated.json() | {"parameters": None} == funnel | {
        "name": "Connect (open)",
        "version": 2,
        "updated": "2026-04-01T00:01:00.000Z",
        "parameters": None,
    }
    assert updated.json()["parameters"] == changed
    stale = client.put(f"/v0/saved_funnels/{funnel['id']}", json=update, headers=reader)
    assert error(stale, 409, "CONFLICT")["param"] == "body.version"
    compared = client.get("/v0/funnel", params=updated.json()["parameters"], headers=reader).json()
    assert (compared["comparison"]["date_from"], compared["comparison"]["date_to"]) == (
        "2026-03-31",
        "2026-04-01",
    )
    assert [row["previous_users"] for row in compared["comparison"]["data"]] == [2, 1]

    deleted = client.delete(f"/v0/saved_funnels/{funnel['id']}", headers=reader)
    assert deleted.status_code == 200 and deleted.json()["version"] == 2
    for method in ("GET", "DELETE"):
        error(client.request(method, f"/v0/saved_funnels/{funnel['id']}", headers=reader), 404, "NOT_FOUND")
    missing = client.put(f"/v0/saved_funnels/{funnel['id']}", json=update, headers=reader)
    error(missing, 404, "NOT_FOUND")
    assert client.get("/v0/saved_funnels", headers=reader).json() == {"data": [], "rows": 0}


def test_names_are_unique(client: TestClient, keys: dict[str, str]) -> None:
    admin = bearer(keys["admin"])  # admin allows every scope
    first = client.post(
        "/v0/saved_funnels", json={"name": "A", "parameters": PARAMETERS}, headers=admin
    ).json()
    client.post("/v0/saved_funnels", json={"name": "B", "parameters": PARAMETERS}, headers=admin)
    again = client.post("/v0/saved_funnels", json={"name": " A ", "parameters": PARAMETERS}, headers=admin)
    assert error(again, 409, "CONFLICT")["param"] == "body.name"
    rename = client.put(
        f"/v0/saved_funnels/{first['id']}", json={"name": "B", "parameters": PARAMETERS}, headers=admin
    )
    assert error(rename, 409, "CONFLICT")["param"] == "body.name"
    assert [item["name"] for item in client.get("/v0/saved_funnels", headers=admin).json()["data"]] == [
        "A",
        "B",
    ]


BAD_BODIES: list[tuple[Any, str]] = [
    ({"parameters": PARAMETERS}, "body.name"),
    ({"name": "", "parameters": PARAMETERS}, "body.name"),
    ({"name": 5, "parameters": PARAMETERS}, "body.name"),
    ({"name": "x" * 201, "parameters": PARAMETERS}, "body.name"),
    ({"name": "a\x00b", "parameters": PARAMETERS}, "body.name"),
    ({"name": "n"}, "body.parameters"),
    ({"name": "n", "parameters": "date_from=2026-04-01"}, "body.parameters"),
    ({"name": "n", "parameters": PARAMETERS | {"limit": "1"}}, "body.parameters.limit"),
    ({"name": "n", "parameters": PARAMETERS | {"steps": "[1]"}}, "body.parameters.steps"),
    ({"name": "n", "parameters": PARAMETERS | {"date_to": "2026-03-01"}}, "body.parameters.date_to"),
    ({"name": "n", "parameters": PARAMETERS | {"compare": "last_year"}}, "body.parameters.compare"),
    ({"name": "n", "parameters": PARAMETERS | {"identity": ["raw"]}}, "body.parameters.identity"),
    ({"name": "n", "parameters": PARAMETERS, "version": 0}, "body.version"),
    ({"name": "n", "parameters": PARAMETERS, "version": "two"}, "body.version"),
    ({"name": "n", "parameters": PARAMETERS, "owner": "me"}, "body.owner"),
    ([], "body"),
]


def test_every_bad_field_is_named(client: TestClient, keys: dict[str, str]) -> None:
    reader = bearer(keys["query:read"])
    target = client.post(
        "/v0/saved_funnels", json={"name": "T", "parameters": PARAMETERS}, headers=reader
    ).json()
    for body, param in BAD_BODIES:
        for method, path in (("PUT", f"/v0/saved_funnels/{target['id']}"), ("POST", "/v0/saved_funnels")):
            if method == "POST" and param == "body.version":
                continue  # a create takes no version: there, it is an unknown field
            response = client.request(method, path, json=body, headers=reader)
            found = error(response, 400, "INVALID_VALIDATION_REQUEST")
            assert found["param"] == param, (method, body, found)
            assert param in found["details"]
    assert (
        error(
            client.post(
                "/v0/saved_funnels",
                json={"name": "n", "parameters": PARAMETERS, "version": 1},
                headers=reader,
            ),
            400,
            "INVALID_VALIDATION_REQUEST",
        )["param"]
        == "body.version"
    )
    not_json = client.post("/v0/saved_funnels", content=b"{", headers=reader)
    error(not_json, 400, "BAD_REQUEST")
    too_big = client.post(
        "/v0/saved_funnels", content=b" " * (saved.MAX_PARAMETERS_BYTES * 2 + 1), headers=reader
    )
    error(too_big, 400, "BAD_REQUEST")
    for bad_id in ("XYZ", "a" * 33, "a-b"):
        found = error(
            client.get(f"/v0/saved_funnels/{bad_id}", headers=reader), 400, "INVALID_VALIDATION_REQUEST"
        )
        assert found["param"] == "path.funnel_id"
    # Nothing of it was kept.
    assert [item["name"] for item in client.get("/v0/saved_funnels", headers=reader).json()["data"]] == ["T"]
    assert client.get(f"/v0/saved_funnels/{target['id']}", headers=reader).json()["version"] == 1


def test_any_text_in_the_parameters_is_kept_on_both_dialects(
    client: TestClient, keys: dict[str, str]
) -> None:
    """NUL and other control characters, which PostgreSQL's text cannot hold raw, are kept escaped in JSON."""
    reader = bearer(keys["query:read"])
    steps = [
        {"type": "track", "event": "a\x00\x01é😀", "name": "a"},
        {"type": "track", "event": "b", "name": "b\n"},
    ]
    parameters = PARAMETERS | {"steps": json.dumps(steps)}
    created = client.post(
        "/v0/saved_funnels", json={"name": "Odd 😀", "parameters": parameters}, headers=reader
    )
    assert created.status_code == 201, created.text
    opened = client.get(f"/v0/saved_funnels/{created.json()['id']}", headers=reader).json()
    assert opened["name"] == "Odd 😀" and json.loads(opened["parameters"]["steps"]) == steps


def test_compare_on_the_funnel_endpoint(client: TestClient, keys: dict[str, str], services: Services) -> None:
    load(services)
    reader = bearer(keys["query:read"])
    plain = client.get("/v0/funnel", params=PARAMETERS, headers=reader).json()
    assert "comparison" not in plain  # an existing request answers as it did
    compared = client.get(
        "/v0/funnel", params=PARAMETERS | {"compare": "previous_period"}, headers=reader
    ).json()
    assert {**compared, "comparison": None, "statistics": None} == {
        **plain,
        "comparison": None,
        "statistics": None,
    }
    assert compared["comparison"]["data"] == [
        {
            "step": 1,
            "event": "page",
            "users": 3,
            "previous_users": 2,
            "users_change": 1,
            "users_change_ratio": 0.5,
            "conversion_from_start": 1.0,
            "previous_conversion_from_start": 1.0,
            "conversion_from_start_change_points": 0.0,
        },
        {
            "step": 2,
            "event": "c",
            "users": 3,
            "previous_users": 1,
            "users_change": 2,
            "users_change_ratio": 2.0,
            "conversion_from_start": 1.0,
            "previous_conversion_from_start": 0.5,
            "conversion_from_start_change_points": 50.0,
        },
    ]
    for value, message in (
        ("previous", "must be previous_period"),
        ("previous_period", "the previous period would start before 1970-01-01"),
    ):
        params = PARAMETERS | {"compare": value}
        if value == "previous_period":
            params |= {"date_from": "1970-01-01", "date_to": "1970-01-05"}
        found = error(
            client.get("/v0/funnel", params=params, headers=reader), 400, "INVALID_VALIDATION_REQUEST"
        )
        assert (found["param"], found["details"]) == ("compare", {"compare": message})


def test_a_saved_funnel_holds_exactly_the_funnel_endpoints_parameters(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    parameters = document["paths"]["/v0/funnel"]["get"]["parameters"]
    assert sorted(saved.PARAMETERS) == sorted(parameter["name"] for parameter in parameters)
