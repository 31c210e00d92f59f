"""`POST /v0/events` and `GET /v0/funnel` over real stores: acknowledged means visible, errors use the envelope."""

from __future__ import annotations

import json
import time

from fastapi.testclient import TestClient

from funnels.services import Services
from tests.conftest import bearer

STEPS = json.dumps(
    [
        {"type": "event", "event": "page", "name": "page::0"},
        {"type": "track", "event": "connect", "name": "connect::1"},
    ]
)


def funnel(client: TestClient, key: str, **extra: str) -> dict:
    params = {"date_from": "2026-04-01", "date_to": "2026-04-30", "steps": STEPS, **extra}
    response = client.get("/v0/funnel", params=params, headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()


def test_acknowledged_event_is_visible_in_funnel_within_two_seconds(
    client: TestClient, keys: dict[str, str]
) -> None:
    events = [
        {"type": "page", "user_id": "u1", "timestamp": "2026-04-02T10:00:00Z"},
        {"event": "connect", "user_id": "u1", "timestamp": "2026-04-02T10:00:05Z"},
    ]
    response = client.post("/v0/events", json=events, headers=bearer(keys["events:write"]))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 2
    deadline = time.monotonic() + 2
    while True:
        users = [row["users"] for row in funnel(client, keys["query:read"])["data"]]
        if users == [1, 1] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert users == [1, 1]


def test_repeated_message_id_is_a_no_op(client: TestClient, keys: dict[str, str], services: Services) -> None:
    event = {"event": "connect", "user_id": "u1", "message_id": "m-1", "timestamp": "2026-04-02T10:00:00Z"}
    first = client.post("/v0/events", json=event, headers=bearer(keys["events:write"])).json()
    second = client.post("/v0/events", json=event, headers=bearer(keys["events:write"])).json()
    assert (first["accepted"], first["duplicates"]) == (1, 0)
    assert (second["accepted"], second["duplicates"]) == (0, 1)
    services.shipper.flush()
    assert services.events.count() == 1


def test_invalid_batch_is_rejected_whole_with_field_details(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    events = [
        {"event": "ok", "user_id": "u1"},
        {"event": "bad", "timestamp": "yesterday"},
    ]
    response = client.post("/v0/events", json=events, headers=bearer(keys["events:write"]))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_VALIDATION_REQUEST"
    assert "body.1.timestamp" in error["details"]
    assert any(
        path.startswith("body.1") and "user_id" in message for path, message in error["details"].items()
    )
    assert error["doc_url"].endswith("/errors#invalid_validation_request")
    services.shipper.flush()
    assert services.events.count() == 0


def test_auth_errors_use_the_envelope(client: TestClient, keys: dict[str, str]) -> None:
    missing = client.post("/v0/events", json={"event": "x", "user_id": "u"})
    unknown = client.post("/v0/events", json={"event": "x", "user_id": "u"}, headers=bearer("fk_nope_nope"))
    forbidden = client.post(
        "/v0/events", json={"event": "x", "user_id": "u"}, headers=bearer(keys["query:read"])
    )
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "UNAUTHORIZED")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (401, "UNAUTHORIZED")
    assert (forbidden.status_code, forbidden.json()["error"]["code"]) == (403, "FORBIDDEN")


def test_funnel_validation_errors_name_each_parameter(client: TestClient, keys: dict[str, str]) -> None:
    response = client.get(
        "/v0/funnel",
        params={"date_from": "2026-13-01", "steps": "[1]", "window_seconds": "0", "breakdown": "nope"},
        headers=bearer(keys["query:read"]),
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_VALIDATION_REQUEST"
    assert set(error["details"]) >= {"date_from", "date_to", "steps", "window_seconds", "breakdown"}
    assert error["param"] in error["details"]


def test_malformed_bodies_get_bad_request_not_5xx(client: TestClient, keys: dict[str, str]) -> None:
    headers = {**bearer(keys["events:write"]), "Content-Type": "application/json"}
    for body in (b"", b"{", b"\xff\xfe", b"[]", b"3", b"[" + b"{}," * 1200 + b"{}]"):
        response = client.post("/v0/events", content=body, headers=headers)
        assert 400 <= response.status_code < 500, (body[:20], response.text)
        assert response.json()["error"]["code"] in ("BAD_REQUEST", "INVALID_VALIDATION_REQUEST")


def test_healthz_and_pages(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok"
    assert (
        health["shipper"] == "this node"
    )  # an event store of its own (or, shared, this node holds the lease)
    assert "<form" in client.get("/").text
    assert "invalid_validation_request" in client.get("/errors").text
    assert client.get("/openapi.json").json()["paths"]["/v0/funnel"]["get"]
