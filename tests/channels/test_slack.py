"""The Slack channel against a real HTTP receiver standing in for an incoming webhook and the Web API."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from pydantic import ValidationError

from funnels.channels.base import resolve_settings
from funnels.channels.slack import CHANNEL, SlackArgs, SlackSettings, deliver_slack
from tests.receivers import HttpReceiver, delivery_request, local_http


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with local_http() as client:
        yield client


def bot_settings(receiver: HttpReceiver, token: str | None = "xoxb-settings") -> SlackSettings:
    section = {"apiUrl": f"{receiver.url}/api"} | ({"token": token} if token else {})
    resolved = resolve_settings(CHANNEL, section, {})
    assert isinstance(resolved, SlackSettings)
    return resolved


def test_an_incoming_webhook_gets_the_text_and_its_secret_url_is_not_logged(
    http_receiver: HttpReceiver, http: httpx.Client
) -> None:
    http_receiver.reply("/services/T1/B2/s3cr3tpart", 200, "ok")
    args = SlackArgs(url=f"{http_receiver.url}/services/T1/B2/s3cr3tpart", content="Ada signed up")
    result = deliver_slack(args, bot_settings(http_receiver), delivery_request(http, key="job-7"))
    assert result.ok and result.status_code == 200 and result.response == "ok"
    (request,) = http_receiver.requests
    assert request.path == "/services/T1/B2/s3cr3tpart" and request.json == {"text": "Ada signed up"}
    assert request.headers["idempotency-key"] == "job-7" and "authorization" not in request.headers
    assert "s3cr3tpart" not in json.dumps(result.sent) and result.sent["text"] == "Ada signed up"


def test_a_bot_posts_to_chat_post_message_with_the_settings_token(
    http_receiver: HttpReceiver, http: httpx.Client
) -> None:
    http_receiver.reply("/api/chat.postMessage", 200, {"ok": True, "ts": "1.2"})
    args = SlackArgs(channel="#signups", content="Ada signed up")
    result = deliver_slack(args, bot_settings(http_receiver), delivery_request(http, key="job-8"))
    assert result.ok
    (request,) = http_receiver.requests
    assert request.method == "POST" and request.path == "/api/chat.postMessage"
    assert request.json == {"channel": "#signups", "text": "Ada signed up"}
    assert request.headers["authorization"] == "Bearer xoxb-settings"
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert request.headers["idempotency-key"] == "job-8"
    assert "xoxb-settings" not in json.dumps(result.sent) and result.sent["channel"] == "#signups"


def test_the_args_token_wins_over_the_settings_token(http_receiver: HttpReceiver, http: httpx.Client) -> None:
    args = SlackArgs(channel="C1", token="xoxb-args", content="hi")
    http_receiver.reply("/api/chat.postMessage", 200, {"ok": True})
    assert deliver_slack(args, bot_settings(http_receiver), delivery_request(http)).ok
    assert http_receiver.requests[0].headers["authorization"] == "Bearer xoxb-args"


def test_ok_false_is_a_refusal_not_retried(http_receiver: HttpReceiver, http: httpx.Client) -> None:
    http_receiver.reply("/api/chat.postMessage", 200, {"ok": False, "error": "channel_not_found"})
    result = deliver_slack(
        SlackArgs(channel="C404", content="hi"), bot_settings(http_receiver), delivery_request(http)
    )
    assert not result.ok and not result.retryable and result.status_code == 200
    assert result.error == "Slack refused the message: channel_not_found"


def test_ratelimited_is_retried_after_the_given_delay(
    http_receiver: HttpReceiver, http: httpx.Client
) -> None:
    http_receiver.reply(
        "/api/chat.postMessage", 200, {"ok": False, "error": "ratelimited"}, {"Retry-After": "30"}
    )
    result = deliver_slack(
        SlackArgs(channel="C1", content="hi"), bot_settings(http_receiver), delivery_request(http)
    )
    assert not result.ok and result.retryable and result.retry_after_s == 30.0
    assert result.error is not None and "ratelimited" in result.error


def test_http_429_and_a_non_json_answer(http_receiver: HttpReceiver, http: httpx.Client) -> None:
    http_receiver.reply("/api/chat.postMessage", 429, "slow down", {"Retry-After": "3"})
    http_receiver.reply("/api/chat.postMessage", 200, "<html>proxy</html>")
    args, settings = SlackArgs(channel="C1", content="hi"), bot_settings(http_receiver)
    limited = deliver_slack(args, settings, delivery_request(http))
    assert (
        not limited.ok and limited.retryable and limited.retry_after_s == 3.0 and limited.status_code == 429
    )
    odd = deliver_slack(args, settings, delivery_request(http))
    assert not odd.ok and not odd.retryable and odd.error == "Slack refused the message: not a JSON object"


def test_a_bot_without_any_token_fails_without_sending(
    http_receiver: HttpReceiver, http: httpx.Client
) -> None:
    result = deliver_slack(
        SlackArgs(channel="C1", content="hi"), bot_settings(http_receiver, token=None), delivery_request(http)
    )
    assert not result.ok and not result.retryable
    assert result.error == "no Slack token: set args.token or slack.token"
    assert http_receiver.requests == []


def test_args_need_a_url_or_a_channel_and_the_token_may_come_from_settings() -> None:
    assert SlackArgs(channel="C1", content="x").token is None
    with pytest.raises(ValidationError, match="needs `url`"):
        SlackArgs(content="x", token="xoxb")


def test_settings_from_the_environment() -> None:
    settings = resolve_settings(
        CHANNEL, {}, {"FUNNELS_SLACK_TOKEN": "xoxb-env", "FUNNELS_SLACK_API_URL": "http://127.0.0.1:1/api"}
    )
    assert isinstance(settings, SlackSettings) and settings.api_url == "http://127.0.0.1:1/api"
    assert settings.token is not None and settings.token.get_secret_value() == "xoxb-env"
    default = resolve_settings(CHANNEL, {}, {})
    assert (
        isinstance(default, SlackSettings)
        and default.api_url == "https://slack.com/api"
        and default.token is None
    )
