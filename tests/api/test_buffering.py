"""Request bodies before authentication and the process-wide buffering budget, over the real app: the
request body is streamed chunk by chunk (httpx's ASGI transport hands the app a chunk only when it asks),
so a test sees exactly how many bytes the app pulled."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import httpx
import pytest
from fastapi import FastAPI

from funnels.api.buffering import MAX_BUFFERED_BYTES
from funnels.app import create_app
from funnels.services import Services
from funnels.store.idempotency import count
from tests.conftest import bearer

CHUNK = 64 * 1024
BIG = 24 * 1024 * 1024  # what the idempotency middleware used to buffer for anyone
CONCURRENT = 8


@dataclass
class Streamed:
    """A body of `size` bytes sent in chunks, counting what the app pulled."""

    size: int
    pulled: int = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        while self.pulled < self.size:
            chunk = b" " * min(CHUNK, self.size - self.pulled)
            self.pulled += len(chunk)
            yield chunk


def asgi_client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


# (path, headers): no credential, or a wrong one; with and without an Idempotency-Key
UNAUTHENTICATED: list[tuple[str, dict[str, str]]] = [
    ("/v0/events", {"Idempotency-Key": "k1"}),
    ("/v0/events", {**bearer("fk_not_a_key"), "Idempotency-Key": "k2"}),
    ("/v0/events", {}),
    ("/api/v1/identify", {"Idempotency-Key": "k3"}),
    ("/v0/keys", {"Idempotency-Key": "k4"}),
    ("/v0/keys", {}),  # its body model used to be read before its auth dependency ran
    ("/v0/keys", {**bearer("fk_not_a_key")}),
    ("/v0/config/reload", {"Idempotency-Key": "k5"}),
    ("/v0/actions/1/retry", {"Cookie": "funnels_session=ended", "Idempotency-Key": "k6"}),
]


@pytest.mark.parametrize(("path", "headers"), UNAUTHENTICATED)
def test_unauthenticated_bodies_are_not_read(services: Services, path: str, headers: dict[str, str]) -> None:
    app = create_app(services)

    async def main() -> list[tuple[httpx.Response, Streamed]]:
        bodies = [Streamed(BIG) for _ in range(CONCURRENT)]
        responses: list[httpx.Response | None] = [None] * len(bodies)

        async def send(index: int) -> None:
            async with asgi_client(app) as client:
                responses[index] = await client.post(path, content=bodies[index].chunks(), headers=headers)

        async with anyio.create_task_group() as group:
            for index in range(len(bodies)):
                group.start_soon(send, index)
        return [(response, body) for response, body in zip(responses, bodies, strict=True) if response]

    results = anyio.run(main)
    assert len(results) == CONCURRENT
    for response, body in results:
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "UNAUTHORIZED"
        assert body.pulled == 0
    assert app.state.body_budget.peak == 0


def test_over_the_budget_is_a_503_with_retry_after(services: Services, keys: dict[str, str]) -> None:
    """While one request holds most of the budget, the next body that does not fit gets the envelope and
    Retry-After, whether the idempotency middleware or the endpoint is reading it; then all is given back."""
    budget = 1_500_000
    app = create_app(services, max_buffered_bytes=budget)
    first_held = anyio.Event()
    finish_first = anyio.Event()

    async def held_body() -> AsyncIterator[bytes]:
        yield b"[" + b" " * 699_999
        first_held.set()  # the app asks for more: the first chunk is in its buffer
        await finish_first.wait()
        yield b"]"

    async def main() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        async with asgi_client(app) as client:
            headers = {**bearer(keys["events:write"]), "Content-Type": "application/json"}
            first: list[httpx.Response] = []

            async def send_first() -> None:
                first.append(
                    await client.post(
                        "/v0/events", content=held_body(), headers={**headers, "Idempotency-Key": "big-1"}
                    )
                )

            async with anyio.create_task_group() as group:
                group.start_soon(send_first)
                await first_held.wait()
                assert app.state.body_budget.in_use == 700_000
                over = Streamed(900_000)
                by_middleware = await client.post(
                    "/v0/events", content=over.chunks(), headers={**headers, "Idempotency-Key": "big-2"}
                )
                by_endpoint = await client.post(
                    "/v0/events", content=Streamed(900_000).chunks(), headers=headers
                )
                finish_first.set()
            return first[0], by_middleware, by_endpoint

    first, by_middleware, by_endpoint = anyio.run(main)
    for response in (by_middleware, by_endpoint):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        error = response.json()["error"]
        assert error["code"] == "SERVICE_UNAVAILABLE"
        assert error["doc_url"] == "/errors#service_unavailable"
    # the first request ran to its end: an empty array of events is a validation error, not a budget one
    assert first.status_code == 400, first.text
    assert first.json()["error"]["code"] == "INVALID_VALIDATION_REQUEST"
    assert app.state.body_budget.in_use == 0
    assert app.state.body_budget.peak <= budget


def test_the_default_budget_fits_the_largest_bodies() -> None:
    assert MAX_BUFFERED_BYTES >= 4 * BIG


def test_a_budget_refusal_is_not_stored_as_the_keys_response(
    services: Services, keys: dict[str, str]
) -> None:
    """A 503 asks the client to retry: the same Idempotency-Key then runs the request."""
    app = create_app(services, max_buffered_bytes=10)
    body = json.dumps({"event": "e", "user_id": "u"}).encode()

    async def main() -> httpx.Response:
        async with asgi_client(app) as client:
            headers = {**bearer(keys["events:write"]), "Idempotency-Key": "retry-me"}
            return await client.post("/v0/events", content=body, headers=headers)

    response = anyio.run(main)
    assert response.status_code == 503
    assert count(services.state) == 0


def test_bodies_read_before_or_right_after_auth_are_small(services: Services, keys: dict[str, str]) -> None:
    """The sign-in form is read before any key, `POST /v0/keys` right after the admin check: 16 KB each,
    and reading stops there."""
    app = create_app(services)

    async def main() -> list[tuple[httpx.Response, Streamed]]:
        results = []
        async with asgi_client(app) as client:
            for path, headers in (
                ("/login", {"Content-Type": "application/x-www-form-urlencoded"}),
                ("/v0/keys", {**bearer(keys["admin"]), "Content-Type": "application/json"}),
            ):
                body = Streamed(BIG)
                results.append((await client.post(path, content=body.chunks(), headers=headers), body))
        return results

    for response, body in anyio.run(main):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "BAD_REQUEST"
        assert "16 KB" in error["message"]
        assert body.pulled <= 4 * 16 * 1024 + 1024 + CHUNK  # read_json allows 4× the limit compressed
    assert app.state.body_budget.in_use == 0
