"""`kill -9` of a real server mid-stream loses no acknowledged event and no scheduled action, and a receiver
that drops repeats by idempotency key acts on every action exactly once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.processes import client, create_key, free_port, kill_9, sending, start_server, wait_until
from tests.receivers import NETWORK, HttpReceiver, SmtpReceiver, now_and_later_webhooks

pytestmark = pytest.mark.process  # a real server or CLI subprocess

BATCH = 10


def crash_config(receiver: HttpReceiver) -> dict[str, object]:
    return {
        "models": [{"name": "customer"}],
        "network": NETWORK,
        "delivery": {"timeout": "1s", "backoffBase": "1s", "backoffMax": "2s", "maxAttempts": 20},
        "funnels": [
            {
                "id": "signup",
                "forModels": "customer",
                "steps": [
                    {
                        "event": "sign_up",
                        "actions": now_and_later_webhooks(receiver),
                    }
                ],
            }
        ],
    }


def post_signups(http: httpx.Client, batch: int) -> list[str]:
    """Identify `BATCH` customers, then their `sign_up`s; their ids, if the server acknowledged the events."""
    ids = [f"c{batch}-{i}" for i in range(BATCH)]
    http.post(
        "/api/v1/identify", json=[{"model": "customer", "ids": [id_]} for id_ in ids], timeout=5
    ).raise_for_status()  # not identified: stop sending
    signed = http.post(
        "/api/v1/events",
        json=[{"name": "sign_up", "ids": [id_], "messageId": f"s-{id_}"} for id_ in ids],
        timeout=5,
    )
    return ids if signed.status_code == 200 else []


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
    with sending(port, key, post_signups) as acknowledged:
        try:  # until deliveries are under way
            wait_until(lambda: len(http_receiver.requests) >= 40, timeout=60, interval=0.01)
        finally:
            kill_9(server)
    assert len(acknowledged) >= 40

    server = start_server(data_dir, port, "--config", str(config))
    expected = {(path, id_) for id_ in acknowledged for path in ("/now", "/later")}
    unfinished: dict[str, int] = {}
    try:
        with client(port, key) as http:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                delivered = {(r.path, r.json["n"]) for r in http_receiver.unique()}
                unfinished = {
                    status: http.get("/v0/actions", params={"status": status, "size": 1}).json()["total"]
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


def test_kill_9_keeps_frequency_caps(tmp_path: Path, http_receiver: HttpReceiver) -> None:
    """Each sign_up makes two webhooks due at once, and a cap allows one webhook a day per customer: across a
    kill -9 mid-stream (some sends in flight, some outcomes unrecorded) and a restart, each acknowledged
    customer's receiver acts on exactly one of them, and the other ends `capped`."""
    url = http_receiver.url
    caps = {
        "models": [{"name": "customer"}],
        "network": NETWORK,
        "delivery": {"timeout": "1s", "backoffBase": "1s", "backoffMax": "2s", "maxAttempts": 20},
        "limits": [{"channel": "webhook", "max": 1, "per": "1d"}],
        "funnels": [
            {
                "id": name,
                "forModels": "customer",
                "steps": {
                    "event": "sign_up",
                    "actions": {
                        "type": "webhook",
                        "args": {"url": f"{url}/{name}", "body": {"n": "{{ ids[0] }}"}},
                    },
                },
            }
            for name in ("a", "b")
        ],
    }
    config = tmp_path / "funnels.json"
    config.write_text(json.dumps(caps))
    data_dir = tmp_path / "data"
    key = create_key(data_dir, "events:write", "admin")
    port = free_port()
    for path in ("/a", "/b"):
        for _ in range(5_000):  # slow receiver: some sends are in flight when the server dies
            http_receiver.reply(path, 200, {"ok": True}, delay_s=0.02)
    server = start_server(data_dir, port, "--config", str(config))
    with sending(port, key, post_signups) as acknowledged:
        try:
            wait_until(lambda: len(http_receiver.requests) >= 30, timeout=60, interval=0.01)
        finally:
            kill_9(server)
    assert len(acknowledged) >= 30

    server = start_server(data_dir, port, "--config", str(config))
    totals: dict[str, int] = {}
    try:
        with client(port, key) as http:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                totals = {
                    status: http.get("/v0/actions", params={"status": status, "size": 1}).json()["total"]
                    for status in ("scheduled", "sending", "failed", "sent", "capped")
                }
                if totals["sent"] + totals["capped"] >= 2 * len(acknowledged) and not totals["sending"]:
                    break
                time.sleep(0.2)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)

    assert totals["scheduled"] == totals["sending"] == totals["failed"] == 0, totals
    delivered: dict[str, set[str]] = {}
    for request in http_receiver.unique():  # what a receiver that drops repeated keys acts on
        delivered.setdefault(request.json["n"], set()).add(request.path)
    assert {id_: len(paths) for id_, paths in delivered.items() if len(paths) != 1} == {}  # never both
    assert set(acknowledged) <= set(delivered)  # and every acknowledged customer got one
    assert totals["capped"] == len(delivered) == totals["sent"]


def delivery_children(server_pid: int) -> list[int]:
    """The processes `funnels serve` started (its delivery process)."""
    found: list[int] = []
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        found += [int(pid) for pid in (task / "children").read_text().split()]
    return found


def test_kill_9_of_the_server_and_its_delivery_process_keeps_suppressions_and_caps(
    tmp_path: Path, smtp_receiver: SmtpReceiver
) -> None:
    """Ten customers get a welcome email with a one-click link; five unsubscribe through it (a real POST to
    the real server). Then the server and its delivery process are killed with -9 while each customer's
    reminder and nudge (same topic) are pending, and a cap allows two emails a day. After a restart the five
    get nothing more (both end `suppressed`), and each of the others gets the reminder and not the nudge
    (`capped`): two emails, never three."""

    def email(subject: str, **fields: object) -> dict[str, object]:
        args = {"to": "{{ modelProperties.email }}", "subject": subject, "text": "{{ unsubscribe_url }}"}
        return {"type": "email", "args": args, **fields}

    config = tmp_path / "funnels.json"
    config.write_text(
        json.dumps(
            {
                "models": [{"name": "customer"}],
                "network": NETWORK,
                "email": {
                    "host": smtp_receiver.host,
                    "port": smtp_receiver.port,
                    "from": "team@funnels.test",
                },
                "limits": [{"channel": "email", "max": 2, "per": "1d"}],
                "funnels": [
                    {
                        "id": "onboarding",
                        "forModels": "customer",
                        "steps": {
                            "event": "sign_up",
                            "actions": [
                                email("Welcome"),
                                email("Reminder", delay="8s"),
                                email("Nudge", delay="8s"),
                            ],
                        },
                    }
                ],
            }
        )
    )
    data_dir = tmp_path / "data"
    key = create_key(data_dir, "events:write", "admin")
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    server = start_server(data_dir, port, "--config", str(config), "--public-url", public)
    names = [f"c{i}" for i in range(10)]
    try:
        with client(port, key) as http:
            http.post(
                "/api/v1/identify",
                json=[
                    {"model": "customer", "ids": [n], "properties": {"email": f"{n}@example.com"}}
                    for n in names
                ],
            ).raise_for_status()
            http.post(
                "/api/v1/events", json=[{"name": "sign_up", "ids": [n]} for n in names]
            ).raise_for_status()
            welcomes = smtp_receiver.wait_for(10)
            links = {mail.rcpt_tos[0]: mail.message.get_content().strip() for mail in welcomes}
            leaving = names[:5]
            with httpx.Client() as browser:
                for name in leaving:
                    url = links[f"{name}@example.com"]
                    assert url.startswith(f"{public}/u/"), url
                    assert browser.post(url, content="List-Unsubscribe=One-Click").status_code == 200
        children = delivery_children(server.pid)
        assert len(children) == 1, children
    finally:
        kill_9(server)
    for child in children:  # the delivery process too, before the reminders are due
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    assert len(smtp_receiver.messages) == 10  # nothing but the welcomes went before the kill

    server = start_server(data_dir, port, "--config", str(config), "--public-url", public)
    statuses: dict[str, int] = {}
    try:
        with client(port, key) as http:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                statuses = {
                    status: http.get("/v0/actions", params={"status": status, "size": 1}).json()["total"]
                    for status in ("scheduled", "sending", "sent", "suppressed", "capped")
                }
                if statuses["sent"] + statuses["suppressed"] + statuses["capped"] == 30:
                    break
                time.sleep(0.2)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert statuses == {"scheduled": 0, "sending": 0, "sent": 15, "suppressed": 10, "capped": 5}
    received: dict[str, list[str]] = {}
    for mail in smtp_receiver.messages:
        received.setdefault(mail.rcpt_tos[0], []).append(str(mail.message["Subject"]))
    assert {to: subjects for to, subjects in received.items()} == {
        **{f"{name}@example.com": ["Welcome"] for name in leaving},
        **{f"{name}@example.com": ["Welcome", "Reminder"] for name in names[5:]},
    }
