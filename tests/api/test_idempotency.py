"""`Idempotency-Key` on POST over the real app and real SQLite: replay, scope, lease, expiry and errors."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Iterator

import anyio.to_thread
import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from funnels.api import idempotency
from funnels.api.idempotency import PRUNE_EVERY_MS, fingerprint
from funnels.app import create_app
from funnels.clock import ManualClock
from funnels.services import Services
from funnels.store import idempotency as records
from funnels.store.idempotency import LEASE_MS, TTL_MS, RecordKey
from tests.conftest import bearer

EVENT = {"event": "connect", "user_id": "u1", "timestamp": "2026-04-02T10:00:00Z"}  # no message_id
BODY = json.dumps(EVENT).encode()


def post_event(
    client: TestClient, api_key: str, idempotency_key: str | bytes | None, body: bytes = BODY
) -> httpx.Response:
    headers: dict[str, str | bytes] = {**bearer(api_key), "Content-Type": "application/json"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return client.post("/v0/events", content=body, headers=headers)


def stored_events(services: Services) -> int:
    services.shipper.flush()
    return services.events.count()


def claim_in_progress(services: Services, api_key: str, idempotency_key: str) -> None:
    """What a request still running elsewhere leaves behind: a claimed, unfinished record."""
    record = RecordKey(
        credential=hashlib.sha256(f"Bearer {api_key}".encode()).hexdigest(),
        method="POST",
        path="/v0/events",
        key=idempotency_key,
    )
    scope = {"method": "POST", "path": "/v0/events", "query_string": b""}
    claim = records.begin(services.state, record, fingerprint(scope, BODY), services.clock.now_ms())
    assert claim.outcome == "proceed"


def test_same_key_replays_status_and_body_and_stores_once(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    first = post_event(client, keys["events:write"], "retry-1")
    second = post_event(client, keys["events:write"], "retry-1")
    assert first.status_code == second.status_code == 200
    assert second.content == first.content  # the generated event id too: the request did not run again
    assert second.headers["content-type"] == first.headers["content-type"] == "application/json"
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert stored_events(services) == 1


def test_different_key_runs_again(client: TestClient, keys: dict[str, str], services: Services) -> None:
    first = post_event(client, keys["events:write"], "key-a").json()
    second = post_event(client, keys["events:write"], "key-b").json()
    assert first["ids"] != second["ids"]
    assert stored_events(services) == 2


def test_key_reused_with_a_different_body_is_rejected(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    assert post_event(client, keys["events:write"], "reused").status_code == 200
    other = json.dumps({**EVENT, "user_id": "u2"}).encode()
    response = post_event(client, keys["events:write"], "reused", body=other)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_IDEMPOTENCY_KEY"
    assert "different request" in error["message"]
    assert error["doc_url"].endswith("/errors#invalid_idempotency_key")
    assert 'id="invalid_idempotency_key"' in client.get("/errors").text  # doc_url's target exists
    assert stored_events(services) == 1


def test_key_reused_with_a_different_query_string_is_rejected(
    client: TestClient, keys: dict[str, str]
) -> None:
    headers = {**bearer(keys["events:write"]), "Idempotency-Key": "q"}
    assert client.post("/v0/events", content=BODY, headers=headers).status_code == 200
    response = client.post("/v0/events?x=1", content=BODY, headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "INVALID_IDEMPOTENCY_KEY")


def test_a_4xx_response_is_replayed(client: TestClient, keys: dict[str, str], services: Services) -> None:
    invalid = json.dumps({"event": "connect"}).encode()  # no user: 400
    first = post_event(client, keys["events:write"], "bad-1", body=invalid)
    second = post_event(client, keys["events:write"], "bad-1", body=invalid)
    assert first.status_code == second.status_code == 400
    assert first.json()["error"]["code"] == "INVALID_VALIDATION_REQUEST"
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    forbidden = [post_event(client, keys["query:read"], "no-scope") for _ in range(2)]
    assert [r.status_code for r in forbidden] == [403, 403]
    assert forbidden[1].headers["idempotent-replayed"] == "true"


def test_401_is_not_stored(client: TestClient, services: Services) -> None:
    responses = [post_event(client, "fk_nope_nope", "who") for _ in range(2)]
    assert [r.status_code for r in responses] == [401, 401]
    assert "idempotent-replayed" not in responses[1].headers
    assert records.count(services.state) == 0


def test_concurrent_duplicate_is_409(client: TestClient, keys: dict[str, str], services: Services) -> None:
    claim_in_progress(services, keys["events:write"], "busy")
    response = post_event(client, keys["events:write"], "busy")
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "IDEMPOTENCY_IN_PROGRESS"
    assert error["doc_url"].endswith("/errors#idempotency_in_progress")
    assert stored_events(services) == 0


def test_in_progress_record_past_its_lease_is_taken_over(
    client: TestClient, keys: dict[str, str], services: Services, clock: ManualClock
) -> None:
    claim_in_progress(services, keys["events:write"], "crashed")
    clock.advance(LEASE_MS - 1)
    assert post_event(client, keys["events:write"], "crashed").status_code == 409
    clock.advance(1)
    taken = post_event(client, keys["events:write"], "crashed")
    assert taken.status_code == 200
    assert "idempotent-replayed" not in taken.headers
    assert post_event(client, keys["events:write"], "crashed").content == taken.content
    assert stored_events(services) == 1


def test_after_24_hours_the_key_runs_again_and_old_records_are_pruned(
    client: TestClient, keys: dict[str, str], services: Services, clock: ManualClock
) -> None:
    first = post_event(client, keys["events:write"], "daily")
    post_event(client, keys["events:write"], "other")
    clock.advance(TTL_MS - 1)
    assert post_event(client, keys["events:write"], "daily").headers["idempotent-replayed"] == "true"
    clock.advance(1)
    again = post_event(client, keys["events:write"], "daily")
    assert again.status_code == 200
    assert "idempotent-replayed" not in again.headers
    assert again.json()["ids"] != first.json()["ids"]
    assert stored_events(services) == 3
    clock.advance(PRUNE_EVERY_MS)  # pruning runs at most once a minute, on a request with a key
    post_event(client, keys["events:write"], "later")
    assert records.count(services.state) == 2  # "daily" (renewed) and "later"; "other" expired and is gone


def test_different_api_keys_do_not_share_records(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    mine = post_event(client, keys["events:write"], "shared")
    theirs = post_event(client, keys["all"], "shared")
    assert mine.status_code == theirs.status_code == 200
    assert "idempotent-replayed" not in theirs.headers
    assert mine.json()["ids"] != theirs.json()["ids"]
    assert stored_events(services) == 2


@pytest.mark.parametrize(
    "bad_key",
    ["x" * 256, "", "ключ".encode(), b"tab\there", b"del\x7f"],
    ids=["long", "empty", "utf8", "tab", "del"],
)
def test_invalid_key_is_rejected(
    client: TestClient, keys: dict[str, str], services: Services, bad_key: str | bytes
) -> None:
    response = post_event(client, keys["events:write"], bad_key)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("INVALID_IDEMPOTENCY_KEY", "Idempotency-Key")
    assert stored_events(services) == 0
    assert records.count(services.state) == 0


def test_body_over_the_buffering_limit_is_rejected(
    client: TestClient, keys: dict[str, str], services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idempotency, "MAX_BODY_BYTES", len(BODY) - 1)
    response = post_event(client, keys["events:write"], "big")
    assert (response.status_code, response.json()["error"]["code"]) == (400, "BAD_REQUEST")
    assert post_event(client, keys["events:write"], None).status_code == 200  # without a key: no limit here
    assert records.count(services.state) == 0


def test_longest_printable_key_is_accepted(client: TestClient, keys: dict[str, str]) -> None:
    key = "".join(chr(c) for c in range(0x20, 0x7F)) * 3  # every printable ASCII character
    key = key[:255]
    assert post_event(client, keys["events:write"], key).status_code == 200
    assert post_event(client, keys["events:write"], key).headers["idempotent-replayed"] == "true"


def test_get_ignores_the_header(client: TestClient, keys: dict[str, str], services: Services) -> None:
    steps = json.dumps(
        [
            {"type": "event", "event": "page", "name": "page::0"},
            {"type": "track", "event": "connect", "name": "connect::1"},
        ]
    )
    params = {"date_from": "2026-04-01", "date_to": "2026-04-30", "steps": steps}
    headers = {**bearer(keys["query:read"]), "Idempotency-Key": "x" * 300}  # invalid, yet not looked at
    responses = [client.get("/v0/funnel", params=params, headers=headers) for _ in range(2)]
    assert [r.status_code for r in responses] == [200, 200]
    assert "idempotent-replayed" not in responses[1].headers
    assert records.count(services.state) == 0


def test_without_the_header_every_request_runs(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    responses = [post_event(client, keys["events:write"], None) for _ in range(2)]
    assert [r.status_code for r in responses] == [200, 200]
    assert "idempotent-replayed" not in responses[1].headers
    assert responses[0].json()["ids"] != responses[1].json()["ids"]
    assert stored_events(services) == 2
    assert records.count(services.state) == 0


def test_segment_track_with_basic_auth(client: TestClient, keys: dict[str, str], services: Services) -> None:
    basic = "Basic " + base64.b64encode(f"{keys['events:write']}:".encode()).decode()
    headers = {"Authorization": basic, "Idempotency-Key": "seg-1", "Content-Type": "text/plain"}
    body = json.dumps({"userId": "u1", "event": "Signed Up"})
    first = client.post("/v1/track", content=body, headers=headers)
    second = client.post("/v1/track", content=body, headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    assert stored_events(services) == 1


# --- a test app: the real app plus routes that fail, or wait to be released ------------------------------


class Gate:
    """Holds the slow route until released, and counts how often each test route ran."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.runs = {"boom": 0, "unavailable": 0, "slow": 0}


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def test_client(services: Services, gate: Gate) -> Iterator[TestClient]:
    app: FastAPI = create_app(services)

    async def boom() -> None:
        gate.runs["boom"] += 1
        raise RuntimeError("boom")

    async def unavailable() -> JSONResponse:
        gate.runs["unavailable"] += 1
        return JSONResponse({"busy": True}, status_code=503)

    async def slow(request: Request) -> JSONResponse:
        gate.runs["slow"] += 1
        gate.entered.set()
        await anyio.to_thread.run_sync(gate.release.wait, 10)
        return JSONResponse(
            {"body": (await request.body()).decode()}, headers={"X-Run": str(gate.runs["slow"])}
        )

    app.add_api_route("/test/boom", boom, methods=["POST"])
    app.add_api_route("/test/unavailable", unavailable, methods=["POST"])
    app.add_api_route("/test/slow", slow, methods=["POST"])
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_5xx_and_exceptions_are_not_stored(
    test_client: TestClient, gate: Gate, services: Services, keys: dict[str, str]
) -> None:
    headers = {**bearer(keys["admin"]), "Idempotency-Key": "k"}
    for path in ("/test/boom", "/test/unavailable"):
        responses = [test_client.post(path, content=b"{}", headers=headers) for _ in range(2)]
        assert [r.status_code for r in responses] == ([500, 500] if path == "/test/boom" else [503, 503])
        assert "idempotent-replayed" not in responses[1].headers
    assert gate.runs["boom"] == gate.runs["unavailable"] == 2
    assert records.count(services.state) == 0


def test_real_concurrent_pair(test_client: TestClient, gate: Gate, keys: dict[str, str]) -> None:
    headers = {**bearer(keys["admin"]), "Idempotency-Key": "pair"}
    results: dict[str, httpx.Response] = {}

    def first() -> None:
        results["first"] = test_client.post("/test/slow", content=b"payload", headers=headers)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert gate.entered.wait(10)  # the first request is inside the app, its record in progress
        duplicate = test_client.post("/test/slow", content=b"payload", headers=headers)
        assert duplicate.status_code == 409
        assert duplicate.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
    finally:
        gate.release.set()
        thread.join(10)
    original = results["first"]
    assert original.status_code == 200
    assert original.json() == {"body": "payload"}
    replay = test_client.post("/test/slow", content=b"payload", headers=headers)
    assert replay.content == original.content
    assert replay.headers["x-run"] == "1"  # the app's own headers are replayed too
    assert replay.headers["idempotent-replayed"] == "true"
    assert gate.runs["slow"] == 1


def test_a_takeover_after_a_crash_dedups_events_sent_without_a_message_id(
    client: TestClient, services: Services, clock: ManualClock, keys: dict[str, str]
) -> None:
    """A crash after the events commit but before the response is stored leaves the claim in progress; the
    retry that takes it over derives the same event ids (same key, credential, body and claim epoch), so it
    logs nothing twice. A key reused after 24 h starts a new epoch: new events."""
    headers = {**bearer(keys["events:write"]), "Idempotency-Key": "crash-window"}
    body = [{"event": "connect", "user_id": "u1"}, {"event": "swap", "user_id": "u1"}]
    first = client.post("/v0/events", json=body, headers=headers).json()
    with services.state.write() as connection:  # as if the process died before storing the response
        connection.execute(records.idempotency_keys.update().values(status=None, headers=None, body=None))
    clock.advance(LEASE_MS)
    again = client.post("/v0/events", json=body, headers=headers).json()
    assert (again["accepted"], again["duplicates"], again["ids"]) == (0, 2, first["ids"])
    clock.advance(TTL_MS)
    later = client.post("/v0/events", json=body, headers=headers).json()
    assert later["accepted"] == 2 and set(later["ids"]).isdisjoint(first["ids"])
    services.shipper.flush()
    assert services.events.count() == 4


# --- requests without a valid credential never touch the records --------------------------------------


def test_unauthenticated_requests_store_nothing(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    wrong = "fk_" + "0" * 40
    credentials: list[dict[str, str]] = [
        {},
        bearer(wrong),
        {"Authorization": "Basic " + base64.b64encode(f"{wrong}:".encode()).decode()},
        {"Authorization": "Bearer"},
        {"Cookie": "funnels_session=no-such-session", "X-CSRF-Token": "x"},
    ]
    paths = ["/v0/events", "/v0/keys", "/v1/track", "/api/v1/identify", "/v0/no-such-path", "/nothing/here"]
    for index, credential in enumerate(credentials):
        for path in paths:
            for body in (BODY, b"{not json", b""):
                headers = {
                    **credential,
                    "Idempotency-Key": f"anon-{index}",
                    "Content-Type": "application/json",
                }
                response = client.post(path, content=body, headers=headers)
                assert response.status_code in (400, 401, 404), response.text
                assert "error" in response.json()
    assert records.count(services.state) == 0
    assert stored_events(services) == 0


# --- a secret is shown once and never stored -----------------------------------------------------------


def stored_rows(services: Services) -> list[tuple[object, ...]]:
    """Every column of every idempotency record, as the database holds it (raw SQL, either dialect)."""
    with services.state.read() as connection:
        return [tuple(row) for row in connection.exec_driver_sql("SELECT * FROM idempotency_keys")]


def holds(rows: list[tuple[object, ...]], secret: str) -> bool:
    return any(
        secret.encode() in (value if isinstance(value, bytes) else str(value).encode())
        for row in rows
        for value in row
    )


def test_a_created_key_is_never_stored(client: TestClient, keys: dict[str, str], services: Services) -> None:
    headers = {**bearer(keys["admin"]), "Idempotency-Key": "new-key-1"}
    created = client.post("/v0/keys", json={"name": "ci", "scopes": ["events:write"]}, headers=headers)
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    secret = created.json()["key"]
    rows = stored_rows(services)
    assert len(rows) == 1  # the key is spent: a tombstone, not the response
    assert not holds(rows, secret)
    assert not holds(rows, created.json()["id"])

    replay = client.post("/v0/keys", json={"name": "ci", "scopes": ["events:write"]}, headers=headers)
    assert replay.status_code == 409, replay.text
    assert replay.headers["idempotent-replayed"] == "true"
    error = replay.json()["error"]
    assert (error["code"], error["param"]) == ("CONFLICT", "Idempotency-Key")
    assert "cannot be shown again" in error["message"]
    assert secret not in replay.text
    assert len(client.get("/v0/keys", headers=bearer(keys["admin"])).json()["data"]) == 5  # 4 + the one made


def test_a_session_is_never_stored(client: TestClient, keys: dict[str, str], services: Services) -> None:
    """`POST /login` authenticated by a key (so the middleware runs) with an Idempotency-Key."""
    login = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]*)"', login.text)
    assert token is not None
    form = {"key": keys["query:read"], "csrf_token": token.group(1)}
    headers = {**bearer(keys["admin"]), "Idempotency-Key": "login-1"}
    signed_in = client.post("/login", data=form, headers=headers, follow_redirects=False)
    assert signed_in.status_code == 303, signed_in.text
    assert signed_in.headers["cache-control"] == "no-store"
    session = signed_in.cookies["funnels_session"]
    rows = stored_rows(services)
    assert len(rows) == 1
    assert not holds(rows, session)

    replay = client.post("/login", data=form, headers=headers, follow_redirects=False)
    assert replay.status_code == 409, replay.text
    assert replay.json()["error"]["code"] == "CONFLICT"
    assert "set-cookie" not in replay.headers


def test_a_response_without_a_secret_is_still_replayed_in_full(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    made = client.post("/v0/keys", json={"scopes": ["admin"]}, headers=bearer(keys["admin"])).json()
    headers = {**bearer(keys["admin"]), "Idempotency-Key": "revoke-1"}
    first = client.post(f"/v0/keys/{made['id']}/revoke", headers=headers)
    second = client.post(f"/v0/keys/{made['id']}/revoke", headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
