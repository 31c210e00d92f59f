"""Segment-compatible ingestion (`/v1/*`) over real stores, and the real analytics-python client."""

from __future__ import annotations

import base64
import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from segment.analytics import Client
from segment.analytics.request import APIError

from funnels.app import create_app
from funnels.events import parse_timestamp
from funnels.services import Services
from tests.conftest import bearer

IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)

# path → (stored type, a minimal valid message for it)
SINGLE_PATHS: dict[str, tuple[str, dict[str, Any]]] = {
    "/v1/track": ("track", {"userId": "u1", "event": "Signed Up"}),
    "/v1/t": ("track", {"userId": "u1", "event": "Signed Up"}),
    "/v1/page": ("page", {"anonymousId": "a1", "name": "Pricing"}),
    "/v1/p": ("page", {"anonymousId": "a1", "name": "Pricing"}),
    "/v1/identify": ("identify", {"userId": "u1", "traits": {"plan": "pro"}}),
    "/v1/i": ("identify", {"userId": "u1", "traits": {"plan": "pro"}}),
    "/v1/screen": ("screen", {"userId": "u1", "name": "Home"}),
    "/v1/s": ("screen", {"userId": "u1", "name": "Home"}),
    "/v1/group": ("group", {"userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}}),
    "/v1/g": ("group", {"userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}}),
    "/v1/alias": ("alias", {"userId": "u1", "previousId": "a1"}),
    "/v1/a": ("alias", {"userId": "u1", "previousId": "a1"}),
}


def basic(key: str) -> dict[str, str]:
    """HTTP Basic with the key as username and no password, as Segment's libraries send it."""
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def stored(services: Services, columns: str = "type, event, user_key") -> list[dict[str, Any]]:
    services.shipper.flush()
    return services.events.query(f"SELECT {columns} FROM events ORDER BY ts, event_id").dicts()


def track(event: str = "Signed Up", **extra: Any) -> dict[str, Any]:
    return {"type": "track", "userId": "u1", "event": event, **extra}


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert error["doc_url"].endswith(f"/errors#{code.lower()}")
    return error


@pytest.mark.parametrize("path", list(SINGLE_PATHS))
def test_every_single_message_path_stores_its_type(
    path: str, client: TestClient, keys: dict[str, str], services: Services
) -> None:
    type_, message = SINGLE_PATHS[path]
    response = client.post(path, json={**message, "messageId": "m1"}, headers=basic(keys["events:write"]))
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 1, "duplicates": 0}
    rows = stored(services, "type, event, event_id")
    assert rows == [
        {"type": type_, "event": message.get("event") or message.get("name") or type_, "event_id": "m1"}
    ]


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/b"])
def test_batch_paths_store_every_message_type(
    path: str, client: TestClient, keys: dict[str, str], services: Services
) -> None:
    batch = [{"type": type_, **message} for type_, message in dict(SINGLE_PATHS.values()).items()]
    response = client.post(path, json={"batch": batch}, headers=basic(keys["events:write"]))
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 6, "duplicates": 0, "rejected": []}
    assert sorted(row["type"] for row in stored(services)) == [
        "alias",
        "group",
        "identify",
        "page",
        "screen",
        "track",
    ]


def test_the_body_type_is_ignored_on_single_message_paths(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    message = {"type": "identify", "userId": "u1", "event": "Clicked"}
    assert client.post("/v1/track", json=message, headers=basic(keys["events:write"])).status_code == 200
    assert stored(services) == [{"type": "track", "event": "Clicked", "user_key": "u1"}]


def test_write_key_in_a_text_plain_body_as_analytics_js_sends_it(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    body = json.dumps(
        {"writeKey": keys["events:write"], "anonymousId": "a1", "event": "Viewed", "type": "track"}
    )
    response = client.post("/v1/t", content=body, headers={"Content-Type": "text/plain"})
    assert response.status_code == 200, response.text
    batch = json.dumps({"writeKey": keys["events:write"], "batch": [track("Batched")]})
    response = client.post("/v1/b", content=batch, headers={"Content-Type": "text/plain;charset=UTF-8"})
    assert response.status_code == 200, response.text
    assert sorted(row["event"] for row in stored(services)) == ["Batched", "Viewed"]


def test_bearer_and_admin_keys_are_accepted(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    assert (
        client.post("/v1/track", json=track("One"), headers=bearer(keys["events:write"])).status_code == 200
    )
    assert (
        client.post("/v1/batch", json={"batch": [track("Two")]}, headers=bearer(keys["admin"])).status_code
        == 200
    )
    assert len(stored(services)) == 2


def test_a_header_key_wins_over_write_key(client: TestClient, keys: dict[str, str]) -> None:
    body = {**track(), "writeKey": keys["events:write"]}
    response = client.post("/v1/track", json=body, headers=basic("fk_unknown_key"))
    assert_error(response, 401, "UNAUTHORIZED")


def test_missing_and_unknown_keys_are_401(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    error = assert_error(client.post("/v1/track", json=track()), 401, "UNAUTHORIZED")
    assert "writeKey" in error["message"]
    assert_error(client.post("/v1/batch", json={"batch": [track()]}), 401, "UNAUTHORIZED")
    assert_error(client.post("/v1/track", json=track(), headers=basic("fk_nope_nope")), 401, "UNAUTHORIZED")
    assert_error(client.post("/v1/track", json=track(), headers=bearer("nope")), 401, "UNAUTHORIZED")
    assert_error(client.post("/v1/t", json={**track(), "writeKey": "fk_nope_nope"}), 401, "UNAUTHORIZED")
    assert_error(client.post("/v1/t", json={**track(), "writeKey": 12}), 401, "UNAUTHORIZED")
    assert_error(
        client.post("/v1/b", content=b"[1, 2]", headers={"Content-Type": "text/plain"}), 401, "UNAUTHORIZED"
    )
    assert stored(services) == []


def test_a_key_without_events_write_is_403(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    read_only = keys["query:read"]
    error = assert_error(client.post("/v1/track", json=track(), headers=basic(read_only)), 403, "FORBIDDEN")
    assert "events:write" in error["message"]
    assert_error(client.post("/v1/batch", json={"batch": [track()], "writeKey": read_only}), 403, "FORBIDDEN")
    assert_error(client.post("/v1/p", json={**track(), "writeKey": read_only}), 403, "FORBIDDEN")
    assert stored(services) == []


def test_gzip_and_deflate_bodies(client: TestClient, keys: dict[str, str], services: Services) -> None:
    body = json.dumps({"batch": [track("Zipped")]}).encode()
    headers = {**basic(keys["events:write"]), "Content-Encoding": "gzip", "Content-Type": "application/json"}
    assert client.post("/v1/batch", content=gzip.compress(body), headers=headers).status_code == 200
    headers["Content-Encoding"] = "deflate"
    single = json.dumps(track("Deflated")).encode()
    assert client.post("/v1/track", content=zlib.compress(single), headers=headers).status_code == 200
    assert sorted(row["event"] for row in stored(services)) == ["Deflated", "Zipped"]
    headers["Content-Encoding"] = "gzip"
    assert_error(client.post("/v1/batch", content=b"not gzip", headers=headers), 400, "BAD_REQUEST")


def test_a_message_over_32_kb_is_400_naming_the_limit(client: TestClient, keys: dict[str, str]) -> None:
    big = track(properties={"blob": "x" * (32 * 1024)})
    error = assert_error(
        client.post("/v1/track", json=big, headers=basic(keys["events:write"])), 400, "BAD_REQUEST"
    )
    assert "32 KB" in error["message"]
    zipped = gzip.compress(json.dumps(big).encode())  # the limit applies to the decoded body
    headers = {**basic(keys["events:write"]), "Content-Encoding": "gzip"}
    assert (
        "32 KB"
        in assert_error(client.post("/v1/t", content=zipped, headers=headers), 400, "BAD_REQUEST")["message"]
    )


def test_a_batch_over_500_kb_is_400_naming_the_limit(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    batch = [track(properties={"blob": "x" * (20 * 1024)}) for _ in range(26)]  # each under 32 KB, ~520 KB
    response = client.post("/v1/batch", json={"batch": batch}, headers=basic(keys["events:write"]))
    assert "500 KB" in assert_error(response, 400, "BAD_REQUEST")["message"]
    assert stored(services) == []


def test_a_batch_keeps_valid_messages_and_reports_invalid_ones(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    batch = [
        track("Kept", messageId="m0"),
        {"type": "track", "userId": "u2"},
        track("Too big", properties={"blob": "x" * (32 * 1024)}),
        "not a message",
        {"type": "purchase", "anonymousId": "a1", "timestamp": "yesterday"},
        {"type": "page", "anonymousId": "a1", "name": "Also kept"},
    ]
    response = client.post("/v1/batch", json={"batch": batch}, headers=basic(keys["events:write"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["success"], body["accepted"], body["duplicates"]) == (True, 2, 0)
    assert body["rejected"] == [
        {"index": 1, "details": {"body.batch.1.event": "is required for track (the event name)"}},
        {"index": 2, "details": {"body.batch.2": "the message is larger than the limit of 32 KB"}},
        {"index": 3, "details": {"body.batch.3": "a message must be a JSON object"}},
        {
            "index": 4,
            "details": {
                "body.batch.4.type": "must be one of track, page, screen, identify, group, alias",
                "body.batch.4.timestamp": "must be an ISO 8601 string or epoch milliseconds",
            },
        },
    ]
    assert sorted(row["event"] for row in stored(services)) == ["Also kept", "Kept"]


def test_an_invalid_single_message_is_400_with_field_details(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    response = client.post("/v1/track", json={"properties": []}, headers=basic(keys["events:write"]))
    error = assert_error(response, 400, "INVALID_VALIDATION_REQUEST")
    assert error["details"] == {
        "body.userId": "one of userId or anonymousId is required",
        "body.event": "is required for track (the event name)",
        "body.properties": "must be an object",
    }
    assert error["param"] in error["details"]
    assert stored(services) == []


def test_malformed_bodies_are_400_never_5xx(client: TestClient, keys: dict[str, str]) -> None:
    headers = {**basic(keys["events:write"]), "Content-Type": "application/json"}
    cases = {
        b"": "BAD_REQUEST",
        b"{": "BAD_REQUEST",
        b"\xff\xfe": "BAD_REQUEST",
        b"[]": "BAD_REQUEST",
        b'"track"': "BAD_REQUEST",
        b"null": "BAD_REQUEST",
    }
    for path in ("/v1/track", "/v1/batch"):
        for body, code in cases.items():
            assert_error(client.post(path, content=body, headers=headers), 400, code)
    for body in (b"{}", b'{"batch": {"type": "track"}}', b'{"batch": "x"}'):
        error = assert_error(
            client.post("/v1/batch", content=body, headers=headers), 400, "INVALID_VALIDATION_REQUEST"
        )
        assert error["details"] == {"body.batch": "must be an array of messages"}
    response = client.post("/v1/batch", json={"batch": [], "context": []}, headers=headers)
    assert assert_error(response, 400, "INVALID_VALIDATION_REQUEST")["details"] == {
        "body.context": "must be an object"
    }


def test_an_empty_batch_is_fine(client: TestClient, keys: dict[str, str]) -> None:
    response = client.post("/v1/batch", json={"batch": []}, headers=basic(keys["events:write"]))
    assert response.json() == {"success": True, "accepted": 0, "duplicates": 0, "rejected": []}


def test_a_repeated_message_id_is_a_no_op(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    headers = basic(keys["events:write"])
    first = client.post("/v1/track", json=track(messageId="dup"), headers=headers).json()
    second = client.post(
        "/v1/batch", json={"batch": [track(messageId="dup"), track(messageId="dup")]}, headers=headers
    )
    assert (first["accepted"], first["duplicates"]) == (1, 0)
    assert (second.json()["accepted"], second.json()["duplicates"]) == (0, 2)
    assert len(stored(services)) == 1


def test_batch_sent_at_corrects_clock_skew_against_the_receive_time(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    # The server clock (the `clock` fixture) reads 2026-04-01T00:00:00Z; the device runs 2 h fast.
    batch = {
        "sentAt": "2026-04-01T02:00:00Z",
        "batch": [
            track("Skewed", originalTimestamp="2026-04-01T01:30:00Z"),
            track("Own sentAt", originalTimestamp="2026-04-01T01:30:00Z", sentAt="2026-04-01T01:30:00Z"),
            track("Trusted", timestamp="2026-03-31T20:00:00Z", originalTimestamp="2026-04-01T01:30:00Z"),
        ],
    }
    assert client.post("/v1/batch", json=batch, headers=basic(keys["events:write"])).status_code == 200
    rows = stored(
        services, "event, toUnixTimestamp64Milli(ts) AS ts_ms, toUnixTimestamp64Milli(received_at) AS rcv"
    )
    times = {row["event"]: int(row["ts_ms"]) for row in rows}
    assert times == {
        "Skewed": parse_timestamp("2026-03-31T23:30:00Z"),
        "Own sentAt": parse_timestamp("2026-04-01T00:00:00Z"),
        "Trusted": parse_timestamp("2026-03-31T20:00:00Z"),
    }
    assert {int(row["rcv"]) for row in rows} == {parse_timestamp("2026-04-01T00:00:00Z")}


def test_context_fills_the_standard_columns(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    message = {
        "anonymousId": "a1",
        "name": "Pricing",
        "properties": {"path": "/from-properties", "title": "Pricing"},
        "context": {
            "userAgent": IPHONE_SAFARI,
            "campaign": {
                "source": "google",
                "medium": "cpc",
                "name": "spring",
                "content": "ad",
                "term": "funnel",
            },
            "page": {"path": "/pricing", "referrer": "https://news.ycombinator.com/"},
            "locale": "en-US",
            "timezone": "America/New_York",
            "app": {"version": "2.0.1"},
            "location": {"country": "US"},
        },
    }
    assert client.post("/v1/page", json=message, headers=basic(keys["events:write"])).status_code == 200
    columns = "device, browser, os, utm_source, utm_medium, utm_campaign, utm_content, utm_term, page_path, "
    columns += "referrer, locale, timezone, version, location, properties"
    (row,) = stored(services, columns)
    assert row == {
        "device": "mobile",
        "browser": "Mobile Safari",
        "os": "iOS",
        "utm_source": "google",
        "utm_medium": "cpc",
        "utm_campaign": "spring",
        "utm_content": "ad",
        "utm_term": "funnel",
        "page_path": "/pricing",
        "referrer": "https://news.ycombinator.com/",
        "locale": "en-US",
        "timezone": "America/New_York",
        "version": "2.0.1",
        "location": "US",
        "properties": '{"path":"/from-properties","title":"Pricing"}',
    }


def test_segment_paths_are_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in [*SINGLE_PATHS, "/v1/batch", "/v1/b"]:
        assert paths[path]["post"]["tags"] == ["Segment"]


@pytest.fixture
def server_url(services: Services) -> Iterator[str]:
    """A real uvicorn server over `services` on a free 127.0.0.1 port, running in a background thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(services), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_the_real_segment_python_client_end_to_end(
    server_url: str, keys: dict[str, str], services: Services
) -> None:
    at = datetime(2026, 3, 31, 10, 0, 0, tzinfo=UTC)
    analytics = Client(write_key=keys["events:write"], host=server_url, sync_mode=True, max_retries=0)
    analytics.track(
        user_id="u1",
        event="Signed Up",
        properties={"plan": "pro"},
        context={"userAgent": WINDOWS_CHROME, "campaign": {"source": "newsletter"}},
        timestamp=at,
        message_id="py-track",
    )
    zipped = Client(write_key=keys["events:write"], host=server_url, sync_mode=True, gzip=True, max_retries=0)
    zipped.page(
        anonymous_id="a1",
        name="Pricing",
        properties={"path": "/pricing"},
        timestamp=at.replace(minute=1),
        message_id="py-page",
    )
    analytics.identify(user_id="u1", traits={"email": "u1@example.com"}, timestamp=at.replace(minute=2))
    analytics.track(user_id="u1", event="Signed Up", timestamp=at, message_id="py-track")  # a retry: no-op
    with pytest.raises(APIError) as rejected:
        Client(write_key=keys["query:read"], host=server_url, sync_mode=True, max_retries=0).track(
            user_id="u1", event="Forbidden"
        )
    assert rejected.value.status == 403

    columns = "type, event, user_key, anonymous_id, toUnixTimestamp64Milli(ts) AS ts_ms, properties, device, "
    columns += "browser, os, utm_source, page_path"
    rows = stored(services, columns)
    for row in rows:
        row["ts_ms"] = int(row["ts_ms"])
    base = parse_timestamp("2026-03-31T10:00:00Z")
    assert rows == [
        {
            "type": "track",
            "event": "Signed Up",
            "user_key": "u1",
            "anonymous_id": "",
            "ts_ms": base,
            "properties": '{"plan":"pro"}',
            "device": "desktop",
            "browser": "Chrome",
            "os": "Windows",
            "utm_source": "newsletter",
            "page_path": "",
        },
        {
            "type": "page",
            "event": "Pricing",
            "user_key": "a1",
            "anonymous_id": "a1",
            "ts_ms": base + 60_000,
            "properties": '{"path":"/pricing"}',
            "device": "",
            "browser": "",
            "os": "",
            "utm_source": "",
            "page_path": "/pricing",
        },
        {
            "type": "identify",
            "event": "identify",
            "user_key": "u1",
            "anonymous_id": "",
            "ts_ms": base + 120_000,
            "properties": '{"email":"u1@example.com"}',
            "device": "",
            "browser": "",
            "os": "",
            "utm_source": "",
            "page_path": "",
        },
    ]
