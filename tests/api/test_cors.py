"""CORS on the Segment routes `/v1/*` only (`api/cors.py`): preflights, the allow-list, the envelope, and the
other APIs staying same-origin."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

from funnels.api.cors import parse_origins
from funnels.app import create_app
from funnels.services import Services
from funnels.store.idempotency import count
from tests.api.test_buffering import BIG, Streamed, asgi_client
from tests.conftest import bearer

SITE = "https://shop.example"
OTHER_SITE = "https://evil.example"
SEGMENT_POSTS = ("/v1/t", "/v1/track", "/v1/p", "/v1/i", "/v1/b", "/v1/batch", "/v1/m")
# What analytics.js's preflight asks: Basic auth makes it one; a retry adds X-Retry-Count.
ASKED = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}


def preflight(client: TestClient, path: str, origin: str = SITE, **asked: str) -> dict[str, object]:
    response = client.options(path, headers={"Origin": origin, **ASKED, **asked})
    return {"status": response.status_code, "headers": response.headers, "body": response.text}


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.fixture
def restricted(services: Services) -> Iterator[TestClient]:
    """An app whose /v1 accepts browsers from `SITE` alone."""
    with TestClient(
        create_app(services, cors_origins=parse_origins(f" {SITE}/ , http://localhost:3000"))
    ) as c:
        yield c


@pytest.mark.parametrize("path", [*SEGMENT_POSTS, "/v1/projects/fk_any/settings"])
def test_a_preflight_on_v1_is_allowed_from_any_origin_by_default(client: TestClient, path: str) -> None:
    method = "GET" if path.endswith("/settings") else "POST"
    answer = preflight(client, path, **{"Access-Control-Request-Method": method})
    headers = answer["headers"]
    assert answer["status"] == 200
    assert headers["access-control-allow-origin"] == "*"  # type: ignore[index]
    assert headers["access-control-allow-methods"] == "GET, POST"  # type: ignore[index]
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}  # type: ignore[index]
    assert {"authorization", "content-type", "x-retry-count"} <= allowed
    assert headers["access-control-max-age"] == "7200"  # type: ignore[index]


def test_a_preflight_reads_no_key_no_body_and_no_store(services: Services, keys: dict[str, str]) -> None:
    # A valid key and an Idempotency-Key: past the CORS middleware the idempotency middleware would buffer
    # the body and claim a record. A preflight pulls no byte and leaves no record.
    app = create_app(services)
    body = Streamed(BIG)
    headers = {"Origin": SITE, **ASKED, **basic(keys["events:write"]), "Idempotency-Key": "k1"}

    async def main() -> httpx.Response:
        async with asgi_client(app) as client:
            return await client.request("OPTIONS", "/v1/t", content=body.chunks(), headers=headers)

    response = anyio.run(main)
    assert response.status_code == 200
    assert body.pulled == 0 and app.state.body_budget.peak == 0
    assert count(services.state) == 0


def test_cors_headers_on_v1_answers_and_errors_keep_the_envelope(
    client: TestClient, keys: dict[str, str]
) -> None:
    ok = client.post(
        "/v1/t", headers={"Origin": SITE, **basic(keys["events:write"])}, json={"userId": "u", "event": "e"}
    )
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "*"
    refused = client.post("/v1/t", headers={"Origin": SITE}, json={"userId": "u", "event": "e"})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "*"
    assert refused.json()["error"]["code"] == "UNAUTHORIZED"


def test_an_allow_list_answers_its_origins_by_name(restricted: TestClient) -> None:
    answer = preflight(restricted, "/v1/t")
    assert answer["status"] == 200
    assert answer["headers"]["access-control-allow-origin"] == SITE  # type: ignore[index]
    assert "Origin" in answer["headers"]["vary"]  # type: ignore[index]
    local = preflight(restricted, "/v1/batch", origin="http://localhost:3000")
    assert local["headers"]["access-control-allow-origin"] == "http://localhost:3000"  # type: ignore[index]


def test_a_preflight_from_another_origin_is_refused_in_the_envelope(restricted: TestClient) -> None:
    response = restricted.options("/v1/t", headers={"Origin": OTHER_SITE, **ASKED})
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers
    error = response.json()["error"]
    assert error["code"] == "BAD_REQUEST" and error["message"].startswith("CORS preflight refused (origin)")
    assert error["doc_url"] == "/errors#bad_request"


def test_a_preflight_asking_for_another_header_is_refused(client: TestClient) -> None:
    answer = preflight(client, "/v1/t", **{"Access-Control-Request-Headers": "authorization,x-custom"})
    assert answer["status"] == 400 and "(headers)" in str(answer["body"])


def test_a_simple_request_from_another_origin_is_refused_under_an_allow_list(
    restricted: TestClient, keys: dict[str, str], services: Services
) -> None:
    # text/plain with writeKey in the body (or sendBeacon) never preflights: refused before the route.
    body = b'{"writeKey": "%s", "userId": "u", "event": "e"}' % keys["events:write"].encode()
    response = restricted.post(
        "/v1/t", headers={"Origin": OTHER_SITE, "Content-Type": "text/plain"}, content=body
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "FORBIDDEN"
    assert "access-control-allow-origin" not in response.headers
    allowed = restricted.post("/v1/t", headers={"Origin": SITE, "Content-Type": "text/plain"}, content=body)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == SITE
    # a client that is not a browser sends no Origin: the list does not apply, the key does
    assert restricted.post("/v1/t", content=body).status_code == 200
    services.shipper.flush()
    assert services.events.query("SELECT count() FROM events").rows == [[2]]


@pytest.mark.parametrize(
    "path", ["/v0/events", "/v0/funnel", "/api/v1/identify", "/api/v1/events", "/login", "/"]
)
def test_every_other_route_stays_same_origin(client: TestClient, keys: dict[str, str], path: str) -> None:
    response = client.options(path, headers={"Origin": SITE, **ASKED})
    assert response.status_code in (404, 405)
    assert not [name for name in response.headers if name.startswith("access-control-")]
    if response.headers["content-type"].startswith("application/json"):
        assert "error" in response.json()
    get = client.get("/v0/funnels", headers={"Origin": SITE, **bearer(keys["all"])})
    assert not [name for name in get.headers if name.startswith("access-control-")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("*", ("*",)),
        (" * ", ("*",)),
        ("https://a.example", ("https://a.example",)),
        ("https://a.example/, http://localhost:8080", ("https://a.example", "http://localhost:8080")),
    ],
)
def test_origins_parse(value: str, expected: tuple[str, ...]) -> None:
    assert parse_origins(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", " , ", "a.example", "https://a.example/path", "ftp://a.example", "*,https://a.example", "https://"],
)
def test_origins_that_are_not_origins_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        parse_origins(value)
