"""`kill -9` of a real server process mid-stream loses no acknowledged event and stores none twice."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.processes import (
    create_key,
    free_port,
    kill_9,
    sending,
    start_server,
    stored_event_counts,
    wait_until,
)

pytestmark = pytest.mark.process  # a real server or CLI subprocess


def post_connects(http: httpx.Client, batch: int) -> list[str]:
    """20 `connect` events with their own message ids; the ids, if the server acknowledged them."""
    ids = [f"b{batch}-{i}" for i in range(20)]
    body = [
        {"event": "connect", "user_id": f"u-{id_}", "message_id": id_, "timestamp": 1_775_001_600_000}
        for id_ in ids
    ]
    return ids if http.post("/v0/events", json=body, timeout=5).status_code == 200 else []


def test_kill_9_mid_stream_loses_no_acknowledged_event(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = create_key(data_dir, "events:write")
    port = free_port()
    server = start_server(data_dir, port)
    with sending(port, key, post_connects) as acknowledged:
        try:  # let the shipper work concurrently for a while
            wait_until(lambda: len(acknowledged) >= 400, timeout=60, interval=0.01)
        finally:
            kill_9(server)

    # Restart once so the log is shipped by the server itself, then stop it cleanly.
    server = start_server(data_dir, port)
    server.send_signal(signal.SIGINT)
    server.wait(timeout=30)

    stored = stored_event_counts(data_dir)
    assert len(acknowledged) >= 400
    missing = [id_ for id_ in acknowledged if id_ not in stored]
    assert missing == []
    assert {id_: n for id_, n in stored.items() if n > 1} == {}
