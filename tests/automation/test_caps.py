"""Frequency caps (`limits`): a first attempt over a cap ends `capped`, never sent; several due at once go
in due order; a retry is not a new message; a funnel's own limit; against a real HTTP receiver with a
moved clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.automation.conftest import Config, World
from tests.receivers import NETWORK, HttpReceiver, SmtpReceiver

HOUR_MS = 3_600_000


def hook(url: str, path: str, **fields: object) -> dict[str, object]:
    return {"type": "webhook", "args": {"url": f"{url}/{path}"}, **fields}


@pytest.fixture
def automation_config(http_receiver: HttpReceiver) -> Config:
    url = http_receiver.url
    return {
        "models": [{"name": "customer"}],
        "network": NETWORK,
        "delivery": {"maxAttempts": 3, "backoffBase": "1m", "backoffMax": "1m"},
        "limits": [
            {"channel": "webhook", "max": 2, "per": "1d"},
            {"channel": "webhook", "max": 1, "per": "1h", "funnel": "digest"},
        ],
        "funnels": [
            # One sign_up makes three webhooks due at once (their funnels' first steps), in this order.
            {
                "id": "welcome",
                "forModels": "customer",
                "steps": {"event": "sign_up", "actions": hook(url, "w")},
            },
            {"id": "tips", "forModels": "customer", "steps": {"event": "sign_up", "actions": hook(url, "t")}},
            {
                "id": "survey",
                "forModels": "customer",
                "steps": {"event": "sign_up", "actions": hook(url, "s")},
            },
            {"id": "later", "forModels": "customer", "steps": {"event": "ping", "actions": hook(url, "p")}},
            {
                "id": "digest",
                "forModels": "customer",
                "steps": [
                    {"event": "d1", "actions": hook(url, "d1")},
                    {"event": "d2", "actions": hook(url, "d2")},
                ],
            },
        ],
    }


def statuses(world: World, name: str) -> dict[str, str]:
    return {job["funnel"] + "/" + str(job["step"]): job["status"] for job in world.jobs(id=name)}


def test_of_several_due_at_once_the_first_max_go_and_the_rest_are_capped(
    world: World, http_receiver: HttpReceiver
) -> None:
    for name in ("ada", "bob"):
        world.identify([name])
        world.event("sign_up", [name])
    world.run()
    for name in ("ada", "bob"):  # per instance: each gets two
        assert statuses(world, name) == {"welcome/1": "sent", "tips/1": "sent", "survey/1": "capped"}
    assert len(http_receiver.requests) == 4
    (capped,) = world.jobs(id="ada", status="capped")
    assert capped["last_error"] == "capped: 2 webhook message(s) to this instance within 1d (limit 2)"
    assert capped["attempts"] == 0 and capped["attempt_log"] == [] and capped["sent_at"] is None
    summary = {(row["funnel"], row["action"]): row for row in world.get("/v0/actions/summary")["data"]}
    assert summary[("survey", 1)]["statuses"]["capped"] == 2 == summary[("survey", 1)]["total"]
    assert (
        summary[("welcome", 1)]["statuses"]["sent"] == 2
        and summary[("welcome", 1)]["statuses"]["capped"] == 0
    )

    world.clock.advance(23 * HOUR_MS)  # still within a day of the two sent
    world.event("ping", ["ada"])
    world.run()
    assert statuses(world, "ada")["later/1"] == "capped"
    world.clock.advance(2 * HOUR_MS)  # a day after the two sent: room again
    world.event("d1", ["ada"])
    world.run()
    assert statuses(world, "ada")["digest/1"] == "sent"


def test_a_retry_is_not_a_new_message(world: World, http_receiver: HttpReceiver) -> None:
    http_receiver.reply("/p", 503)  # the ping webhook's first attempt fails; it is retried a minute later
    world.identify(["ada"])
    world.event("ping", ["ada"])
    world.run()
    assert statuses(world, "ada") == {"later/1": "failed"}
    world.event("sign_up", ["ada"])
    world.run()
    # The failed one reached nobody and is not counted: welcome and tips are the two of the day.
    assert statuses(world, "ada") == {
        "later/1": "failed",
        "welcome/1": "sent",
        "tips/1": "sent",
        "survey/1": "capped",
    }
    world.run(2 * 60_000)
    # Its retry is the same message, not a new one: not checked again (the day now has three).
    assert statuses(world, "ada")["later/1"] == "sent"
    assert [request.path for request in http_receiver.requests].count("/p") == 2


def test_a_funnels_own_limit_counts_only_its_actions(world: World, http_receiver: HttpReceiver) -> None:
    world.identify(["ada"])
    world.event("d1", ["ada"])
    world.event("d2", ["ada"])  # digest's second message within the hour: over digest's 1 per hour
    world.run()
    assert statuses(world, "ada") == {"digest/1": "sent", "digest/2": "capped"}
    (capped,) = world.jobs(id="ada", status="capped")
    assert (
        capped["last_error"]
        == "capped: 1 webhook message(s) of funnel 'digest' to this instance within 1h (limit 1)"
    )
    world.event("ping", ["ada"])  # another funnel's: only the daily cap counts digest's message
    world.run()
    assert statuses(world, "ada")["later/1"] == "sent"


@pytest.mark.parametrize("why", ["held_out", "cancelled", "suppressed"])
def test_a_message_claimed_with_it_that_is_not_sent_does_not_count(
    open_world: Callable[[Config], World], http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver, why: str
) -> None:
    """Jobs due at once are claimed together, and a cap counts the ones being sent before it: one of them
    that then ends held out, cancelled by `unless` or suppressed was never a message and must not cap the
    next (docs/config.md: a message that was held out or capped does not count)."""
    first: dict[str, object] = {
        "held_out": {"type": "webhook", "args": {"url": f"{http_receiver.url}/w"}, "holdout": "50%"},
        "cancelled": {"type": "webhook", "args": {"url": f"{http_receiver.url}/w"}, "unless": "paid"},
        "suppressed": {
            "type": "email",
            "args": {"to": "{{ ids[0] }}@example.com", "subject": "Hi", "text": "."},
        },
    }[why]
    channel = "email" if why == "suppressed" else "webhook"
    second = (
        {
            "type": "email",
            "transactional": True,
            "args": {"to": "{{ ids[0] }}@example.com", "subject": "Receipt", "text": "."},
        }
        if channel == "email"
        else {"type": "webhook", "args": {"url": f"{http_receiver.url}/second"}}
    )
    world = open_world(
        {
            "models": [{"name": "customer"}],
            "network": NETWORK,
            "email": {
                "host": smtp_receiver.host,
                "port": smtp_receiver.port,
                "security": "none",
                "from": "t@example.com",
            },
            "limits": [{"channel": channel, "max": 1, "per": "1d"}],
            "funnels": [
                {
                    "id": "onboarding",
                    "forModels": "customer",
                    "steps": [{"event": "sign_up", "actions": [first, second]}, {"event": "paid"}],
                }
            ],
        }
    )
    names = [f"c{n}" for n in range(12)]
    for name in names:
        world.identify([name])
        if why == "suppressed":
            change = {"topic": "email", "subscribed": False}
            response = world.client.put(
                f"/v0/models/customer/{name}/subscriptions", json=change, headers=world.admin
            )
            assert response.status_code == 200, response.text
        world.event("sign_up", [name])
        if why == "cancelled":
            world.event("paid", [name])  # reached before the first job was decided: it ends cancelled
    world.run()
    jobs = {(job["instance"]["id"], job["action"]): job["status"] for job in world.jobs()}
    not_sent = [name for name in names if jobs[(name, 1)] == why]
    assert not_sent, jobs
    for name in not_sent:
        assert jobs[(name, 2)] == "sent", (name, jobs)
