"""`webhook`: an HTTP request to `url`, signed with HMAC-SHA256 over timestamp + body when a secret is set.

Signed requests carry `Funnels-Timestamp` (Unix seconds) and `Funnels-Signature: v1=<hex>`, the
HMAC-SHA256 of `"{timestamp}.{raw body}"` keyed by the `webhook.secret` setting; a receiver recomputes it
(`verify_signature`) and should also reject old timestamps. Without a secret requests go unsigned.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, SecretStr

from funnels.channels.base import (
    SECRET_HEADERS,
    USER_AGENT,
    Channel,
    DeliveryRequest,
    DeliveryResult,
    Url,
    failure,
    redact,
    send_http,
)

SIGNATURE_VERSION = "v1"
_OURS = ("idempotency-key", "funnels-timestamp", "funnels-signature")


class WebhookArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url  # values interpolated into it are percent-encoded
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: Annotated[dict[str, str], SECRET_HEADERS] = {}
    body: str | dict[str, Any] | list[Any] | None = None


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: SecretStr | None = None  # HMAC signing secret; None: requests go unsigned


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The `Funnels-Signature` value for a body sent at `timestamp` (Unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify_signature(secret: str, timestamp: int | str, body: bytes | str, header: str) -> bool:
    """Whether a `Funnels-Signature` header (one or more comma-separated `v1=…`) matches the body."""
    raw = body.encode() if isinstance(body, str) else body
    expected = sign(secret, str(timestamp).strip(), raw)
    # compare_digest keeps the comparison time independent of where the strings differ
    return any(hmac.compare_digest(expected, candidate.strip()) for candidate in header.split(","))


def _encode_body(args: WebhookArgs, headers: dict[str, str]) -> bytes:
    """The raw body, and a Content-Type unless the user set one."""
    if args.method in ("GET", "DELETE") or args.body is None:
        return b""
    if isinstance(args.body, str):
        content, content_type = args.body.encode(), "text/plain; charset=utf-8"
    else:
        content, content_type = orjson.dumps(args.body, option=orjson.OPT_NON_STR_KEYS), "application/json"
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = content_type
    return content


def deliver_webhook(args: WebhookArgs, settings: WebhookSettings, request: DeliveryRequest) -> DeliveryResult:
    """Send the request; signed when `settings.secret` is set."""
    # The user may set Content-Type and User-Agent; the idempotency and signature headers are always ours
    # (a receiver relies on them), whatever the case of the user's header names.
    headers = {name: value for name, value in args.headers.items() if name.lower() not in _OURS}
    if not any(name.lower() == "user-agent" for name in headers):
        headers["User-Agent"] = USER_AGENT
    headers["Idempotency-Key"] = request.idempotency_key
    sent: dict[str, Any] = redact(WebhookArgs, {"method": args.method, "url": args.url})
    try:
        content = _encode_body(args, headers)
    except (TypeError, orjson.JSONEncodeError) as error:
        return failure(f"cannot encode the body as JSON: {error}", sent=sent)
    if settings.secret is not None:
        timestamp = request.now_ms // 1000
        headers["Funnels-Timestamp"] = str(timestamp)
        headers["Funnels-Signature"] = sign(settings.secret.get_secret_value(), timestamp, content)
    sent |= redact(WebhookArgs, {"headers": headers, "body": content.decode(errors="replace")})
    _, result = send_http(request, args.method, args.url, sent=sent, headers=headers, content=content)
    return result


CHANNEL = Channel(
    name="webhook",
    args=WebhookArgs,
    settings=WebhookSettings,
    deliver=deliver_webhook,
    env={"secret": "FUNNELS_WEBHOOK_SECRET"},
)
