"""A disk that refuses writes, on a real server process: ingest answers a retryable 503 naming the store,
/healthz fails while writes fail, and both recover by themselves when there is room again; nothing
acknowledged is lost and what was refused is stored when the client sends it again.

The full disk is the server's file-size limit (RLIMIT_FSIZE, lowered on the running process with
`prlimit`): a write past it fails with EFBIG as a write to a full disk fails with ENOSPC (Python ignores
SIGXFSZ), and SQLite reports both as a failed write.
"""

from __future__ import annotations

import resource
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.processes import client, create_key, free_port, start_server, stored_event_counts, wait_until

pytestmark = pytest.mark.process  # a real server or CLI subprocess

PADDING = "p" * 1000  # each event ~1 KB, so each batch grows the write-ahead log by ~60 KB


def batch(number: int) -> list[dict[str, Any]]:
    return [
        {
            "event": "connect",
            "user_id": f"u-{number}-{i}",
            "message_id": f"b{number}-{i}",
            "timestamp": 1_775_001_600_000,
            "properties": {"padding": PADDING},
        }
        for i in range(50)
    ]


def ids_of(events: list[dict[str, Any]]) -> list[str]:
    return [event["message_id"] for event in events]


def test_a_full_disk_is_a_retryable_503_and_heals_by_itself(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = create_key(data_dir, "events:write")
    port = free_port()
    server = start_server(data_dir, port)
    try:
        state_files = [data_dir / "state.sqlite3", data_dir / "state.sqlite3-wal"]
        limit = max(path.stat().st_size for path in state_files if path.exists()) + 256 * 1024
        _soft, hard = resource.prlimit(server.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (limit, hard))

        acknowledged: list[str] = []
        refused: list[dict[str, Any]] | None = None
        with client(port, key) as http:
            for number in range(200):  # ~12 MB at most: far past the limit
                events = batch(number)
                answer = http.post("/v0/events", json=events)
                if answer.status_code == 200:
                    acknowledged += ids_of(events)
                    continue
                assert answer.status_code == 503, answer.text
                error = answer.json()["error"]
                assert error["code"] == "SERVICE_UNAVAILABLE"
                assert error["details"]["store"] == "state"
                assert "disk" in error["details"]["reason"]
                assert "disk is full" in error["message"]
                assert int(answer.headers["Retry-After"]) > 0
                refused = events
                break
            assert refused is not None, "the file-size limit was never reached"
            assert acknowledged, "nothing was stored before the limit"

            health = http.get("/healthz")
            assert health.status_code == 503, health.text
            assert health.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
            assert health.json()["error"]["details"]["store"] == "state"
            assert http.get("/healthz").status_code == 503  # a small write fitting is not recovery

            resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (hard, hard))  # room again
            wait_until(lambda: http.get("/healthz").status_code == 200)
            retried = http.post("/v0/events", json=refused)
            assert retried.status_code == 200, retried.text
            assert retried.json()["accepted"] == len(refused)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)

    stored = stored_event_counts(data_dir)
    expected = [*acknowledged, *ids_of(refused)]
    assert [id_ for id_ in expected if id_ not in stored] == []
    assert {id_: n for id_, n in stored.items() if n > 1} == {}
    assert len(stored) == len(expected)
