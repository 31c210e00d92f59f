"""A long analytics query never stalls the server (`api.deps.run_cancellable`, issue 16 item 4): analytics
requests run at once; ingestion and /healthz answer while a funnel runs; a client that goes away has its
queries killed; a query past the server's time limit is a 503 in the envelope naming the limit, from the
API and from `funnels query`. Real chDB with a couple of million events (tests/slow_funnels.py), a real
uvicorn server on a socket where a disconnect matters; every wait is for a state of `system.processes`,
never for time to pass, and "quickly" means "while the funnel still ran"."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import parse_funnel_query
from funnels.api.server import envelope_protocol
from funnels.app import create_app
from funnels.cli import app as cli
from funnels.services import Services
from funnels.store.chdb_events import ChdbEventStore
from funnels.store.events import EventStore
from tests.conftest import bearer
from tests.processes import free_port, wait_until
from tests.slow_funnels import PARAMS, add_events

pytestmark = pytest.mark.slow  # millions of events

USERS = 200_000  # 2M events: the funnel runs about a second here
FUNNEL_PATH = "/v0/funnel?" + urlencode(PARAMS)


def analytics_running(store: EventStore) -> int:
    """How many analytics queries (any request's budget: `funnels-…`) are running now."""
    row = store.query(
        "SELECT count() FROM system.processes WHERE startsWith(Settings['log_comment'], 'funnels-')"
    ).first()
    return int(row[0]) if row else 0


def cancelled_so_far(store: EventStore) -> int:
    """How many queries this process's engine has ended as cancelled (`system.errors`)."""
    row = store.query("SELECT sum(value) FROM system.errors WHERE name = 'QUERY_WAS_CANCELLED'").first()
    return int(row[0]) if row and row[0] is not None else 0


@pytest.fixture
def loaded(services: Services) -> Services:
    add_events(services.events, USERS)
    return services


@pytest.fixture
def served(loaded: Services) -> Iterator[int]:
    """The app on a real uvicorn server in this process (so the test reads the same chDB): its port."""
    port = free_port()
    config = uvicorn.Config(
        create_app(loaded), host="127.0.0.1", port=port, log_level="warning", http=envelope_protocol(None)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started)
    yield port
    server.should_exit = True
    thread.join()


def send_funnel(port: int, key: str) -> socket.socket:
    """A funnel request sent on a socket of its own, its answer not read (close it to go away)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"GET {FUNNEL_PATH} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    )
    return sock


def test_ingestion_and_healthz_answer_while_funnels_run_and_a_client_gone_is_cancelled(
    loaded: Services, served: int, keys: dict[str, str]
) -> None:
    store = loaded.events
    before = cancelled_so_far(store)
    first = send_funnel(served, keys["query:read"])
    wait_until(lambda: analytics_running(store) >= 1, interval=0.01)
    second = send_funnel(served, keys["query:read"])
    # Two analytics requests at once: both queries in system.processes together.
    wait_until(lambda: analytics_running(store) == 2, interval=0.01)
    with httpx.Client(base_url=f"http://127.0.0.1:{served}", timeout=30) as client:
        batch = client.post(
            "/v1/batch",
            json={"batch": [{"type": "track", "userId": "late", "event": "view"}]},
            headers=bearer(keys["events:write"]),
        )
        health = client.get("/healthz")
    still = analytics_running(store)
    assert batch.status_code == 200 and health.status_code == 200, (batch.text, health.text)
    assert still == 2, "the ingestion ack or /healthz waited for the funnels"
    first.close()  # the clients go away: their queries are killed, not run to their end
    second.close()
    wait_until(lambda: analytics_running(store) == 0, interval=0.01)
    assert cancelled_so_far(store) - before == 2


def test_a_client_that_stays_gets_the_answer(loaded: Services, served: int, keys: dict[str, str]) -> None:
    expected = run_funnel(loaded.events, parse_funnel_query(PARAMS))["data"]
    with httpx.Client(base_url=f"http://127.0.0.1:{served}", timeout=60) as client:
        answer = client.get(FUNNEL_PATH, headers=bearer(keys["query:read"]))
    assert answer.status_code == 200 and answer.json()["data"] == expected


def test_a_query_past_the_limit_is_a_503_naming_it(loaded: Services, keys: dict[str, str]) -> None:
    elapsed = run_funnel(loaded.events, parse_funnel_query(PARAMS))["statistics"]["elapsed"]
    loaded.query_timeout_seconds = limit = round(elapsed / 20, 3) or 0.001
    with TestClient(create_app(loaded)) as client:
        response = client.get(FUNNEL_PATH, headers=bearer(keys["query:read"]))
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "SERVICE_UNAVAILABLE" and error["doc_url"].endswith("#service_unavailable")
        assert error["details"] == {"store": "events", "reason": "query_timeout", "limit_seconds": limit}
        assert f"{limit:g} seconds" in error["message"] and "--query-timeout" in error["message"]
        loaded.query_timeout_seconds = None  # no limit: the same request answers
        assert client.get(FUNNEL_PATH, headers=bearer(keys["query:read"])).status_code == 200


def test_funnels_query_reports_the_limit(tmp_path: Path) -> None:
    store = ChdbEventStore(tmp_path / "events")  # the directory `funnels query` opens itself
    try:
        add_events(store, USERS)
    finally:
        store.close()
    args = ["query", "--data-dir", str(tmp_path), "--date-from", PARAMS["date_from"]]
    args += ["--date-to", PARAMS["date_to"], "--steps", PARAMS["steps"], "--breakdown", PARAMS["breakdown"]]
    result = CliRunner().invoke(cli, args, env={"FUNNELS_QUERY_TIMEOUT_SECONDS": "0.001"})
    assert result.exit_code == 1, result.output
    assert "longer than the limit of 0.001 seconds" in result.output
    assert "FUNNELS_QUERY_TIMEOUT_SECONDS" in result.output and "Traceback" not in result.output
    bad = CliRunner().invoke(cli, args, env={"FUNNELS_QUERY_TIMEOUT_SECONDS": "soon"})
    assert bad.exit_code == 2 and "is not a number of seconds" in bad.output
