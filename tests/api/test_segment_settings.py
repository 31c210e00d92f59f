"""analytics.js's settings (`GET /v1/projects/{writeKey}/settings`) and metrics (`POST /v1/m`), in process."""

from __future__ import annotations

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

from funnels.app import create_app
from funnels.services import Services
from funnels.store.idempotency import count
from tests.api.test_buffering import BIG, Streamed, asgi_client


def test_settings_point_the_segmentio_integration_here(client: TestClient, keys: dict[str, str]) -> None:
    key = keys["events:write"]
    response = client.get(f"/v1/projects/{key}/settings", headers={"Origin": "https://shop.example"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    # Built from the request's Host: no shared cache may keep it for another client.
    assert response.headers["cache-control"] == "private, max-age=60"
    assert response.json() == {
        "integrations": {"Segment.io": {"apiKey": key, "apiHost": "testserver/v1", "protocol": "http"}},
        "metrics": {"sampleRate": 0, "host": "testserver/v1"},
        "remotePlugins": [],
    }


def test_settings_use_the_public_url(services: Services) -> None:
    app = create_app(services, run_shipper=False, public_url="https://funnels.example.com/analytics")
    with TestClient(app) as client:
        response = client.get("/v1/projects/fk_x/settings")
    settings = response.json()
    assert response.headers["cache-control"] == "public, max-age=60"
    assert settings["integrations"]["Segment.io"] == {
        "apiKey": "fk_x",
        "apiHost": "funnels.example.com/analytics/v1",
        "protocol": "https",
    }
    assert settings["metrics"]["host"] == "funnels.example.com/analytics/v1"


@pytest.mark.parametrize("key", ["fk_0123456789ab_unknown", "not-even-a-key"])
def test_an_unknown_key_gets_the_same_settings_and_is_refused_where_it_sends(
    client: TestClient, keys: dict[str, str], key: str
) -> None:
    known = client.get(f"/v1/projects/{keys['events:write']}/settings").json()
    unknown = client.get(f"/v1/projects/{key}/settings")
    assert unknown.status_code == 200
    known["integrations"]["Segment.io"]["apiKey"] = key
    assert unknown.json() == known
    sent = client.post("/v1/t", auth=(key, ""), json={"userId": "u", "event": "e"})
    assert sent.status_code == 401 and sent.json()["error"]["code"] == "UNAUTHORIZED"


def test_a_revoked_key_gets_the_same_settings(client: TestClient, keys: dict[str, str]) -> None:
    key = keys["events:write"]
    key_id = key.split("_")[1]
    revoked = client.post(f"/v0/keys/{key_id}/revoke", headers={"Authorization": f"Bearer {keys['admin']}"})
    assert revoked.status_code == 200, revoked.text
    assert client.get(f"/v1/projects/{key}/settings").json()["integrations"]["Segment.io"]["apiKey"] == key


def test_a_key_too_long_for_a_key_is_a_400_in_the_envelope(client: TestClient) -> None:
    response = client.get(f"/v1/projects/{'k' * 257}/settings")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_VALIDATION_REQUEST"


def test_metrics_are_accepted_without_a_key_and_without_reading_the_body(services: Services) -> None:
    app = create_app(services)
    body = Streamed(BIG)

    async def main() -> httpx.Response:
        async with asgi_client(app) as client:
            headers = {
                "Content-Type": "text/plain",
                "Origin": "https://shop.example",
                "Idempotency-Key": "m1",
            }
            return await client.post("/v1/m", content=body.chunks(), headers=headers)

    response = anyio.run(main)
    assert response.status_code == 204 and response.content == b""
    assert response.headers["access-control-allow-origin"] == "*"
    assert body.pulled == 0 and app.state.body_budget.peak == 0
    assert count(services.state) == 0
    services.shipper.flush()
    assert services.events.query("SELECT count() FROM events").rows == [[0]]


def test_what_analytics_js_posts_to_metrics_is_a_204(client: TestClient) -> None:
    series = {
        "series": [{"type": "Counter", "metric": "analytics_js.invoke", "value": 1, "tags": {"x": "y"}}]
    }
    assert client.post("/v1/m", json=series).status_code == 204
