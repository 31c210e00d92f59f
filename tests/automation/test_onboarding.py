"""The spec's onboarding example end to end, through the HTTP API, with real receivers and a moved clock.

Three customers: Ada converts fully, Bob stalls (gets the 3-day reminder), Cy reaches
`development_api_call` in time (reminder cancelled). Every receiver must get exactly the expected messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from funnels.api.app import create_app
from funnels.auth import create_key
from funnels.channels.webhook import verify_signature
from funnels.clock import ManualClock
from funnels.examples import onboarding_funnel
from funnels.services import Services
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
    tmp_path: Path, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver
) -> Iterator[tuple[TestClient, Services, ManualClock, str]]:
    config = tmp_path / "funnels.json"
    config.write_text(json.dumps(onboarding_config(http_receiver, smtp_receiver)))
    clock = ManualClock()
    svc = Services.open(tmp_path / "data", clock, config_path=config)
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
