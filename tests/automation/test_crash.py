"""`kill -9` of a real server mid-stream loses no acknowledged event and no scheduled action, and a receiver
that drops repeats by idempotency key acts on every action exactly once."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.processes import create_key, free_port, start_server
from tests.receivers import HttpReceiver

BATCH = 10


def crash_config(receiver: HttpReceiver) -> dict[str, object]:
    return {
        "models": [{"name": "customer"}],
        "delivery": {"timeout": "1s", "backoffBase": "1s", "backoffMax": "2s", "maxAttempts": 20},
        "funnels": [
            {
                "id": "signup",
                "forModels": "customer",
                "steps": [
                    {
                        "event": "sign_up",
                        "actions": [
                            {
                                "type": "webhook",
                                "args": {"url": f"{receiver.url}/now", "body": {"n": "{{ ids[0] }}"}},
                            },
                            {
                                "type": "webhook",
                                "delay": "3s",
                                "args": {"url": f"{receiver.url}/later", "body": {"n": "{{ ids[0] }}"}},
                            },
                        ],
                    }
                ],
            }
        ],
    }


def test_kill_9_loses_no_scheduled_action_and_delivers_each_once(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    config = tmp_path / "funnels.json"
    config.write_text(json.dumps(crash_config(http_receiver)))
    data_dir = tmp_path / "data"
    key = create_key(data_dir, "events:write", "admin")
    port = free_port()
    for _ in range(10_000):  # slow receiver: some sends are in flight when the server dies
        http_receiver.reply("/now", 200, {"ok": True}, delay_s=0.02)
    server = start_server(data_dir, port, "--config", str(config))
    acknowledged: list[str] = []
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}
        ) as client:
            batch = 0
            while not stop.is_set():
                ids = [f"c{batch}-{i}" for i in range(BATCH)]
                try:
                    identified = client.post(
                        "/api/v1/identify",
                        json=[{"model": "customer", "ids": [id_]} for id_ in ids],
                        timeout=5,
                    )
                    if identified.status_code != 200:
                        return
                    signed = client.post(
                        "/api/v1/events",
                        json=[{"name": "sign_up", "ids": [id_], "messageId": f"s-{id_}"} for id_ in ids],
                        timeout=5,
                    )
                except httpx.HTTPError:
                    return  # the server died mid-request: this batch was never acknowledged
                if signed.status_code == 200:
                    acknowledged.extend(ids)
                batch += 1

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 60
    while len(http_receiver.requests) < 40 and time.monotonic() < deadline:  # deliveries are under way
        time.sleep(0.01)
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    stop.set()
    sender.join()
    assert len(acknowledged) >= 40

    server = start_server(data_dir, port, "--config", str(config))
    expected = {(path, id_) for id_ in acknowledged for path in ("/now", "/later")}
    unfinished: dict[str, int] = {}
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}
        ) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                delivered = {(r.path, r.json["n"]) for r in http_receiver.unique()}
                unfinished = {
                    status: client.get("/v0/actions", params={"status": status, "size": 1}).json()["total"]
                    for status in ("scheduled", "sending", "failed", "dead")
                }
                if expected <= delivered and not any(unfinished.values()):
                    break
                time.sleep(0.2)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)

    # Every job the log holds was delivered and recorded, including those leased by the killed process.
    assert unfinished == {"scheduled": 0, "sending": 0, "failed": 0, "dead": 0}
    unique = http_receiver.unique()
    delivered_pairs = [(r.path, r.json["n"]) for r in unique]
    assert sorted(expected - set(delivered_pairs)) == []  # nothing acknowledged was lost
    assert len(delivered_pairs) == len(set(delivered_pairs))  # one idempotency key per action, never two
    for requests in http_receiver.by_idempotency_key().values():  # repeats of one key are the same action
        assert len({(r.path, r.body) for r in requests}) == 1
