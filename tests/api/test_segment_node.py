"""The real @segment/analytics-node (npm, pinned; run with the machine's node) against a real `funnels serve`:
`analytics_node.mjs` sends identify, page and track, flushes, and the events are in the store. The same
server is started with `--cors-origins`, checked over HTTP at the end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.processes import create_key, free_port, start_server, wait_until

pytestmark = pytest.mark.process  # a real server or CLI subprocess

SCRIPT = Path(__file__).parent / "analytics_node.mjs"
ROOT = Path(__file__).parent.parent.parent
ALLOWED = "https://shop.example"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """A `funnels serve` (CORS for one origin): its URL, an events:write key and a query:read key."""
    data_dir: Path = tmp_path_factory.mktemp("node") / "data"
    write_key = create_key(data_dir, "events:write")
    query_key = create_key(data_dir, "query:read")
    port = free_port()
    server = start_server(data_dir, port, "--cors-origins", f"{ALLOWED},http://localhost:3000")
    try:
        yield f"http://127.0.0.1:{port}", write_key, query_key
    finally:
        server.terminate()
        server.wait(30)


def send_with_node(url: str, key: str, run: str) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is missing: the machine's Node.js runs the SDK (npm needs it for `make install` too)"
    assert (ROOT / "node_modules" / "@segment" / "analytics-node").is_dir(), "run `make install`"
    done = subprocess.run(
        [node, str(SCRIPT), url, key, run], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def names(url: str, key: str) -> dict[tuple[str, str], int]:
    today = datetime.now(UTC).date().isoformat()
    response = httpx.get(
        f"{url}/v0/events/names",
        params={"date_from": today, "date_to": today},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return {(row["type"], row["event"]): row["count"] for row in response.json()["data"]}


def test_analytics_node_delivers_identify_page_and_track(served: tuple[str, str, str]) -> None:
    url, write_key, query_key = served
    sent = send_with_node(url, write_key, "1")
    assert sent["errors"] == []
    assert sorted(sent["results"], key=lambda item: item["call"]) == [
        {"call": "identify", "error": None},
        {"call": "page", "error": None},
        {"call": "track", "error": None},
    ]
    assert sent["requests"] == [f"POST {url}/v1/batch"]  # one batch of three, to this server only

    counts = wait_until(lambda: (found := names(url, query_key)).get(("track", "Signed Up")) and found)
    assert counts == {("identify", "identify"): 1, ("page", "Pricing"): 1, ("track", "Signed Up"): 1}
    today = datetime.now(UTC).date().isoformat()
    steps = [
        {"type": "identify", "event": "identify", "name": "identified"},
        {"type": "track", "event": "Signed Up", "name": "signed up"},
    ]
    response = httpx.get(
        f"{url}/v0/funnel",
        params={"date_from": today, "date_to": today, "steps": json.dumps(steps)},
        headers={"Authorization": f"Bearer {query_key}"},
        timeout=30,
    )
    assert [row["users"] for row in response.json()["data"]] == [1, 1]


def test_analytics_node_with_an_unknown_key_is_refused_and_stores_nothing(
    served: tuple[str, str, str],
) -> None:
    url, _write_key, query_key = served
    before = names(url, query_key)
    sent = send_with_node(url, "fk_0123456789ab_not-a-key", "2")
    assert len(sent["results"]) == 3
    assert all("401" in str(item["error"]) for item in sent["results"]), sent["results"]
    assert sent["requests"] and all(request == f"POST {url}/v1/batch" for request in sent["requests"])
    assert names(url, query_key) == before


def test_the_served_cors_allow_list(served: tuple[str, str, str]) -> None:
    url = served[0]
    asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = httpx.options(f"{url}/v1/t", headers={"Origin": ALLOWED, **asked}, timeout=30)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ALLOWED
    refused = httpx.options(f"{url}/v1/t", headers={"Origin": "https://evil.example", **asked}, timeout=30)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "BAD_REQUEST"
    assert "access-control-allow-origin" not in refused.headers


def test_a_bad_cors_origins_stops_the_server_at_once(tmp_path: Path) -> None:
    from tests.processes import BIN

    result = subprocess.run(
        [str(BIN), "serve", "--data-dir", str(tmp_path / "data")],
        env={"PATH": str(Path(sys.executable).parent), "FUNNELS_CORS_ORIGINS": "https://a.example/path"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "--cors-origins" in result.stderr and "is not an origin" in result.stderr
