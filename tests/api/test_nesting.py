"""Deeply nested JSON at every ingest endpoint: past `MAX_NESTING` levels below a message it is a 400 naming
the path (in a Segment batch, only that message is rejected), never a 500; up to the limit it is stored."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from tests.automation.conftest import Config, World, default_config
from tests.automation.conftest import open_world as open_world  # the fixture, used by `world` below

MAX_NESTING = 32  # the documented limit (docs/security.md); `funnels.events.MAX_NESTING`
DEEP = (MAX_NESTING + 1, 300, 1_000)  # orjson reads 1,024 levels and writes 255


@pytest.fixture
def world(open_world: Callable[[Config], World]) -> World:
    return open_world(default_config())


def nested(levels: int) -> str:
    """JSON text of `levels` objects, one inside the other (orjson cannot write past 255)."""
    return '{"a":' * levels + "1" + "}" * levels


def deep_path(prefix: str) -> str:
    """Where the first object past the limit is, in `nested(n)` sent as `prefix` (n > MAX_NESTING)."""
    return prefix + ".a" * MAX_NESTING  # `prefix` is level 1, its n-th `a` level n + 1


def post(world: World, path: str, body: str, **headers: str) -> Any:
    return world.client.post(
        path, content=body, headers={**world.writer, "Content-Type": "application/json", **headers}
    )


def stored(world: World) -> int:
    world.svc.shipper.flush()
    return world.svc.events.count()


# (path, body with NESTED where the deep value goes, the field path the deep value is at)
SINGLE: list[tuple[str, str, str]] = [
    ("/v0/events", '{"event": "e", "user_id": "u", "properties": NESTED}', "body.properties"),
    ("/v0/events", '[{"event": "e", "user_id": "u", "properties": NESTED}]', "body.0.properties"),
    ("/v1/track", '{"event": "e", "userId": "u", "properties": NESTED}', "body.properties"),
    ("/v1/t", '{"event": "e", "userId": "u", "properties": NESTED}', "body.properties"),
    ("/v1/page", '{"userId": "u", "properties": NESTED}', "body.properties"),
    ("/v1/screen", '{"userId": "u", "properties": NESTED}', "body.properties"),
    ("/v1/identify", '{"userId": "u", "traits": NESTED}', "body.traits"),
    ("/v1/group", '{"userId": "u", "groupId": "g", "traits": NESTED}', "body.traits"),
    ("/v1/alias", '{"userId": "u", "previousId": "p", "context": NESTED}', "body.context"),
    ("/api/v1/identify", '{"model": "customer", "ids": ["c1"], "properties": NESTED}', "body.properties"),
    ("/api/v1/identify", '[{"model": "customer", "ids": ["c1"], "properties": NESTED}]', "body.0.properties"),
    ("/api/v1/events", '{"name": "sign_up", "ids": ["c1"], "properties": NESTED}', "body.properties"),
    ("/api/v1/event", '[{"name": "sign_up", "ids": ["c1"], "properties": NESTED}]', "body.0.properties"),
]


@pytest.mark.parametrize("levels", DEEP)
@pytest.mark.parametrize(("path", "template", "field"), SINGLE)
def test_too_deep_is_a_400_naming_the_path(
    world: World, path: str, template: str, field: str, levels: int
) -> None:
    response = post(world, path, template.replace("NESTED", nested(levels)))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "INVALID_VALIDATION_REQUEST"
    assert error["param"] == deep_path(field)
    assert error["details"] == {deep_path(field): f"nested more than {MAX_NESTING} levels deep"}
    assert stored(world) == 0


@pytest.mark.parametrize(("path", "template", "field"), SINGLE)
def test_up_to_the_limit_is_stored(world: World, path: str, template: str, field: str) -> None:
    response = post(world, path, template.replace("NESTED", nested(MAX_NESTING)))
    assert response.status_code == 200, response.text
    assert stored(world) == 1


@pytest.mark.parametrize("path", ["/v0/events", "/api/v1/events"])
def test_too_deep_under_an_idempotency_key_is_a_400(world: World, path: str) -> None:
    """The default event ids of an idempotent request hash the body: that must not fail on it first."""
    body = '{"event": "e", "name": "e", "user_id": "u", "ids": ["c1"], "properties": NESTED}'
    response = post(world, path, body.replace("NESTED", nested(300)), **{"Idempotency-Key": "deep-1"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_VALIDATION_REQUEST"


@pytest.mark.parametrize("levels", DEEP)
@pytest.mark.parametrize("path", ["/v1/batch", "/v1/b"])
def test_a_batch_rejects_only_the_deep_message(world: World, path: str, levels: int) -> None:
    deep = f'{{"type": "track", "event": "e", "userId": "u", "properties": {nested(levels)}}}'
    good = '{"type": "identify", "userId": "u", "traits": {"plan": "pro"}}'
    response = post(world, path, f'{{"batch": [{good}, {deep}, {good.replace("pro", "team")}]}}')
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (2, 0)
    field = deep_path("body.batch.1.properties")
    assert body["rejected"] == [
        {"index": 1, "details": {field: f"nested more than {MAX_NESTING} levels deep"}}
    ]
    assert stored(world) == 2


def test_a_batch_with_a_deep_context_is_a_400(world: World) -> None:
    body = f'{{"batch": [{{"type": "track", "event": "e", "userId": "u"}}], "context": {nested(300)}}}'
    response = post(world, "/v1/batch", body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == deep_path("body.context")
    assert stored(world) == 0


def test_write_key_in_the_body_with_a_deep_message(world: World) -> None:
    """analytics.js's way: no header, the key in the body; the depth check comes after the key check."""
    body = f'{{"writeKey": "{world.keys["events:write"]}", "event": "e", "userId": "u", "properties": {nested(300)}}}'
    response = world.client.post("/v1/track", content=body, headers={"Content-Type": "text/plain"})
    assert response.status_code == 400, response.text
    basic = base64.b64encode(f"{world.keys['events:write']}:".encode()).decode()
    good = world.client.post(
        "/v1/track", content='{"event": "e", "userId": "u"}', headers={"Authorization": f"Basic {basic}"}
    )
    assert good.status_code == 200, good.text
