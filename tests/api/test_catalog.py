"""`GET /v0/events/names`, `/v0/events/properties`, `/v0/events/values` over real stores: events sent through
the ingestion API show up, each listed step and value works in `/v0/funnel`, errors use the envelope."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from funnels.services import Services
from tests.automation.conftest import error_of
from tests.conftest import bearer

EVENTS = [
    {
        "type": "page",
        "event": "Home",
        "user_id": "u1",
        "timestamp": "2026-04-02T10:00:00Z",
        "utm_source": "x",
    },
    {"type": "page", "event": "Home", "user_id": "u2", "timestamp": "2026-04-02T11:00:00Z"},
    {"type": "page", "event": "Docs", "user_id": "u1", "timestamp": "2026-04-03T10:00:00Z"},
    {
        "event": "connect",
        "user_id": "u1",
        "timestamp": "2026-04-02T10:01:00Z",
        "properties": {"provider_name": "MetaMask", "chain_id": 1},
        "context": {"device": "mobile"},
    },
    {
        "event": "connect",
        "user_id": "u2",
        "timestamp": "2026-04-02T11:01:00Z",
        "properties": {"provider_name": "Rabby", "chain_id": 8453},
    },
    {
        "event": "connect",
        "user_id": "u3",
        "timestamp": "2026-04-05T00:00:00Z",
        "properties": {"provider_name": "MetaMask"},
    },
]


@pytest.fixture
def loaded(client: TestClient, keys: dict[str, str], services: Services) -> TestClient:
    response = client.post("/v0/events", json=EVENTS, headers=bearer(keys["events:write"]))
    assert response.status_code == 200, response.text
    services.shipper.flush()
    return client


def get(client: TestClient, key: str, path: str, **params: str) -> Any:
    response = client.get(path, params=params, headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()


def test_names_list_what_was_sent_with_steps_that_work_in_the_funnel_api(
    loaded: TestClient, keys: dict[str, str]
) -> None:
    body = get(loaded, keys["query:read"], "/v0/events/names", date_from="2026-04-01", date_to="2026-04-04")
    assert [(row["type"], row["event"], row["count"]) for row in body["data"]] == [
        ("page", "Home", 2),
        ("track", "connect", 2),
        ("page", "Docs", 1),
    ]
    assert body["data"][1] == {
        "type": "track",
        "event": "connect",
        "count": 2,
        "last_seen": "2026-04-02T11:01:00.000Z",
        "step": {"type": "track", "event": "connect"},
    }
    assert [(row["type"], row["count"], row["names"]) for row in body["types"]] == [
        ("page", 3, 2),
        ("track", 2, 1),
    ]
    assert body["types"][0]["step"] == {"type": "event", "event": "page"}
    assert set(body["statistics"]) == {"elapsed", "rows_read", "bytes_read"}
    steps = [
        {**body["types"][0]["step"], "name": "any page"},
        {**body["data"][1]["step"], "name": "connect"},
    ]
    funnel = get(
        loaded,
        keys["query:read"],
        "/v0/funnel",
        date_from="2026-04-01",
        date_to="2026-04-04",
        steps=json.dumps(steps),
    )
    assert [row["users"] for row in funnel["data"]] == [2, 2]


def test_operands_and_values_of_a_step(loaded: TestClient, keys: dict[str, str]) -> None:
    key = keys["query:read"]
    body = get(loaded, key, "/v0/events/properties", type="track", event="connect")
    assert body["sample"] == {"events": 3, "limit": 50_000, "complete": True}
    assert [(item["operand"], item["count"], item["numeric"]) for item in body["properties"]] == [
        ("provider_name", 3, 0),
        ("chain_id", 2, 2),
    ]
    assert body["properties"][0]["values"] == [
        {"value": "MetaMask", "count": 2},
        {"value": "Rabby", "count": 1},
    ]
    assert body["columns"][0] == {
        "operand": "device",
        "count": 1,
        "numeric": 0,
        "values": [{"value": "mobile", "count": 1}],
    }
    values = get(
        loaded, key, "/v0/events/values", type="track", event="connect", operand="provider_name", q="meta"
    )
    assert values["data"] == [{"value": "MetaMask", "count": 2}]
    assert (values["operand"], values["column"], values["rows"], values["has_more"]) == (
        "provider_name",
        False,
        1,
        False,
    )
    steps = [
        {
            "type": "track",
            "event": "connect",
            "name": "connect",
            "filters": [{"operand": "provider_name", "operator": "equals", "value": "MetaMask"}],
        },
        {"type": "event", "event": "page", "name": "page"},
    ]
    funnel = get(
        loaded,
        key,
        "/v0/funnel",
        date_from="2026-04-01",
        date_to="2026-04-05",
        steps=json.dumps(steps),
        funnel_type="open",
    )
    assert funnel["data"][0]["users"] == 2
    pages = get(loaded, key, "/v0/events/values", type="event", event="page", operand="utm_source")
    assert (pages["column"], pages["data"]) == (True, [{"value": "x", "count": 1}])


@pytest.mark.parametrize(
    ("path", "params", "details"),
    [
        ("/v0/events/names", {"limit": "0", "dateFrom": "2026-02-30"}, {"limit", "date_from"}),
        ("/v0/events/names", {"date_from": "2026-04-02", "date_to": "2026-04-01"}, {"date_to"}),
        ("/v0/events/properties", {}, {"type", "event"}),
        ("/v0/events/properties", {"type": "track", "event": "x", "limit": "many"}, {"limit"}),
        ("/v0/events/values", {"type": "track", "event": "x"}, {"operand"}),
        ("/v0/events/values", {"type": "t", "event": "e", "operand": "o", "q": "q" * 1001}, {"q"}),
        ("/v0/events/users", {"limit": "0"}, {"limit"}),
        ("/v0/events/users", {"cursor": "c" * 1001}, {"query.cursor"}),
        ("/v0/events/users", {"date_from": "2026-02-30"}, {"date_from"}),
    ],
)
def test_invalid_parameters_are_a_400_with_every_problem(
    client: TestClient, keys: dict[str, str], path: str, params: dict[str, str], details: set[str]
) -> None:
    error = error_of(
        client.get(path, params=params, headers=bearer(keys["query:read"])), 400, "INVALID_VALIDATION_REQUEST"
    )
    assert set(error["details"]) == details
    assert error["param"] in details


@pytest.mark.parametrize(
    "path", ["/v0/events/names", "/v0/events/properties", "/v0/events/values", "/v0/events/users"]
)
def test_they_need_a_query_read_key(client: TestClient, keys: dict[str, str], path: str) -> None:
    error_of(client.get(path), 401, "UNAUTHORIZED")
    error_of(client.get(path, headers=bearer(keys["events:write"])), 403, "FORBIDDEN")
    params = {"type": "track", "event": "x", "operand": "device"}
    assert client.get(path, params=params, headers=bearer(keys["admin"])).status_code == 200


def test_user_keys_identified_or_not_in_key_order_page_by_page(
    loaded: TestClient, keys: dict[str, str], services: Services
) -> None:
    """Every key that sent events, each with its events, last time and whether a user id came with them."""
    anonymous = {"event": "connect", "anonymous_id": "anon-U9", "timestamp": "2026-04-04T08:00:00Z"}
    response = loaded.post("/v0/events", json=[anonymous], headers=bearer(keys["events:write"]))
    assert response.status_code == 200, response.text
    services.shipper.flush()
    key = keys["query:read"]
    sent = [*EVENTS, anonymous]
    expected = {
        user: [event for event in sent if (event.get("user_id") or event.get("anonymous_id")) == user]
        for user in sorted({event.get("user_id") or event["anonymous_id"] for event in sent})
    }
    everyone = get(loaded, key, "/v0/events/users")
    assert [item["user_key"] for item in everyone["data"]] == list(expected)  # anon-U9, u1, u2, u3
    assert everyone["next_cursor"] is None and everyone["rows"] == len(expected)
    for item in everyone["data"]:
        events = expected[item["user_key"]]
        assert item["events"] == len(events)
        assert item["last_seen"] == max(event["timestamp"] for event in events).replace("Z", ".000Z")
        assert item["identified"] == any("user_id" in event for event in events)

    pages, cursor = [], None
    while True:
        page = get(loaded, key, "/v0/events/users", limit="3", **({"cursor": cursor} if cursor else {}))
        pages.append([item["user_key"] for item in page["data"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [list(expected)[:3], list(expected)[3:]]

    assert [item["user_key"] for item in get(loaded, key, "/v0/events/users", q="u")["data"]] == list(
        expected
    )
    assert [item["user_key"] for item in get(loaded, key, "/v0/events/users", q="ANON")["data"]] == [
        "anon-U9"
    ]
    in_range = get(loaded, key, "/v0/events/users", date_from="2026-04-04", date_to="2026-04-05")
    assert [item["user_key"] for item in in_range["data"]] == ["anon-U9", "u3"]
