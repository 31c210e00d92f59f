"""The worker with hostile model properties (set by identify, with the public events:write key), against
real receivers: one email recipient per address field, no secrets in the delivery log on any path, no
delivery to internal addresses, values that cannot leave their URL segment or format a Slack message."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from tests.automation.conftest import Config, World
from tests.receivers import NETWORK, HttpReceiver, SmtpReceiver

AUTH = "Bearer s3cret-hook-token"
API_KEY = "k3y-0f-the-crm"
BOT_TOKEN = "xoxb-s3cret-bot"
SIGNING = "whsec-s3cret-signing"
SECRETS = (AUTH, "s3cret-hook-token", API_KEY, BOT_TOKEN, SIGNING)


def config(*funnels: dict[str, Any], **sections: Any) -> Config:
    return {"models": [{"name": "customer"}], "funnels": list(funnels), **sections}


def funnel(event: str, action: dict[str, Any]) -> dict[str, Any]:
    return {"id": event, "forModels": "customer", "steps": [{"event": event, "actions": action}]}


def trigger(world: World, event: str, **properties: Any) -> dict[str, Any]:
    """Identify `u1` with `properties`, send `event`, deliver: the job, as the API shows it."""
    world.identify(["u1"], displayName=properties.pop("displayName", "Ada"), properties=properties)
    world.event(event, ["u1"])
    world.run()
    (job,) = world.jobs(funnel=event)
    return job


# --- item 2: email recipients -------------------------------------------------------------------------


def test_a_property_with_two_addresses_does_not_make_a_relay(
    open_world: Callable[[Config], World], smtp_receiver: SmtpReceiver
) -> None:
    email = {"host": smtp_receiver.host, "port": smtp_receiver.port, "security": "none", "from": "t@x.test"}
    mail = {"type": "email", "args": {"to": "{{ modelProperties.email }}", "subject": "Hi", "text": "x"}}
    world = open_world(config(funnel("mail_me", mail), email=email))
    job = trigger(world, "mail_me", email="victim@example.com, attacker@evil.example")
    assert job["status"] == "dead" and job["attempts"] == 1
    assert job["last_error"].startswith("invalid address: to: ")
    assert "not exactly one email address (2 addresses)" in job["last_error"]
    assert smtp_receiver.messages == []  # no RCPT TO at all: not even the victim's


# --- item 4: secrets in the delivery log --------------------------------------------------------------


def leaky_config(receiver: HttpReceiver) -> Config:
    headers = {"Authorization": AUTH, "X-Api-Key": API_KEY, "X-Plan": "{{ modelProperties.plan }}"}
    return config(
        # The URL renders blank: dead after rendering, with what was rendered in the log.
        funnel(
            "blank", {"type": "webhook", "args": {"url": "{{ modelProperties.hook }}", "headers": headers}}
        ),
        funnel(
            "bot",
            {
                "type": "slack",
                "args": {"channel": "#x", "token": BOT_TOKEN, "content": "{{ modelProperties.hook }}"},
            },
        ),
        # A receiver that fails and echoes what it got (as httpbin does): failed, then dead.
        funnel("echo", {"type": "webhook", "args": {"url": f"{receiver.url}/echo", "headers": headers}}),
        webhook={"secret": SIGNING},
        delivery={"maxAttempts": 2, "backoffBase": "1s", "backoffMax": "1s"},
        network=NETWORK,
    )


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_no_secret_in_the_delivery_log_when_rendering_leaves_a_field_blank(
    open_world: Callable[[Config], World], http_receiver: HttpReceiver
) -> None:
    world = open_world(leaky_config(http_receiver))
    for event in ("blank", "bot"):
        job = trigger(world, event, hook="", plan="pro")
        assert job["status"] == "dead" and job["last_error"].startswith("after rendering")
        assert job["rendered"] is not None and job["rendered"]  # still shows what it could
        assert_no_secret(json.dumps(job))
        assert_no_secret(json.dumps(world.job(job["id"])))
    blank = world.jobs(funnel="blank")[0]["rendered"]
    assert blank["headers"] == {"Authorization": "***", "X-Api-Key": "***", "X-Plan": "pro"}
    assert world.jobs(funnel="bot")[0]["rendered"]["token"] == "***"
    assert http_receiver.requests == []


def test_no_secret_in_the_log_on_failure_nor_in_an_echoing_answer(
    open_world: Callable[[Config], World], http_receiver: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world = open_world(leaky_config(http_receiver))
    echo = {"got": {"authorization": AUTH, "x-api-key": API_KEY}}
    for _ in range(2):
        http_receiver.reply("/echo", 500, echo)
    job = trigger(world, "echo", plan="pro")
    assert job["status"] == "failed"
    assert_no_secret(json.dumps(job))
    world.run(2_000)
    job = world.job(job["id"])
    assert job["status"] == "dead" and len(job["attempt_log"]) == 2
    assert "***" in job["attempt_log"][0]["response"]  # the echoed header, redacted
    assert_no_secret(json.dumps(job))
    assert_no_secret(json.dumps(world.get("/v0/actions", status="dead")))
    # The receiver did get the real headers: only the log is redacted.
    assert http_receiver.requests[0].headers["authorization"] == AUTH
    # Nothing stored holds them (the config's own action definitions aside), and nothing was logged.
    with world.svc.state.read() as connection:  # raw SQL: the rows as stored, in either dialect
        stored = connection.exec_driver_sql(
            "SELECT rendered, last_error FROM action_jobs UNION ALL "
            "SELECT response, error FROM action_attempts"
        ).all()
    assert_no_secret(json.dumps([tuple(row) for row in stored]))
    assert_no_secret(caplog.text)


# --- item 5: SSRF ----------------------------------------------------------------------------------


def internal() -> dict[str, Any]:
    """A webhook whose URL comes from a model property, carrying a credential."""
    return {
        "type": "webhook",
        "args": {"url": "{{ modelProperties.hook | safe }}", "headers": {"Authorization": AUTH}},
    }


def test_a_templated_url_to_an_internal_address_is_refused(
    open_world: Callable[[Config], World], http_receiver: HttpReceiver
) -> None:
    world = open_world(config(funnel("ping", internal())))
    port = http_receiver.url.rsplit(":", 1)[1]
    job = trigger(world, "ping", hook=f"http://127.0.0.1:{port}/internal-admin")
    assert job["status"] == "dead" and job["attempts"] == 1  # not retried
    assert "refused to connect to 127.0.0.1: a loopback address" in job["last_error"]
    assert http_receiver.requests == []


def test_a_host_name_that_resolves_to_loopback_is_refused(
    open_world: Callable[[Config], World], http_receiver: HttpReceiver
) -> None:
    world = open_world(config(funnel("ping", internal())))
    port = http_receiver.url.rsplit(":", 1)[1]
    job = trigger(world, "ping", hook=f"http://localhost:{port}/internal-admin")
    assert job["status"] == "dead" and "refused to connect to localhost (" in job["last_error"]
    assert http_receiver.requests == []


def test_the_allow_list_lets_it_through(
    open_world: Callable[[Config], World], http_receiver: HttpReceiver
) -> None:
    world = open_world(config(funnel("ping", internal()), network=NETWORK))
    job = trigger(world, "ping", hook=f"{http_receiver.url}/internal-admin")
    assert job["status"] == "sent"
    assert [request.path for request in http_receiver.requests] == ["/internal-admin"]


# --- items 11 and 12: escaping interpolated values ---------------------------------------------------


def test_a_property_cannot_leave_its_url_path_segment(
    open_world: Callable[[Config], World], http_receiver: HttpReceiver
) -> None:
    url = http_receiver.url + "/users/{{ modelProperties.uid }}/notify?ref={{ modelProperties.ref }}"
    world = open_world(config(funnel("ping", {"type": "webhook", "args": {"url": url}}), network=NETWORK))
    job = trigger(world, "ping", uid="../../admin?x=", ref="a&b=c")
    assert job["status"] == "sent"
    (request,) = http_receiver.requests
    assert request.path == "/users/..%2F..%2Fadmin%3Fx%3D/notify"
    assert request.query == {"ref": "a&b=c"}  # one query value, not two


def test_a_display_name_cannot_ping_the_channel_or_disguise_a_link(
    open_world: Callable[[Config], World], http_receiver: HttpReceiver
) -> None:
    content = "<!here> {{ displayName }} signed up: <https://app.example/u|profile>"
    slack = {"type": "slack", "args": {"url": f"{http_receiver.url}/hook", "content": content}}
    world = open_world(config(funnel("joined", slack), network=NETWORK))
    job = trigger(world, "joined", displayName="<!channel> <https://evil.example|verify here> & co")
    assert job["status"] == "sent"
    (request,) = http_receiver.requests
    assert request.json == {
        "text": "<!here> &lt;!channel&gt; &lt;https://evil.example|verify here&gt; &amp; co signed up: "
        "<https://app.example/u|profile>"  # the config's own mention and link still work
    }


def test_a_row_stored_before_redaction_is_redacted_when_shown(
    open_world: Callable[[Config], World], http_receiver: HttpReceiver
) -> None:
    world = open_world(leaky_config(http_receiver))
    job = trigger(world, "bot", hook="", plan="pro")
    old = {"channel": "#x", "token": BOT_TOKEN, "content": ""}  # as an older version stored it
    with world.svc.state.write() as connection:
        connection.execute(
            text("UPDATE action_jobs SET rendered = :rendered WHERE id = :id"),
            {"rendered": json.dumps(old), "id": job["id"]},
        )
    shown = world.job(job["id"])["rendered"]
    assert shown == {"channel": "#x", "token": "***", "content": ""}
