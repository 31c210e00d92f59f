"""Opt-outs: an instance unsubscribed from a channel or a topic (`PUT /v0/models/{model}/{id}/subscriptions`)
gets none of its emails there: they end `suppressed` when due, transactional ones excepted; against a real
SMTP server (aiosmtpd), with a moved clock."""

from __future__ import annotations

from typing import Any

import pytest

from tests.automation.conftest import Config, World
from tests.receivers import NETWORK, SmtpReceiver

HOUR_MS = 3_600_000


def mail(subject: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "email",
        "args": {"to": "{{ modelProperties.email }}", "subject": subject, "text": "Hi"},
        **fields,
    }


@pytest.fixture
def automation_config(smtp_receiver: SmtpReceiver) -> Config:
    return {
        "models": [{"name": "customer"}],
        "network": NETWORK,
        "email": {
            "host": smtp_receiver.host,
            "port": smtp_receiver.port,
            "security": "none",
            "from": "team@funnels.test",
        },
        "funnels": [
            {
                "id": "onboarding",
                "forModels": "customer",
                "steps": {
                    "event": "sign_up",
                    "actions": [
                        mail("Welcome"),  # topic: its funnel's id, onboarding
                        mail("Tips", topic="tips", delay="1h"),
                        mail("Your receipt", transactional=True),
                    ],
                },
            }
        ],
    }


def change(world: World, name: str, topic: str, subscribed: bool, status: int = 200) -> Any:
    response = world.client.put(
        f"/v0/models/customer/{name}/subscriptions",
        json={"topic": topic, "subscribed": subscribed},
        headers=world.admin,
    )
    assert response.status_code == status, response.text
    return response.json()


def outcomes(world: World, name: str) -> dict[int, tuple[str, str | None]]:
    return {job["action"]: (job["status"], job["last_error"]) for job in world.jobs(id=name)}


def sign_up(world: World, name: str) -> None:
    world.identify([name], properties={"email": f"{name}@example.com"})


def test_a_channel_opt_out_suppresses_every_non_transactional_email(
    world: World, smtp_receiver: SmtpReceiver
) -> None:
    sign_up(world, "ada")
    answer = change(world, "ada", "email", subscribed=False)
    assert [(out["topic"], out["source"]) for out in answer["unsubscribed"]] == [("email", "api")]
    world.event("sign_up", ["ada"])
    world.run(HOUR_MS)
    assert outcomes(world, "ada") == {
        1: ("suppressed", "suppressed: unsubscribed from 'email' (api)"),
        2: ("suppressed", "suppressed: unsubscribed from 'email' (api)"),
        3: ("sent", None),  # transactional: sent whatever she unsubscribed from
    }
    assert [message.message["Subject"] for message in smtp_receiver.messages] == ["Your receipt"]
    assert world.get("/v0/models/customer/ada")["unsubscribed"] == answer["unsubscribed"]


def test_a_topic_opt_out_suppresses_that_topic_only(world: World, smtp_receiver: SmtpReceiver) -> None:
    sign_up(world, "bob")
    change(world, "bob", "email:tips", subscribed=False)
    world.event("sign_up", ["bob"])
    world.run(HOUR_MS)
    assert outcomes(world, "bob") == {
        1: ("sent", None),
        2: ("suppressed", "suppressed: unsubscribed from 'email:tips' (api)"),
        3: ("sent", None),
    }


def test_unsubscribing_while_a_reminder_is_pending_stops_it_and_subscribing_again_does_not_resend(
    world: World, smtp_receiver: SmtpReceiver
) -> None:
    sign_up(world, "cy")
    world.event("sign_up", ["cy"])
    world.run()
    assert outcomes(world, "cy")[2] == ("scheduled", None)  # the tips email is an hour away
    change(world, "cy", "email:onboarding", subscribed=False)  # another topic: tips still goes
    change(world, "cy", "email:tips", subscribed=False)
    world.run(HOUR_MS)
    assert outcomes(world, "cy")[2][0] == "suppressed"  # she gets nothing, though it was scheduled before
    assert [out["topic"] for out in change(world, "cy", "email:tips", subscribed=True)["unsubscribed"]] == [
        "email:onboarding"
    ]
    assert outcomes(world, "cy")[2][0] == "suppressed"  # final: subscribing again does not send it now
    assert sorted(message.message["Subject"] for message in smtp_receiver.messages) == [
        "Welcome",
        "Your receipt",
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"topic": "slack", "subscribed": False},
        {"topic": "email:Tips", "subscribed": False},
        {"topic": "email", "subscribed": "no"},
        {"topic": "email"},
        {"topic": "email", "subscribed": False, "extra": 1},
    ],
)
def test_a_bad_change_is_a_400_naming_the_field(world: World, body: dict[str, Any]) -> None:
    sign_up(world, "dee")
    response = world.client.put("/v0/models/customer/dee/subscriptions", json=body, headers=world.admin)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "INVALID_VALIDATION_REQUEST"


def test_an_unknown_instance_is_a_404(world: World) -> None:
    assert change(world, "nobody", "email", subscribed=False, status=404)["error"]["code"] == "NOT_FOUND"
