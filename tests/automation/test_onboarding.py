"""The spec's onboarding example end to end, through the HTTP API, with real receivers and a moved clock.

Three customers: Ada converts fully, Bob stalls (gets the 3-day reminder), Cy reaches
`development_api_call` in time (reminder cancelled). Every receiver must get exactly the expected messages.
Then the reminder scheduled and cancelled in one transaction: `sign_up` and `development_api_call` in one
`/api/v1/events` request, in one Segment batch, and in two requests that share a group commit.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Queue
from typing import Any

import pytest
from fastapi.testclient import TestClient

from funnels.app import create_app
from funnels.auth import create_key
from funnels.automation.engine import Outcome, Signal
from funnels.channels.webhook import verify_signature
from funnels.clock import ManualClock
from funnels.examples import onboarding_funnel
from funnels.services import Services
from funnels.store.events import EventStore
from tests.conftest import bearer
from tests.receivers import NETWORK, HttpReceiver, SmtpReceiver

DAY_MS = 86_400_000
SECRET = "whsec-test"


def onboarding_config(http: HttpReceiver, smtp: SmtpReceiver) -> dict[str, object]:
    return {
        "models": [{"name": "customer"}, {"name": "organization"}],
        "network": NETWORK,
        "webhook": {"secret": SECRET},
        "email": {"host": smtp.host, "port": smtp.port, "security": "none", "from": "team@funnels.test"},
        "sms": {"accountSid": "AC123", "authToken": "tok", "from": "+15550000000", "baseUrl": http.url},
        "funnels": [
            onboarding_funnel(
                slack={
                    "url": f"{http.url}/slack",
                    "content": "{{ displayName }} signed up ({{ modelProperties.plan }})",
                },
                reminder={
                    "to": "{{ modelProperties.email }}",
                    "subject": "Need a hand, {{ displayName }}?",
                    "text": "You signed up 3 days ago via {{ eventProperties.source }}.",
                },
                converted=[
                    {
                        "type": "webhook",
                        "args": {
                            "url": f"{http.url}/congrats",
                            "body": {"customer": "{{ ids[0] }}", "step": "{{ step }}"},
                        },
                    },
                    {
                        "type": "sms",
                        "args": {"to": "{{ modelProperties.phone }}", "body": "Congrats {{ displayName }}!"},
                    },
                ],
            )
        ],
    }


@pytest.fixture
def world(
    tmp_path: Path, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver, shared_events: EventStore
) -> Iterator[tuple[TestClient, Services, ManualClock, str]]:
    config = tmp_path / "funnels.json"
    config.write_text(json.dumps(onboarding_config(http_receiver, smtp_receiver)))
    clock = ManualClock()
    svc = Services.open(tmp_path / "data", clock, config_path=config, events=shared_events)
    key = create_key(svc.state, clock, ["events:write", "admin"])
    with TestClient(create_app(svc, run_worker=False)) as client:
        yield client, svc, clock, key
    svc.close()


def test_onboarding_three_customers(
    world: tuple[TestClient, Services, ManualClock, str],
    http_receiver: HttpReceiver,
    smtp_receiver: SmtpReceiver,
) -> None:
    client, svc, clock, key = world
    start = clock.now_ms()

    def post(path: str, body: object) -> dict[str, object]:
        response = client.post(path, json=body, headers=bearer(key))
        assert response.status_code == 200, response.text
        return response.json()

    def advance(ms: int) -> None:
        clock.advance(ms)
        svc.worker.run_until_idle()

    for number, name in ((1, "Ada"), (2, "Bob"), (3, "Cy")):
        post(
            "/api/v1/identify",
            {
                "model": "customer",
                "ids": [number, f"{name.lower()}@example.com"],
                "displayName": name,
                "properties": {
                    "email": f"{name.lower()}@example.com",
                    "plan": "trial",
                    "phone": f"+1555000000{number}",
                },
            },
        )
    signed = post(
        "/api/v1/events",
        [
            {"name": "sign_up", "ids": [n], "properties": {"source": "ads"}, "timestamp": start}
            for n in (1, 2, 3)
        ],
    )
    assert [len(result["scheduled"]) for result in signed["results"]] == [2, 2, 2]  # type: ignore[index]
    advance(0)
    assert sorted(r.json["text"] for r in http_receiver.requests) == [
        "Ada signed up (trial)",
        "Bob signed up (trial)",
        "Cy signed up (trial)",
    ]

    advance(DAY_MS)  # day 1: Ada integrates
    dev = post("/api/v1/events", {"name": "development_api_call", "ids": ["ada@example.com"]})
    assert dev["results"][0]["cancelled"]  # type: ignore[index]
    advance(DAY_MS)  # day 2: Ada goes live, Cy integrates (in time)
    post("/api/v1/events", {"event": "production_api_call", "ids": [1]})
    post("/api/v1/event", {"name": "development_api_call", "ids": [3], "model": "customer"})
    advance(0)
    advance(DAY_MS - 1)  # one millisecond before the reminder is due: nothing for Bob yet
    assert smtp_receiver.messages == []
    advance(1)  # day 3: Bob's reminder

    mails = smtp_receiver.messages
    assert [(m.rcpt_tos, m.message["Subject"]) for m in mails] == [(["bob@example.com"], "Need a hand, Bob?")]
    assert mails[0].message.get_content().strip() == "You signed up 3 days ago via ads."
    congrats = [r for r in http_receiver.requests if r.path == "/congrats"]
    assert [r.json for r in congrats] == [{"customer": "1", "step": "production_api_call"}]
    assert verify_signature(
        SECRET,
        congrats[0].headers["funnels-timestamp"],
        congrats[0].body,
        congrats[0].headers["funnels-signature"],
    )
    texts = [r for r in http_receiver.requests if r.path.endswith("/Messages.json")]
    assert [(r.form or {}).get("To") for r in texts] == ["+15550000001"]
    assert [(r.form or {}).get("Body") for r in texts] == ["Congrats Ada!"]
    assert len(http_receiver.requests) == 5  # 3 Slack + 1 webhook + 1 SMS, nothing else

    log = client.get("/v0/actions", params={"size": 50}, headers=bearer(key)).json()
    statuses = sorted((job["instance"]["id"], job["type"], job["status"]) for job in log["data"])
    assert statuses == [
        ("1", "email", "cancelled"),
        ("1", "slack", "sent"),
        ("1", "sms", "sent"),
        ("1", "webhook", "sent"),
        ("2", "email", "sent"),
        ("2", "slack", "sent"),
        ("3", "email", "cancelled"),
        ("3", "slack", "sent"),
    ]
    ada = client.get("/v0/models/customer/ada@example.com", headers=bearer(key)).json()
    assert [step["satisfied_at"] is not None for step in ada["funnels"][0]["steps"]] == [True, True, True]

    advance(30 * DAY_MS)  # nothing else is ever sent
    assert len(http_receiver.requests) == 5 and len(smtp_receiver.messages) == 1


# --- the reminder scheduled and cancelled in one transaction --------------------------------------------

World = tuple[TestClient, Services, ManualClock, str]
ADA = {
    "model": "customer",
    "ids": [1],
    "displayName": "Ada",
    "properties": {"email": "ada@example.com", "plan": "trial"},
}


def post_ok(world: World, path: str, body: object, headers: dict[str, str] | None = None) -> Any:
    client, _svc, _clock, key = world
    response = client.post(path, json=body, headers=headers or bearer(key))
    assert response.status_code == 200, response.text
    return response.json()


def reminder_jobs(world: World) -> list[dict[str, Any]]:
    client, _svc, _clock, key = world
    log = client.get("/v0/actions", params={"size": 50}, headers=bearer(key)).json()
    return [job for job in log["data"] if job["type"] == "email"]


def assert_cancelled_now_and_never_sent(
    world: World, reminder_id: int, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver
) -> None:
    """Cancelled by the request itself (not later by the worker's check at due time); nothing is mailed."""
    client, svc, clock, key = world
    job = client.get(f"/v0/actions/{reminder_id}", headers=bearer(key)).json()
    assert (job["status"], job["attempts"]) == ("cancelled", 0), job
    assert "development_api_call" in job["last_error"]
    svc.worker.run_until_idle()
    clock.advance(3 * DAY_MS + 1)
    svc.worker.run_until_idle()
    assert smtp_receiver.messages == []
    assert [request.path for request in http_receiver.requests] == ["/slack"]  # the sign-up message only


def test_sign_up_and_development_api_call_in_one_request_cancel_the_reminder(
    world: World, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver
) -> None:
    post_ok(world, "/api/v1/identify", ADA)
    answer = post_ok(
        world,
        "/api/v1/events",
        [{"name": "sign_up", "ids": [1]}, {"name": "development_api_call", "ids": [1]}],
    )
    signed, reached = answer["results"]
    (reminder_id,) = [item["id"] for item in signed["scheduled"] if item["type"] == "email"]
    assert [(item["funnel"], item["step"]) for item in reached["satisfied"]] == [("onboarding", 2)]
    assert reached["cancelled"] == [reminder_id]
    assert_cancelled_now_and_never_sent(world, reminder_id, http_receiver, smtp_receiver)


def test_sign_up_and_development_api_call_in_one_segment_batch_cancel_the_reminder(
    world: World, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver
) -> None:
    key = world[3]
    basic = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    batch = [
        {
            "type": "identify",
            "userId": "1",
            "traits": {"email": "ada@example.com", "name": "Ada", "plan": "trial"},
        },
        {"type": "track", "userId": "1", "event": "sign_up"},
        {"type": "track", "userId": "1", "event": "development_api_call"},
    ]
    answer = post_ok(world, "/v1/batch", {"batch": batch}, headers=basic)
    assert (answer["accepted"], answer.get("rejected", [])) == (3, [])
    (reminder,) = reminder_jobs(world)
    assert reminder["instance"]["id"] == "1"
    assert_cancelled_now_and_never_sent(world, reminder["id"], http_receiver, smtp_receiver)


def test_sign_up_and_development_api_call_sharing_a_group_commit_cancel_the_reminder(
    world: World, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two concurrent single-event requests, queued (in this order) behind a transaction that is held open,
    commit together in the next one: the second cancels what the first scheduled."""
    _client, svc, _clock, _key = world
    post_ok(world, "/api/v1/identify", ADA)
    committer = svc.committer
    transactions: list[list[str]] = []
    release, holding = threading.Event(), threading.Event()
    queued: Queue[None] = Queue()
    commit, wake = committer.commit, committer.wake

    def held_commit(signals: Sequence[Signal]) -> list[Outcome]:  # the real commit, the first one held
        if not holding.is_set():
            holding.set()
            assert release.wait(30)
        transactions.append([signal.event.event for signal in signals])
        return commit(signals)

    def counted_wake() -> None:  # `submit` wakes the committer after queueing the request
        queued.put(None)
        wake()

    monkeypatch.setattr(committer, "commit", held_commit)
    monkeypatch.setattr(committer, "wake", counted_wake)
    event = "/api/v1/events"
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(post_ok, world, event, {"name": "visit", "ids": [1]})
        queued.get(timeout=30)
        assert holding.wait(30)  # the committer took it and holds its transaction open
        signed = pool.submit(post_ok, world, event, {"name": "sign_up", "ids": [1]})
        queued.get(timeout=30)
        reached = pool.submit(post_ok, world, event, {"name": "development_api_call", "ids": [1]})
        queued.get(timeout=30)
        release.set()
        answers = [future.result(timeout=30)["results"][0] for future in (first, signed, reached)]
    assert transactions == [["visit"], ["sign_up", "development_api_call"]]
    (reminder_id,) = [item["id"] for item in answers[1]["scheduled"] if item["type"] == "email"]
    assert answers[2]["cancelled"] == [reminder_id]
    assert_cancelled_now_and_never_sent(world, reminder_id, http_receiver, smtp_receiver)
