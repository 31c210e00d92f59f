"""Auth by the dashboard's session cookie on the JSON API: the session's key and scopes, a CSRF token on
every unsafe method (never for a bearer key), and an ended session is a 401. The server's local credential
(`server.json`, for the CLI beside it) opens the CLI's endpoints and no other."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from funnels.app import create_app
from funnels.auth import key_id_of
from funnels.clock import ManualClock
from funnels.services import Services
from funnels.sessions import SESSION_COOKIE, SESSION_TTL_MS
from tests.conftest import bearer
from tests.web.conftest import csrf_token, sign_in

NEW_KEY = {"name": "made in the dashboard", "scopes": ["query:read"]}


def test_the_cookie_authenticates_api_calls_with_the_keys_scopes(
    client: TestClient, keys: dict[str, str]
) -> None:
    sign_in(client, keys["query:read"])
    funnel = client.get("/v0/funnel", params={"date_from": "2026-04-01", "date_to": "2026-04-02"})
    assert funnel.status_code == 400 and funnel.json()["error"]["param"] == "steps"  # authorized; bad query
    forbidden = client.get("/v0/keys")
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "FORBIDDEN"


def test_unsafe_methods_need_the_csrf_header(client: TestClient, keys: dict[str, str]) -> None:
    sign_in(client, keys["admin"])
    token = csrf_token(client)
    for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": token + "x"}, {"X-CSRF-Token": token[:-1]}):
        response = client.post("/v0/keys", json=NEW_KEY, headers=headers)
        assert response.status_code == 403, headers
        error = response.json()["error"]
        assert error["code"] == "CSRF_FAILED" and "X-CSRF-Token" in error["message"]
        assert error["doc_url"].endswith("/errors#csrf_failed")
    assert len(client.get("/v0/keys").json()["data"]) == 4  # nothing was created; GET needs no token
    created = client.post("/v0/keys", json=NEW_KEY, headers={"X-CSRF-Token": token})
    assert created.status_code == 201, created.text
    reload = client.post("/v0/config/reload")
    assert reload.status_code == 403 and reload.json()["error"]["code"] == "CSRF_FAILED"


def test_bearer_keys_need_no_csrf_token_even_beside_a_session_cookie(
    client: TestClient, keys: dict[str, str]
) -> None:
    sign_in(client, keys["query:read"])
    response = client.post("/v0/keys", json=NEW_KEY, headers=bearer(keys["admin"]))
    assert response.status_code == 201  # the header's key decides, not the cookie's session
    assert client.get("/v0/keys", headers=bearer(keys["events:write"])).status_code == 403


def test_an_ended_session_is_a_401(client: TestClient, keys: dict[str, str], clock: ManualClock) -> None:
    sign_in(client, keys["admin"])
    assert client.get("/v0/keys").status_code == 200
    clock.advance(SESSION_TTL_MS)
    response = client.get("/v0/keys")
    assert response.status_code == 401
    assert "sign in again" in response.json()["error"]["message"]
    client.cookies.clear()
    assert "Bearer" in client.get("/v0/keys").json()["error"]["message"]


def test_revoking_the_sessions_key_ends_it(client: TestClient, keys: dict[str, str]) -> None:
    second_admin = client.post("/v0/keys", json={"scopes": ["admin"]}, headers=bearer(keys["admin"])).json()
    sign_in(client, second_admin["key"])
    token = csrf_token(client)
    revoked = client.post(
        f"/v0/keys/{key_id_of(second_admin['key'])}/revoke", headers={"X-CSRF-Token": token}
    )
    assert revoked.status_code == 200  # a key may revoke itself; its session ends with it
    assert client.get("/v0/keys").status_code == 401


def test_idempotency_records_are_per_session(client: TestClient, keys: dict[str, str]) -> None:
    """Two browsers using the same Idempotency-Key never get each other's response (a new key's secret)."""
    sign_in(client, keys["admin"])
    headers = {"X-CSRF-Token": csrf_token(client), "Idempotency-Key": "create-1"}
    first = client.post("/v0/keys", json=NEW_KEY, headers=headers)
    assert client.post("/v0/keys", json=NEW_KEY, headers=headers).headers.get("idempotent-replayed") == "true"
    first_cookie = client.cookies[SESSION_COOKIE]
    client.cookies.clear()
    sign_in(client, keys["all"])
    assert client.cookies[SESSION_COOKIE] != first_cookie
    headers["X-CSRF-Token"] = csrf_token(client)
    second = client.post("/v0/keys", json=NEW_KEY, headers=headers)
    assert second.status_code == 201 and "idempotent-replayed" not in second.headers
    assert second.json()["key"] != first.json()["key"]


def test_a_csrf_failure_is_not_replayed_to_the_retry_that_sends_the_token(
    client: TestClient, keys: dict[str, str]
) -> None:
    sign_in(client, keys["admin"])
    refused = client.post("/v0/keys", json=NEW_KEY, headers={"Idempotency-Key": "k-1"})
    assert refused.status_code == 403
    retried = client.post(
        "/v0/keys", json=NEW_KEY, headers={"Idempotency-Key": "k-1", "X-CSRF-Token": csrf_token(client)}
    )
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers


def test_a_query_parameter_given_twice_is_a_400_naming_it(client: TestClient, keys: dict[str, str]) -> None:
    """Found by the contract test: `?page=1&page=2` was answered with whichever value came last."""
    for path, query in (
        ("/v0/actions", "page=1&page=2"),
        ("/v0/actions", "status=sent&funnel=a&status=dead"),
        ("/v0/funnel", "date_from=2026-04-01&date_to=2026-04-02&steps=[]&steps=[]"),
        ("/v0/events/names", "limit=5&limit=6"),
    ):
        response = client.get(f"{path}?{query}", headers=bearer(keys["all"]))
        assert response.status_code == 400, (path, query, response.text)
        error = response.json()["error"]
        assert error["code"] == "INVALID_VALIDATION_REQUEST"
        assert error["details"] == {error["param"]: "given more than once"}
        assert error["param"] in ("query.page", "query.status", "query.steps", "query.limit")
    once = client.get("/v0/actions?page=1&size=2", headers=bearer(keys["all"]))
    assert once.status_code == 200, once.text


LOCAL = "fl_the-credential-of-this-run"
STEPS = '[{"type":"track","event":"a","name":"a"},{"type":"track","event":"b","name":"b"}]'


@pytest.fixture
def local_client(services: Services) -> Iterator[TestClient]:
    """The app as `funnels serve` runs it: with a local credential for the CLI (`server.json`)."""
    with TestClient(create_app(services, local_credential=LOCAL)) as test_client:
        yield test_client


def test_the_local_credential_opens_the_clis_endpoints_only(local_client: TestClient) -> None:
    """It reads funnels and the catalog and imports, and nothing else: not the configured funnels, keys,
    the automation admin, nor any ingest route (Bearer, Basic or a Segment body's writeKey)."""
    client, headers = local_client, bearer(LOCAL)
    funnel = client.get(
        "/v0/funnel",
        params={"date_from": "2026-04-01", "date_to": "2026-04-02", "steps": STEPS},
        headers=headers,
    )
    assert funnel.status_code == 200, funnel.text
    step = {"type": "track", "event": "a"}
    for path, params in (
        ("/v0/events/names", {}),
        ("/v0/events/properties", step),
        ("/v0/events/values", {**step, "operand": "device"}),
        ("/v0/events/users", {}),
    ):
        assert client.get(path, params=params, headers=headers).status_code == 200, path
    imported = client.post("/v0/import", params={"name": "e.ndjson"}, content=b"", headers=headers)
    assert imported.json()["imported"] == 0, imported.text
    basic = {"Authorization": "Basic " + base64.b64encode(f"{LOCAL}:".encode()).decode()}
    event = {"event": "x", "user_id": "u1"}
    for method, path, kwargs in (
        ("GET", "/v0/funnels", {"headers": headers}),
        ("GET", "/v0/keys", {"headers": headers}),
        ("POST", "/v0/keys", {"headers": headers, "json": NEW_KEY}),
        ("GET", "/v0/actions", {"headers": headers}),
        ("GET", "/v0/config", {"headers": headers}),
        ("POST", "/v0/events", {"headers": headers, "json": [event]}),
        ("POST", "/api/v1/events", {"headers": headers, "json": {"name": "x", "ids": ["c1"]}}),
        ("POST", "/v1/track", {"headers": headers, "json": {"userId": "u1", "event": "x"}}),
        ("POST", "/v1/track", {"headers": basic, "json": {"userId": "u1", "event": "x"}}),
        (
            "POST",
            "/v1/batch",
            {"json": {"writeKey": LOCAL, "batch": [{"type": "track", "userId": "u", "event": "x"}]}},
        ),
    ):
        refused = client.request(method, path, **kwargs)
        assert refused.status_code == 403, (method, path, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "FORBIDDEN" and "local credential" in error["message"], (method, path)


def test_the_local_credential_never_signs_in_nor_outlives_its_server(
    local_client: TestClient, services: Services
) -> None:
    """The dashboard's sign-in takes API keys only (no session cookie for it); another run's credential,
    or one sent to a server started without any (tests, `create_app` alone), is a 401."""
    signed_in = sign_in(local_client, LOCAL)
    assert signed_in.status_code == 401 and SESSION_COOKIE not in signed_in.cookies
    stale = local_client.get("/v0/events/names", headers=bearer("fl_an-earlier-run"))
    assert stale.status_code == 401 and "made anew each time the server starts" in stale.text
    with TestClient(create_app(services)) as without:
        assert without.get("/v0/events/names", headers=bearer(LOCAL)).status_code == 401
