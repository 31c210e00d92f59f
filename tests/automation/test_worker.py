"""The worker against a real HTTP receiver and a real SMTP server (aiosmtpd), driven by a moved clock:
rendering, signing, retries and backoff, dead letters, quiet hours, leases, email, manual retry."""

from __future__ import annotations

from typing import Any

import pytest

from funnels.channels.email import message_id
from funnels.channels.webhook import verify_signature
from funnels.events import parse_timestamp
from tests.automation.conftest import Config, World, error_of
from tests.receivers import NETWORK, HttpReceiver, SmtpReceiver

SECRET = "whsec-worker-test"
SECOND_MS = 1_000
LEASE_MS = 2 * 10_000 + 5_000  # 2 × the default 10 s timeout + 5 s


def webhook(url: str, **fields: Any) -> dict[str, Any]:
    return {"type": "webhook", "args": {"url": url, **fields}}


def funnel(funnel_id: str, event: str, actions: Any) -> dict[str, Any]:
    return {"id": funnel_id, "forModels": "customer", "steps": [{"event": event, "actions": actions}]}


@pytest.fixture
def automation_config(http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver) -> Config:
    url = http_receiver.url
    return {
        "models": [{"name": "customer"}],
        "network": NETWORK,
        "webhook": {"secret": SECRET},
        "email": {
            "host": smtp_receiver.host,
            "port": smtp_receiver.port,
            "security": "none",
            "from": "team@funnels.test",
        },
        "delivery": {"maxAttempts": 3, "backoffBase": "2s", "backoffMax": "1m"},
        "funnels": [
            funnel(
                "hooks",
                "sign_up",
                webhook(
                    f"{url}/hook",
                    headers={"X-Plan": "{{ modelProperties.plan }}"},
                    body={
                        "plan": "{{ modelProperties.plan }}",
                        "name": "{{ displayName }}",
                        "ids": "{{ ids | join: ',' }}",
                        "first_id": "{{ ids[0] }}",
                        "source": "{{ eventProperties.source | default: 'unknown' }}",
                        "funnel": "{{ funnel }}",
                        "step": "{{ step }}",
                        "model": "{{ model }}",
                        "event": "{{ event }}",
                        "untouched": 42,
                    },
                ),
            ),
            {
                **funnel("quiet", "ping", {**webhook(f"{url}/quiet"), "notBefore": 9, "notAfter": 17}),
            },
            funnel(
                "mail",
                "mail_me",
                {
                    "type": "email",
                    "args": {
                        "to": "{{ modelProperties.email }}",
                        "subject": "Welcome, {{ displayName }}",
                        "text": "Your plan: {{ modelProperties.plan }} (via {{ eventProperties.source }})",
                    },
                },
            ),
            funnel(
                "broken",
                "break",
                [
                    webhook(f"{url}/broken", body={"x": "{{ modelProperties.missing }}"}),
                    webhook(f"{url}/fine"),
                ],
            ),
            funnel("empty", "empty_url", webhook("{{ modelProperties.hook }}")),
        ],
    }


def ms(iso: str) -> int:
    return parse_timestamp(iso)


def only_job(world: World, **filters: Any) -> dict[str, Any]:
    (job,) = world.jobs(**filters)
    return job


def sign_up(world: World) -> None:
    """Customer c1, on the pro plan, signs up: the `hooks` funnel's webhook is due at once."""
    world.identify(["c1"], properties={"plan": "pro"})
    world.event("sign_up", ["c1"])


def first_attempt(world: World) -> dict[str, Any]:
    """c1 signs up and the worker runs (the clock stays): the `hooks` job after its first attempt."""
    sign_up(world)
    world.run()
    return only_job(world, funnel="hooks")


def test_an_immediate_webhook_is_delivered_signed_with_the_job_key(
    world: World, http_receiver: HttpReceiver
) -> None:
    world.identify(["c1", "ada@example.com"], displayName="Ada", properties={"plan": "pro"})
    result = world.event("sign_up", ["ada@example.com"], properties={"source": "ads"})
    assert [item["type"] for item in result["scheduled"]] == ["webhook"]
    assert world.run() == 1
    (request,) = http_receiver.requests
    job = only_job(world, funnel="hooks")
    assert job["status"] == "sent"
    assert request.headers["idempotency-key"] == job["idempotency_key"]
    assert request.headers["funnels-timestamp"] == str(world.clock.now_ms() // 1000)
    assert verify_signature(
        SECRET, request.headers["funnels-timestamp"], request.body, request.headers["funnels-signature"]
    )
    assert not verify_signature(
        "another-secret",
        request.headers["funnels-timestamp"],
        request.body,
        request.headers["funnels-signature"],
    )
    assert (request.method, request.path) == ("POST", "/hook")
    assert request.headers["x-plan"] == "pro"
    assert request.json == {
        "plan": "pro",
        "name": "Ada",
        "ids": "c1,ada@example.com",
        "first_id": "c1",
        "source": "ads",
        "funnel": "hooks",
        "step": "sign_up",
        "model": "customer",
        "event": "sign_up",
        "untouched": 42,
    }
    assert job["attempts"] == 1 and len(job["attempt_log"]) == 1
    assert job["attempt_log"][0]["outcome"] == "sent" and job["attempt_log"][0]["status_code"] == 200
    assert job["sent_at"] is not None
    assert world.run() == 0  # nothing twice


def test_templates_see_the_instance_as_it_is_at_send_time(world: World, http_receiver: HttpReceiver) -> None:
    world.identify(["c1"], displayName="Ada", properties={"plan": "trial"})
    world.event("sign_up", ["c1"], properties={"source": "ads"})
    world.identify(["c1"], displayName="Ada L.", properties={"plan": "pro"})
    world.run()
    (request,) = http_receiver.requests
    assert (request.json["plan"], request.json["name"], request.json["source"]) == ("pro", "Ada L.", "ads")


def test_a_5xx_is_retried_after_backoff_and_then_sent(world: World, http_receiver: HttpReceiver) -> None:
    http_receiver.reply("/hook", 500, "boom")
    start = world.clock.now_ms()
    job = first_attempt(world)
    assert job["status"] == "failed"
    assert job["attempts"] == 1
    assert "500" in job["last_error"]
    next_ms = ms(job["next_attempt_at"])
    assert start + 1 * SECOND_MS <= next_ms <= start + 2 * SECOND_MS  # base 2 s, equal jitter
    assert world.run(next_ms - start - 1) == 0  # not before its time
    assert len(http_receiver.requests) == 1
    assert world.run(1) == 1
    job = only_job(world, funnel="hooks")
    assert job["status"] == "sent"
    assert [(item["attempt"], item["outcome"], item["status_code"]) for item in job["attempt_log"]] == [
        (1, "failed", 500),
        (2, "sent", 200),
    ]
    keys = {request.headers["idempotency-key"] for request in http_receiver.requests}
    assert keys == {job["idempotency_key"]}


def test_429_with_retry_after_waits_at_least_that_long(world: World, http_receiver: HttpReceiver) -> None:
    http_receiver.reply("/hook", 429, "slow down", headers={"Retry-After": "120"})
    start = world.clock.now_ms()
    job = first_attempt(world)
    assert job["status"] == "failed"
    assert ms(job["next_attempt_at"]) >= start + 120 * SECOND_MS
    assert world.run(119 * SECOND_MS) == 0
    assert world.run(ms(job["next_attempt_at"]) - world.clock.now_ms()) == 1
    assert only_job(world, funnel="hooks")["status"] == "sent"
    assert len(http_receiver.requests) == 2


def test_a_404_is_dead_at_once(world: World, http_receiver: HttpReceiver) -> None:
    http_receiver.reply("/hook", 404, "no such hook")
    job = first_attempt(world)
    assert job["status"] == "dead"
    assert job["attempts"] == 1
    assert "404" in job["last_error"]
    assert job["next_attempt_at"] is None
    assert world.run(86_400_000) == 0
    assert len(http_receiver.requests) == 1


def test_exhausted_retries_are_dead_with_the_count(world: World, http_receiver: HttpReceiver) -> None:
    for _ in range(5):
        http_receiver.reply("/hook", 503, "unavailable")
    first_attempt(world)
    for _ in range(4):  # backoffMax is 1 minute: each advance is past any next attempt
        world.run(61 * SECOND_MS)
    job = only_job(world, funnel="hooks")
    assert job["status"] == "dead"
    assert job["attempts"] == 3
    assert "gave up after 3 attempts" in job["last_error"]
    assert "503" in job["last_error"]
    assert [item["outcome"] for item in job["attempt_log"]] == ["failed", "failed", "dead"]
    assert len(http_receiver.requests) == 3


def test_a_template_error_is_dead_with_the_error_and_the_worker_carries_on(
    world: World, http_receiver: HttpReceiver
) -> None:
    world.identify(["c1"])
    world.event("break", ["c1"])
    assert world.run() == 2
    by_path = {job["action"]: job for job in world.jobs(funnel="broken")}
    broken, fine = by_path[1], by_path[2]
    assert broken["status"] == "dead"
    assert "missing" in broken["last_error"] and "args.body.x" in broken["last_error"]
    assert broken["attempts"] == 0
    assert fine["status"] == "sent"
    assert [request.path for request in http_receiver.requests] == ["/fine"]


def test_args_that_render_invalid_are_dead_without_a_request(
    world: World, http_receiver: HttpReceiver
) -> None:
    world.identify(["c1"], properties={"hook": ""})
    world.event("empty_url", ["c1"])
    world.run()
    job = only_job(world, funnel="empty")
    assert job["status"] == "dead"
    assert job["last_error"] == "after rendering: args.url: must not be empty"
    assert job["attempts"] == 0 and job["attempt_log"] == []  # refused before any send
    assert job["next_attempt_at"] is None
    assert http_receiver.requests == []


def test_quiet_hours_wait_for_the_window_in_the_instance_timezone(
    world: World, http_receiver: HttpReceiver
) -> None:
    world.clock.set(ms("2026-04-01T07:00:00Z"))  # 03:00 in New York (EDT, UTC−4)
    world.identify(["c1"], properties={"timezone": "America/New_York"})
    world.event("ping", ["c1"])
    assert world.run() == 1
    job = only_job(world, funnel="quiet")
    assert job["status"] == "scheduled"
    assert job["next_attempt_at"] == "2026-04-01T13:00:00.000Z"  # 09:00 in New York
    assert job["attempts"] == 0 and job["attempt_log"] == []
    assert http_receiver.requests == []
    assert world.run(ms("2026-04-01T12:59:59.999Z") - world.clock.now_ms()) == 0
    assert world.run(1) == 1
    job = only_job(world, funnel="quiet")
    assert job["status"] == "sent" and job["attempts"] == 1
    assert len(http_receiver.requests) == 1


def test_quiet_hours_let_a_job_inside_the_window_go_at_once(
    world: World, http_receiver: HttpReceiver
) -> None:
    world.clock.set(ms("2026-04-01T14:00:00Z"))  # 10:00 in New York
    world.identify(["c1"], properties={"timezone": "America/New_York"})
    world.event("ping", ["c1"])
    world.run()
    assert only_job(world, funnel="quiet")["status"] == "sent"
    assert len(http_receiver.requests) == 1


def test_an_expired_lease_is_claimed_again_and_sent_with_the_same_key(
    world: World, http_receiver: HttpReceiver
) -> None:
    sign_up(world)
    (claimed,) = world.svc.worker.claim(10)
    world.svc.worker.handle(claimed)  # it sent, then "crashed" before recording
    assert only_job(world, funnel="hooks")["status"] == "sending"
    assert world.run(LEASE_MS - 1) == 0  # still leased
    assert world.run(1) == 1
    job = only_job(world, funnel="hooks")
    assert job["status"] == "sent" and job["attempts"] == 1
    keys = [request.headers["idempotency-key"] for request in http_receiver.requests]
    assert keys == [claimed.key, claimed.key] == [job["idempotency_key"]] * 2
    assert len(http_receiver.unique()) == 1


def test_email_goes_through_smtp_with_the_rendered_subject_and_body(
    world: World, smtp_receiver: SmtpReceiver
) -> None:
    world.identify(["c1"], displayName="Ada", properties={"email": "ada@example.com", "plan": "pro"})
    world.event("mail_me", ["c1"], properties={"source": "ads"})
    world.run()
    job = only_job(world, funnel="mail")
    assert job["status"] == "sent", job
    (mail,) = smtp_receiver.messages
    assert mail.rcpt_tos == ["ada@example.com"]
    assert mail.mail_from == "team@funnels.test"
    assert mail.message["Subject"] == "Welcome, Ada"
    assert mail.message.get_content().strip() == "Your plan: pro (via ads)"
    assert mail.message["Message-ID"] == message_id(job["idempotency_key"])


def test_retry_of_a_dead_job_schedules_it_and_it_is_sent(world: World, http_receiver: HttpReceiver) -> None:
    http_receiver.reply("/hook", 410, "gone")
    dead = first_attempt(world)
    assert dead["status"] == "dead"

    response = world.client.post(f"/v0/actions/{dead['id']}/retry", headers=world.admin)
    assert response.status_code == 200, response.text
    retried = response.json()
    assert retried["status"] == "scheduled"
    assert retried["attempts"] == 0
    assert retried["next_attempt_at"] is not None
    assert world.run() == 1  # the receiver is fixed: its default answer is 200
    job = world.job(dead["id"])
    assert job["status"] == "sent"
    # The log numbers every attempt the job ever had (once both were 1: the retry restarts the budget,
    # not the log), while `attempts` counts those since the retry.
    assert [(item["attempt"], item["outcome"]) for item in job["attempt_log"]] == [(1, "dead"), (2, "sent")]
    assert job["attempts"] == 1
    assert {request.headers["idempotency-key"] for request in http_receiver.requests} == {
        job["idempotency_key"]
    }

    again = world.client.post(f"/v0/actions/{dead['id']}/retry", headers=world.admin)
    error = error_of(again, 409, "CONFLICT")
    assert "sent" in error["message"]
    assert world.job(dead["id"])["status"] == "sent"
    assert len(http_receiver.requests) == 2


def test_retry_of_an_unknown_job_is_404(world: World) -> None:
    error_of(world.client.post("/v0/actions/999/retry", headers=world.admin), 404, "NOT_FOUND")


def test_one_round_records_the_finished_and_claims_the_due(world: World, http_receiver: HttpReceiver) -> None:
    world.identify(["c1"], properties={"plan": "pro"})
    world.identify(["c2"], properties={"plan": "pro"})
    world.event("sign_up", ["c1"])
    worker = world.svc.worker
    (first,) = worker.claim(16)
    result = worker.handle(first)
    world.event("sign_up", ["c2"])
    (second,) = worker.record_and_claim([result], 16)  # the background loop's round
    assert second.id != first.id and second.ids == ("c2",)
    assert only_job(world, id="c1")["status"] == "sent"
    assert only_job(world, id="c2")["status"] == "sending"  # leased, in the same transaction
    assert worker.record_and_claim([worker.handle(second)], 0) == []  # no free slot: record only
    assert only_job(world, id="c2")["status"] == "sent"
    assert [request.json["first_id"] for request in http_receiver.requests] == ["c1", "c2"]
