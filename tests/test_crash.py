"""`kill -9` of a real server process mid-stream loses no acknowledged event and stores none twice."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx

from funnels.services import Services
from tests.processes import create_key, free_port, start_server


def test_kill_9_mid_stream_loses_no_acknowledged_event(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = create_key(data_dir, "events:write")
    port = free_port()
    server = start_server(data_dir, port)
    acknowledged: list[str] = []
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}
        ) as client:
            batch = 0
            while not stop.is_set():
                ids = [f"b{batch}-{i}" for i in range(20)]
                body = [
                    {
                        "event": "connect",
                        "user_id": f"u-{id_}",
                        "message_id": id_,
                        "timestamp": 1_775_001_600_000,
                    }
                    for id_ in ids
                ]
                try:
                    response = client.post("/v0/events", json=body, timeout=5)
                except httpx.HTTPError:
                    return  # the server died mid-request: this batch was never acknowledged
                if response.status_code == 200:
                    acknowledged.extend(ids)
                batch += 1

    sender = threading.Thread(target=send)
    sender.start()
    while len(acknowledged) < 400:  # let the shipper work concurrently for a while
        time.sleep(0.01)
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    stop.set()
    sender.join()

    # Restart once so the log is shipped by the server itself, then stop it cleanly.
    server = start_server(data_dir, port)
    server.send_signal(signal.SIGINT)
    server.wait(timeout=30)

    svc = Services.open(data_dir)
    try:
        svc.shipper.flush()
        rows = svc.events.query("SELECT event_id, count() FROM events GROUP BY event_id").rows
    finally:
        svc.close()
    stored = {event_id: int(count) for event_id, count in rows}
    assert len(acknowledged) >= 400
    missing = [id_ for id_ in acknowledged if id_ not in stored]
    assert missing == []
    assert {id_: n for id_, n in stored.items() if n > 1} == {}
