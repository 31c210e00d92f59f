"""`slack`: a message by incoming-webhook `url`, or by a bot token to `channel` (`chat.postMessage`).

A bot's token comes from `args.token`, else the `slack.token` setting. Slack's Web API answers HTTP 200
with `{"ok": false, "error": …}` when it refuses a message, so a 200 is only a success with `"ok": true`.
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from funnels.channels.base import (
    REDACTED,
    SECRET,
    URL_VALUE,
    Channel,
    DeliveryRequest,
    DeliveryResult,
    Escape,
    Sensitive,
    Text,
    failure,
    parse_retry_after,
    redact,
    send_http,
)

# Slack's documented transient errors: the message was not posted, and the same call may succeed later.
_TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


def escape_text(value: str) -> str:
    """Slack's escaping for message text: `&`, `<` and `>` as entities, so a value cannot mention
    (`<!channel>`), link (`<https://…|label>`) or otherwise format anything."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _webhook_url_for_log(url: Any) -> Any:
    # An incoming webhook's URL is its credential: its last path segment is the secret part.
    if not isinstance(url, str):
        return REDACTED if url is not None else None
    return url.rsplit("/", 1)[0] + "/" + REDACTED if "/" in url else REDACTED


SLACK_TEXT = Escape("slack", escape_text)
WEBHOOK_URL = Sensitive(_webhook_url_for_log)


class SlackArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: Annotated[Text, SLACK_TEXT]  # interpolated values escaped; the template's own markup kept
    url: Annotated[Text | None, URL_VALUE, WEBHOOK_URL] = None
    token: Annotated[str | None, SECRET] = None
    channel: Text | None = None

    @model_validator(mode="after")
    def _one_way_to_send(self) -> SlackArgs:
        if self.url is None and self.channel is None:
            raise ValueError(
                "needs `url` (an incoming webhook) or `channel` (a bot: `token` here or the slack.token setting)"
            )
        return self


class SlackSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    token: SecretStr | None = None  # the default bot token
    api_url: str = Field(default="https://slack.com/api", alias="apiUrl")


def _api_verdict(response: httpx.Response, result: DeliveryResult, now_ms: int) -> DeliveryResult:
    """A Web API 2xx: delivered only with `"ok": true`."""
    try:
        answer = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        answer = None
    if isinstance(answer, dict) and answer.get("ok") is True:
        return result
    error = str(answer.get("error", "no error given")) if isinstance(answer, dict) else "not a JSON object"
    transient = error in _TRANSIENT_ERRORS
    return DeliveryResult(
        ok=False,
        retryable=transient,
        error=f"Slack refused the message: {error}",
        status_code=result.status_code,
        retry_after_s=parse_retry_after(response.headers.get("retry-after"), now_ms) if transient else None,
        response=result.response,
        sent=result.sent,
    )


def deliver_slack(args: SlackArgs, settings: SlackSettings, request: DeliveryRequest) -> DeliveryResult:
    """Post the message to the incoming webhook, or as the bot."""
    headers = {"Idempotency-Key": request.idempotency_key}
    if args.url is not None:
        sent: dict[str, Any] = redact(SlackArgs, {"url": args.url, "text": args.content})
        _, result = send_http(
            request, "POST", args.url, sent=sent, headers=headers, json={"text": args.content}
        )
        return result
    url = settings.api_url.rstrip("/") + "/chat.postMessage"
    sent = {"api": url, "channel": args.channel, "text": args.content}
    token = args.token or (settings.token.get_secret_value() if settings.token else None)
    if not token:
        return failure("no Slack token: set args.token or slack.token", sent=sent)
    headers["Authorization"] = f"Bearer {token}"
    # Slack asks for an explicit charset on JSON bodies.
    headers["Content-Type"] = "application/json; charset=utf-8"
    content = orjson.dumps({"channel": args.channel, "text": args.content})
    response, result = send_http(request, "POST", url, sent=sent, headers=headers, content=content)
    if response is None or not result.ok:
        return result
    return _api_verdict(response, result, request.now_ms)


CHANNEL = Channel(
    name="slack",
    args=SlackArgs,
    settings=SlackSettings,
    deliver=deliver_slack,
    env={"token": "FUNNELS_SLACK_TOKEN", "api_url": "FUNNELS_SLACK_API_URL"},
    guarantee="at-most-once",  # its receivers cannot drop a repeated idempotency key
)
