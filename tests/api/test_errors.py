"""The error envelope's `doc_url`: the configured public URL, else a relative link; never the Host header."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from funnels.app import create_app
from funnels.services import Services
from tests.conftest import bearer

HOSTILE = "evil.example"


def requests(keys: dict[str, str]) -> list[tuple[str, str, dict[str, str], bytes]]:
    """(method, path, headers, body) answered with an error, from the router, auth, a route or middleware."""
    writer = {**bearer(keys["events:write"]), "Content-Type": "application/json"}
    return [
        ("GET", "/no-such-page", {}, b""),
        ("GET", "/v0/keys/", bearer(keys["admin"]), b""),  # trailing slash: no redirect to the Host
        ("GET", "/static", {}, b""),
        ("GET", "/v0/funnel", {}, b""),
        ("GET", "/v0/funnel", bearer(keys["events:write"]), b""),
        ("GET", "/v0/funnel?steps=a", bearer(keys["query:read"]), b""),
        ("POST", "/v0/events", writer, b"{not json"),
        ("POST", "/v0/events", writer, b'{"event": 1}'),
        ("POST", "/v0/events", {**writer, "Idempotency-Key": "\x7f"}, b"{}"),
        ("POST", "/v1/track", {}, b'{"event": "e", "userId": "u"}'),
        ("POST", "/v0/keys", bearer(keys["admin"]), b'{"scopes": ["nope"]}'),
        ("DELETE", "/v0/events", writer, b""),
    ]


@pytest.fixture
def public_client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services, public_url="https://funnels.example.com")) as client:
        yield client


def test_doc_url_is_relative_and_the_host_is_never_reflected(
    client: TestClient, keys: dict[str, str]
) -> None:
    for method, path, headers, body in requests(keys):
        response = client.request(method, path, headers={**headers, "Host": HOSTILE}, content=body)
        assert response.status_code >= 400, (path, response.text)
        assert HOSTILE not in response.text
        assert not any(HOSTILE in value for value in response.headers.values())
        error = response.json()["error"]
        assert error["doc_url"] == f"/errors#{error['code'].lower()}"


def test_doc_url_uses_the_public_url(public_client: TestClient, keys: dict[str, str]) -> None:
    for method, path, headers, body in requests(keys):
        response = public_client.request(method, path, headers={**headers, "Host": HOSTILE}, content=body)
        assert HOSTILE not in response.text
        error = response.json()["error"]
        assert error["doc_url"] == f"https://funnels.example.com/errors#{error['code'].lower()}"
