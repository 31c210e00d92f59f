"""Shared fixtures: real stores in a temporary data directory, the ASGI app, API keys.

chDB allows one open event store per process at a time, so a test opens at most one `Services` (the
`services` fixture); tests that need many event sets reuse it and empty it (`EventStore.truncate`) between them.
The embedded event store is shared by the tests of a process and emptied after each (tests/shared_events.py):
`services.data_dir` holds the test's state store, not its events. A test that opens an embedded store of its
own closes the shared one by doing so (the next test reopens it).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from funnels.app import create_app
from funnels.auth import create_key
from funnels.clock import ManualClock
from funnels.services import Services
from funnels.store.chdb_events import ChdbEventStore
from tests.shared_events import SHARED, install_release_guard

install_release_guard()  # an embedded store opened on another directory closes the shared one first


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_ms=1_775_001_600_000)  # 2026-04-01T00:00:00Z


@pytest.fixture
def state_backend(request: pytest.FixtureRequest) -> str:
    """The state store's dialect for `services`: SQLite (or $FUNNELS_TEST_STATE: `postgresql` runs any suite
    there) unless a module runs on both (`tests.postgres.BOTH`)."""
    backend: str = getattr(request, "param", os.environ.get("FUNNELS_TEST_STATE", "sqlite"))
    return backend


@pytest.fixture
def events_backend() -> str:
    """The event store's backend for `services`: embedded chDB, or with $FUNNELS_TEST_EVENTS=clickhouse-connect
    (`make test`'s third pass) the server backend on clickhouse-connect's chDB interface."""
    return os.environ.get("FUNNELS_TEST_EVENTS", "chdb")


@pytest.fixture
def shared_events(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbEventStore]:
    """The process's embedded event store (tests/shared_events.py), emptied and checked after the test."""
    try:
        yield SHARED.acquire(tmp_path_factory)
    finally:
        SHARED.reset()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    SHARED.release()  # the shared event store closes before the process exits, as each test's store did


@pytest.fixture
def services(
    tmp_path: Path,
    clock: ManualClock,
    state_backend: str,
    events_backend: str,
    request: pytest.FixtureRequest,
) -> Iterator[Services]:
    url = request.getfixturevalue("postgres_url") if state_backend == "postgresql" else None
    if events_backend == "clickhouse-connect":
        events_url = f"chdb://{tmp_path / 'server-events'}"
        svc = Services.open(tmp_path / "data", clock, state_url=url, events_url=events_url)
    else:
        shared: ChdbEventStore = request.getfixturevalue("shared_events")
        svc = Services.open(tmp_path / "data", clock, state_url=url, events=shared)
    yield svc
    svc.close()


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services)) as test_client:
        yield test_client


@pytest.fixture
def keys(services: Services, clock: ManualClock) -> dict[str, str]:
    """One key per scope, plus `all` with every scope."""
    made = {
        scope: create_key(services.state, clock, [scope]) for scope in ("events:write", "query:read", "admin")
    }
    made["all"] = create_key(services.state, clock, ["events:write", "query:read", "admin"])
    return made


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


from tests.receivers import HttpReceiver, SmtpReceiver  # noqa: E402 (appended with the fixtures that use it)


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    """A real HTTP server on 127.0.0.1 that records requests (see tests/receivers.py)."""
    with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture
def smtp_receiver() -> Iterator[SmtpReceiver]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that records messages (see tests/receivers.py)."""
    with SmtpReceiver() as receiver:
        yield receiver


from tests.postgres import postgres_database, postgres_url, state_target  # noqa: E402, F401 (fixtures)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The browser tests (tests/web's `*_browser.py`) are marked `browser`. With
    FUNNELS_TEST_STATE=postgresql (`make test`'s second pass), only the tests whose state store is the
    `services` fixture's run: the others would repeat the first pass's SQLite runs unchanged."""
    for item in items:
        if item.path.name.endswith("_browser.py") or item.path.name == "test_browser.py":
            item.add_marker(pytest.mark.browser)
    if os.environ.get("FUNNELS_TEST_STATE") != "postgresql":
        return
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        param = callspec.params.get("state_backend") if callspec is not None else None
        uses_state = "state_backend" in getattr(item, "fixturenames", ())
        uses_state = uses_state and item.get_closest_marker("sqlite_only") is None
        (keep if uses_state and param in (None, "postgresql") else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(autouse=True)
def _fast_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In `make test-fast` (FUNNELS_TEST_FAST=1), a test that starts a subprocess without the `process`
    marker fails, saying so: the marker, not a list to keep, is what keeps the fast set fast."""
    if os.environ.get("FUNNELS_TEST_FAST") != "1" or request.node.get_closest_marker("process"):
        return
    name = request.node.nodeid

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{name} starts a subprocess: mark it @pytest.mark.process")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
