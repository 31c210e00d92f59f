"""`sms`: a text message through Twilio's REST API (account settings in the config or the environment)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from funnels.channels.base import Channel, DeliveryRequest, DeliveryResult, Text, failure, send_http


class SmsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: Text
    body: Text
    from_: str | None = Field(default=None, alias="from")


class SmsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    account_sid: str | None = Field(default=None, alias="accountSid")
    auth_token: SecretStr | None = Field(default=None, alias="authToken")
    from_: str | None = Field(default=None, alias="from")
    base_url: str = Field(default="https://api.twilio.com", alias="baseUrl")


# Separators people write inside one number; anything else (a comma, a second "+") is not one number.
_SEPARATORS = re.compile(r"[\s().\-]")
_NUMBER = re.compile(r"\+?[0-9]{3,15}")  # E.164 has at most 15 digits; short codes have a few
_PREFIXES = ("whatsapp:",)  # Twilio's channel prefixes for the same number format


def one_number(value: str, field: str) -> str:
    """`value` as exactly one phone number (`+15550100`: an optional `+` and 3–15 digits once spaces, dots,
    dashes and parentheses are dropped; Twilio's `whatsapp:` prefix kept); ValueError for anything else,
    such as two numbers."""
    prefix = next((p for p in _PREFIXES if value.strip().lower().startswith(p)), "")
    number = _SEPARATORS.sub("", value.strip()[len(prefix) :])
    if not _NUMBER.fullmatch(number):
        raise ValueError(f"{field}: {value!r} is not exactly one phone number (such as +15551234567)")
    return prefix + number


def deliver_sms(args: SmsArgs, settings: SmsSettings, request: DeliveryRequest) -> DeliveryResult:
    """Create the message with Twilio's Messages API."""
    sender = args.from_ or settings.from_
    sid = settings.account_sid or ""
    token = settings.auth_token.get_secret_value() if settings.auth_token else ""
    url = f"{settings.base_url.rstrip('/')}/2010-04-01/Accounts/{sid}/Messages.json"
    form = {"To": args.to, "From": sender or "", "Body": args.body}
    sent: dict[str, Any] = {"url": url, "form": form}
    missing = [
        setting
        for setting, value in (
            ("sms.accountSid or TWILIO_ACCOUNT_SID", sid),
            ("sms.authToken or TWILIO_AUTH_TOKEN", token),
        )
        if not value
    ]
    if missing:
        return failure(f"sms is not configured: set {' and '.join(missing)}", sent=sent)
    if not sender:
        return failure("no sender: set args.from or sms.from (FUNNELS_SMS_FROM)", sent=sent)
    try:
        form["To"] = one_number(args.to, "to")
    except ValueError as error:
        return failure(f"invalid phone number: {error}", sent=sent)
    _, result = send_http(
        request,
        "POST",
        url,
        sent=sent,
        data=form,
        auth=(sid, token),
        # Twilio drops a repeated request with the same token (within its retention window).
        headers={"I-Twilio-Idempotency-Token": request.idempotency_key},
    )
    return result


CHANNEL = Channel(
    name="sms",
    args=SmsArgs,
    settings=SmsSettings,
    deliver=deliver_sms,
    env={
        "account_sid": "TWILIO_ACCOUNT_SID",
        "auth_token": "TWILIO_AUTH_TOKEN",
        "from_": "FUNNELS_SMS_FROM",
        "base_url": "FUNNELS_TWILIO_BASE_URL",
    },
    guarantee="at-most-once",  # its receivers cannot drop a repeated idempotency key
)
