"""`/v0/keys` (scope `admin`): list, create (the secret in that response only), revoke; validation errors
in the envelope."""

from __future__ import annotations

from fastapi.testclient import TestClient

from funnels.clock import ManualClock
from tests.conftest import bearer


def test_create_list_and_revoke(client: TestClient, keys: dict[str, str], clock: ManualClock) -> None:
    admin = bearer(keys["admin"])
    created = client.post(
        "/v0/keys", json={"name": " CI deploys ", "scopes": ["events:write"]}, headers=admin
    )
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body.pop("key")
    assert secret.startswith(f"fk_{body['id']}_")
    assert body == {
        "id": body["id"],
        "name": "CI deploys",
        "scopes": ["events:write"],
        "created": "2026-04-01T00:00:00.000Z",
        "revoked": False,
        "revoked_at": None,
    }
    assert (
        client.post("/v0/events", json={"event": "e", "user_id": "u"}, headers=bearer(secret)).status_code
        == 200
    )

    listed = client.get("/v0/keys", headers=admin).json()["data"]
    assert listed[0] == body  # newest first
    assert len(listed) == 5 and all("key" not in item and "secret_hash" not in item for item in listed)
    assert secret not in client.get("/v0/keys", headers=admin).text

    clock.advance(60_000)
    revoked = client.post(f"/v0/keys/{body['id']}/revoke", headers=admin)
    assert revoked.status_code == 200
    assert revoked.json() == {**body, "revoked": True, "revoked_at": "2026-04-01T00:01:00.000Z"}
    after = client.post("/v0/events", json={"event": "e", "user_id": "u"}, headers=bearer(secret))
    assert after.status_code == 401
    assert client.get("/v0/keys", headers=admin).json()["data"][0]["revoked"] is True

    again = client.post(f"/v0/keys/{body['id']}/revoke", headers=admin)
    assert again.status_code == 409 and again.json()["error"]["code"] == "CONFLICT"
    missing = client.post("/v0/keys/0123abcd/revoke", headers=admin)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"


def test_scopes_are_validated(client: TestClient, keys: dict[str, str]) -> None:
    admin = bearer(keys["admin"])
    cases = [
        ({"name": "x", "scopes": ["read"]}, "body.scopes"),
        ({"name": "x", "scopes": []}, "body.scopes"),
        ({"name": "x"}, "body.scopes"),
        ({"name": "x" * 201, "scopes": ["admin"]}, "body.name"),
        ({"name": 3, "scopes": ["admin"]}, "body.name"),
        ({"scopes": ["admin"], "secret": "mine"}, "body.secret"),
    ]
    for body, field in cases:
        response = client.post("/v0/keys", json=body, headers=admin)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["code"] == "INVALID_VALIDATION_REQUEST" and field in error["details"], (body, error)
    for raw in (b"", b"{", b"[]", b"\xff"):
        response = client.post("/v0/keys", content=raw, headers={**admin, "Content-Type": "application/json"})
        assert 400 <= response.status_code < 500, (raw, response.text)
    assert len(client.get("/v0/keys", headers=admin).json()["data"]) == 4
    assert client.post("/v0/keys/not-hex!/revoke", headers=admin).status_code == 400


def test_keys_need_admin(client: TestClient, keys: dict[str, str]) -> None:
    for scope in ("events:write", "query:read"):
        for method, path in (("GET", "/v0/keys"), ("POST", "/v0/keys"), ("POST", "/v0/keys/abc/revoke")):
            response = client.request(method, path, json={"scopes": ["admin"]}, headers=bearer(keys[scope]))
            assert response.status_code == 403 and response.json()["error"]["code"] == "FORBIDDEN"
    assert client.get("/v0/keys").status_code == 401
