"""The SMS channel against a real HTTP receiver standing in for Twilio's Messages API."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest

from funnels.channels.base import resolve_settings
from funnels.channels.sms import CHANNEL, SmsArgs, SmsSettings, deliver_sms
from tests.receivers import HttpReceiver, delivery_request, local_http

MESSAGES = "/2010-04-01/Accounts/AC123/Messages.json"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with local_http() as client:
        yield client


def twilio(receiver: HttpReceiver, **section: object) -> SmsSettings:
    base = {"accountSid": "AC123", "authToken": "tw-token", "from": "+15550001111", "baseUrl": receiver.url}
    resolved = resolve_settings(CHANNEL, base | section, {})
    assert isinstance(resolved, SmsSettings)
    return resolved


def test_a_message_is_a_form_post_with_basic_auth_and_an_idempotency_token(
    http_receiver: HttpReceiver, http: httpx.Client
) -> None:
    http_receiver.reply(MESSAGES, 201, {"sid": "SM1", "status": "queued"})
    result = deliver_sms(
        SmsArgs(to="+15557654321", body="Hi Ada"), twilio(http_receiver), delivery_request(http, key="job-3")
    )
    assert (
        result.ok and result.status_code == 201 and result.response is not None and "SM1" in result.response
    )
    (request,) = http_receiver.requests
    assert request.method == "POST" and request.path == MESSAGES
    assert request.form == {"To": "+15557654321", "From": "+15550001111", "Body": "Hi Ada"}
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"AC123:tw-token").decode()
    assert request.headers["i-twilio-idempotency-token"] == "job-3"
    assert "tw-token" not in json.dumps(result.sent) and result.sent["form"]["Body"] == "Hi Ada"


def test_the_args_sender_wins(http_receiver: HttpReceiver, http: httpx.Client) -> None:
    args = SmsArgs.model_validate({"to": "+1555", "body": "x", "from": "+1999"})
    assert deliver_sms(args, twilio(http_receiver), delivery_request(http)).ok
    assert http_receiver.requests[0].form == {"To": "+1555", "From": "+1999", "Body": "x"}


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (401, False), (500, True), (429, True)])
def test_failures(http_receiver: HttpReceiver, http: httpx.Client, status: int, retryable: bool) -> None:
    http_receiver.reply(MESSAGES, status, {"code": 21211, "message": "Invalid 'To' Phone Number"})
    result = deliver_sms(SmsArgs(to="+15550000000", body="x"), twilio(http_receiver), delivery_request(http))
    assert not result.ok and result.retryable is retryable and result.status_code == status
    assert result.response is not None and "21211" in result.response


def test_missing_account_settings_or_sender_fail_without_sending(
    http_receiver: HttpReceiver, http: httpx.Client
) -> None:
    bare = resolve_settings(CHANNEL, {"baseUrl": http_receiver.url, "from": "+1000"}, {})
    result = deliver_sms(SmsArgs(to="+1555", body="x"), bare, delivery_request(http))  # type: ignore[arg-type]
    assert not result.ok and not result.retryable
    assert result.error == (
        "sms is not configured: set sms.accountSid or TWILIO_ACCOUNT_SID and sms.authToken or TWILIO_AUTH_TOKEN"
    )
    no_token = twilio(http_receiver, authToken=None)
    no_token_result = deliver_sms(SmsArgs(to="+1555", body="x"), no_token, delivery_request(http))
    assert no_token_result.error == "sms is not configured: set sms.authToken or TWILIO_AUTH_TOKEN"
    no_sender = deliver_sms(
        SmsArgs(to="+1555", body="x"), twilio(http_receiver, **{"from": None}), delivery_request(http)
    )
    assert not no_sender.ok and no_sender.error == "no sender: set args.from or sms.from (FUNNELS_SMS_FROM)"
    assert http_receiver.requests == []


def test_settings_from_the_environment() -> None:
    environ = {
        "TWILIO_ACCOUNT_SID": "ACenv",
        "TWILIO_AUTH_TOKEN": "env-token",
        "FUNNELS_SMS_FROM": "+1222",
        "FUNNELS_TWILIO_BASE_URL": "http://127.0.0.1:1",
    }
    settings = resolve_settings(CHANNEL, {"from": "+1333"}, environ)
    assert isinstance(settings, SmsSettings)
    assert (settings.account_sid, settings.from_, settings.base_url) == (
        "ACenv",
        "+1333",
        "http://127.0.0.1:1",
    )
    assert settings.auth_token is not None and settings.auth_token.get_secret_value() == "env-token"
    default = resolve_settings(CHANNEL, {}, {})
    assert isinstance(default, SmsSettings) and default.base_url == "https://api.twilio.com"
    assert default.account_sid is None and default.auth_token is None


@pytest.mark.parametrize("to", ["+15557654321, +15550009999", "+15557654321 +15550009999", "call me", ""])
def test_a_recipient_must_be_exactly_one_number(
    http_receiver: HttpReceiver, http: httpx.Client, to: str
) -> None:
    result = deliver_sms(
        SmsArgs.model_construct(to=to, body="x"), twilio(http_receiver), delivery_request(http)
    )
    assert not result.ok and not result.retryable
    assert result.error is not None and result.error.startswith("invalid phone number: to: ")
    assert http_receiver.requests == []


def test_separators_inside_one_number_are_dropped(http_receiver: HttpReceiver, http: httpx.Client) -> None:
    result = deliver_sms(
        SmsArgs(to="+1 (555) 765-4321", body="x"), twilio(http_receiver), delivery_request(http)
    )
    assert result.ok and http_receiver.requests[0].form is not None
    assert http_receiver.requests[0].form["To"] == "+15557654321"
