"""Automation fixtures: a config file in tmp_path, `Services` opened with it and a `ManualClock`, the app
with the worker off (tests drive it with `world.run()`), and keys for every scope.

chDB allows one open event store per process, so a test opens at most one world (`open_world` refuses a
second). Modules choose their config by overriding the `automation_config` fixture, or call `open_world`.
Tests under `tests/api/` import these fixtures by name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from funnels.app import create_app
from funnels.auth import create_key
from funnels.clock import ManualClock
from funnels.services import Services
from funnels.store.events import EventStore
from tests.conftest import bearer
from tests.receivers import NETWORK

START_MS = 1_775_001_600_000  # 2026-04-01T00:00:00Z
DAY_MS = 86_400_000
DEAD_URL = "http://127.0.0.1:9/never-called"  # the worker is not run in tests that use it

Config = dict[str, Any]


def default_config() -> Config:
    """Two models and the spec's onboarding funnel, plus funnels that exercise the step rule's corners."""
    hook = {"type": "webhook", "args": {"url": DEAD_URL}}
    return {
        "models": [{"name": "customer"}, {"name": "organization"}],
        "network": NETWORK,  # DEAD_URL is on loopback: a connection error, not a refused address
        "funnels": [
            {
                "id": "onboarding",
                "forModels": "customer",
                "steps": [
                    {
                        "event": "sign_up",
                        "actions": [
                            hook,
                            {
                                "type": "webhook",
                                "delay": "3d",
                                "unless": "development_api_call",
                                "args": {"url": DEAD_URL, "body": {"id": "{{ ids[0] }}"}},
                            },
                        ],
                    },
                    {"event": "development_api_call", "actions": hook},
                    {"event": "production_api_call", "actions": hook},
                ],
            },
            {
                "id": "twice",
                "forModels": "customer",
                "steps": [
                    {"event": "visit", "actions": hook},
                    {"event": "visit", "actions": hook},
                    {"event": "buy", "actions": hook},
                ],
            },
        ],
    }


@dataclass
class World:
    """One server: its services, clock, config file, an HTTP client on the app, and keys."""

    svc: Services
    clock: ManualClock
    client: TestClient
    config_path: Path
    keys: dict[str, str]  # "events:write", "query:read", "admin"

    @property
    def admin(self) -> dict[str, str]:
        return bearer(self.keys["admin"])

    @property
    def writer(self) -> dict[str, str]:
        return bearer(self.keys["events:write"])

    def post(self, path: str, body: Any, status: int = 200) -> Any:
        """POST with the events:write key; the JSON answer, after checking the status."""
        response = self.client.post(path, json=body, headers=self.writer)
        assert response.status_code == status, response.text
        return response.json()

    def identify(self, ids: list[Any], model: str = "customer", **fields: Any) -> dict[str, Any]:
        """One identify; its single result."""
        answer = self.post("/api/v1/identify", {"model": model, "ids": ids, **fields})
        (result,) = answer["results"]
        return result  # type: ignore[no-any-return]

    def event(self, name: str, ids: list[Any], **fields: Any) -> dict[str, Any]:
        """One `/api/v1/events` event; its single result."""
        answer = self.post("/api/v1/events", {"name": name, "ids": ids, **fields})
        (result,) = answer["results"]
        return result  # type: ignore[no-any-return]

    def get(self, path: str, expect: int = 200, **params: Any) -> Any:
        """GET with the admin key; `params` are the query, `expect` the status it must answer."""
        response = self.client.get(path, params=params, headers=self.admin)
        assert response.status_code == expect, response.text
        return response.json()

    def jobs(self, **filters: Any) -> list[dict[str, Any]]:
        """The delivery log (up to 200 jobs), oldest first."""
        return list(reversed(self.get("/v0/actions", size=200, **filters)["data"]))

    def job(self, job_id: int) -> dict[str, Any]:
        return self.get(f"/v0/actions/{job_id}")  # type: ignore[no-any-return]

    def run(self, advance_ms: int = 0) -> int:
        """Move the clock, then let the worker deliver everything due; how many jobs it handled."""
        self.clock.advance(advance_ms)
        return self.svc.worker.run_until_idle()

    def write_config(self, config: Config) -> None:
        self.config_path.write_text(json.dumps(config))

    def stored_events(self, columns: str = "event, user_key", where: str = "1") -> list[dict[str, Any]]:
        self.svc.shipper.flush()
        return self.svc.events.query(
            f"SELECT {columns} FROM events WHERE {where} ORDER BY ts, event_id"
        ).dicts()


def satisfied(result: dict[str, Any]) -> list[tuple[str, int]]:
    """A result's satisfied steps as sorted (funnel, step) pairs."""
    return sorted((item["funnel"], item["step"]) for item in result["satisfied"])


def scheduled(result: dict[str, Any]) -> list[tuple[str, int, int]]:
    """A result's scheduled actions as sorted (funnel, step, action) triples."""
    return sorted((item["funnel"], item["step"], item["action"]) for item in result["scheduled"])


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The envelope's `error` object, after checking status and code."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert error["doc_url"].endswith(f"/errors#{code.lower()}")
    return error


@pytest.fixture
def automation_config() -> Config:
    return default_config()


@pytest.fixture
def open_world(
    tmp_path: Path, state_backend: str, request: pytest.FixtureRequest
) -> Iterator[Callable[[Config], World]]:
    """A factory: `open_world(config)` writes the config, opens the services and the app (once per test);
    the state store's dialect is `state_backend`'s, the event store the process's shared one (see
    tests/conftest.py)."""
    opened: list[tuple[World, TestClient]] = []
    state_url = request.getfixturevalue("postgres_url") if state_backend == "postgresql" else None
    events: EventStore = request.getfixturevalue("shared_events")

    def open_(config: Config) -> World:
        assert not opened, "chDB allows one open event store per process: one world per test"
        config_path = tmp_path / "funnels.json"
        config_path.write_text(json.dumps(config))
        clock = ManualClock(START_MS)
        svc = Services.open(
            tmp_path / "data", clock, config_path=config_path, state_url=state_url, events=events
        )
        keys = {
            scope: create_key(svc.state, clock, [scope]) for scope in ("events:write", "query:read", "admin")
        }
        client = TestClient(create_app(svc, run_worker=False))
        client.__enter__()
        world = World(svc=svc, clock=clock, client=client, config_path=config_path, keys=keys)
        opened.append((world, client))
        return world

    yield open_
    for world, client in opened:
        client.__exit__(None, None, None)
        world.svc.close()


@pytest.fixture
def world(open_world: Callable[[Config], World], automation_config: Config) -> World:
    return open_world(automation_config)
