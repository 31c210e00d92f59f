"""What every action type shares: the `Channel` registration, the delivery request and its result.

A channel is one module with an args schema (validated in the config file and again after rendering), a
settings schema (its section of the config file, with environment fallbacks) and one `deliver` function.
`deliver` takes rendered args, never reads the database, never raises for a delivery problem: it returns
a `DeliveryResult` saying whether the receiver took it and, if not, whether trying again could help.
The helpers below are the one place that decides what "trying again could help" means for HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Annotated, Any

import httpx
from pydantic import AfterValidator, BaseModel

from funnels import __version__

USER_AGENT = f"funnels/{__version__}"
EXCERPT_CHARS = 500
REDACTED = "***"
# Header names whose values are credentials: never written to the delivery log.
_SECRET_HEADERS = ("authorization", "cookie", "token", "secret", "password", "api-key", "apikey")
_SECRET_QUERY = ("token", "secret", "password", "key", "sig", "auth")


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


# A required text arg: checked in the config file and again after rendering (a template can render to "").
Text = Annotated[str, AfterValidator(_not_blank)]


@dataclass(frozen=True)
class DeliveryRequest:
    """Everything a send needs besides its args and settings."""

    idempotency_key: str  # stable per action job: every attempt of one job carries the same key
    timeout_s: float
    http: httpx.Client
    now_ms: int  # from the injected clock (the webhook signature's timestamp)


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    retryable: bool = False  # network error, timeout, 429 or 5xx: worth another attempt
    error: str | None = None
    status_code: int | None = None
    retry_after_s: float | None = None  # the receiver's Retry-After, when it sent one
    response: str | None = None  # a short excerpt of the receiver's answer, for the delivery log
    sent: dict[str, Any] = field(default_factory=dict)  # what went out (secrets redacted), for the log


DeliverFn = Callable[[Any, Any, DeliveryRequest], DeliveryResult]


@dataclass(frozen=True)
class Channel:
    name: str
    args: type[BaseModel]
    settings: type[BaseModel]
    deliver: DeliverFn
    env: Mapping[str, str] = field(default_factory=dict)  # settings field → environment variable fallback
    # The delivery guarantee an action of this type gets unless its config says otherwise
    # (docs/automation.md, "Delivery guarantees"): at-least-once where the receiver can drop a repeated
    # idempotency key, at-most-once where it cannot.
    guarantee: str = "at-least-once"


def resolve_settings(channel: Channel, section: Mapping[str, Any], environ: Mapping[str, str]) -> BaseModel:
    """The channel's settings: the config section's values, gaps filled from the environment.

    An empty environment variable counts as unset. Raises pydantic's `ValidationError` when a value (from
    either source) is invalid.
    """
    merged = {key: value for key, value in section.items() if value is not None}
    for name, variable in channel.env.items():
        alias = channel.settings.model_fields[name].alias or name
        if alias not in merged and name not in merged and environ.get(variable, "") != "":
            merged[alias] = environ[variable]
    return channel.settings.model_validate(merged)


def failure(error: str, *, retryable: bool = False, sent: dict[str, Any] | None = None) -> DeliveryResult:
    """A delivery that did not happen (by default: not worth retrying, e.g. missing settings)."""
    return DeliveryResult(ok=False, retryable=retryable, error=error, sent=sent or {})


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """At most `limit` characters, marked when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_retry_after(value: str | None, now_ms: int) -> float | None:
    """Seconds to wait from a `Retry-After` value: delay-seconds or an HTTP date (relative to `now_ms`)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; an obsolete form without a zone means the same
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_ms / 1000)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers for the delivery log: values of credential-like headers replaced."""
    return {
        name: REDACTED if any(part in name.lower() for part in _SECRET_HEADERS) else value
        for name, value in headers.items()
    }


def redact_url(url: str) -> str:
    """A URL for the delivery log: the userinfo password and credential-like query values replaced."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return url
    if parsed.password:
        parsed = parsed.copy_with(username=parsed.username, password=REDACTED)
    if parsed.query:
        params = [
            (key, REDACTED if any(part in key.lower() for part in _SECRET_QUERY) else value)
            for key, value in parsed.params.multi_items()
        ]
        parsed = parsed.copy_with(params=params)
    return str(parsed)


def classify_response(response: httpx.Response, now_ms: int, sent: dict[str, Any]) -> DeliveryResult:
    """2xx/3xx: delivered; 429 and 5xx: retry (honouring Retry-After); any other 4xx: do not retry."""
    status = response.status_code
    text = excerpt(response.text)
    if status < 400:
        return DeliveryResult(ok=True, status_code=status, response=text, sent=sent)
    retryable = status == 429 or status >= 500
    return DeliveryResult(
        ok=False,
        retryable=retryable,
        error=f"HTTP {status} {response.reason_phrase}".rstrip(),
        status_code=status,
        retry_after_s=parse_retry_after(response.headers.get("retry-after"), now_ms) if retryable else None,
        response=text,
        sent=sent,
    )


def send_http(
    request: DeliveryRequest, method: str, url: str, *, sent: dict[str, Any], **kwargs: Any
) -> tuple[httpx.Response | None, DeliveryResult]:
    """Send one HTTP request; the response (None when none came) and its classified result.

    Timeouts and network errors are worth retrying; a URL or header that cannot be sent at all is not.
    """
    try:
        response = request.http.request(method, url, timeout=request.timeout_s, **kwargs)
    except httpx.TimeoutException:
        return None, failure(f"no answer within {request.timeout_s:g}s", retryable=True, sent=sent)
    except (
        httpx.UnsupportedProtocol,
        httpx.LocalProtocolError,
        httpx.InvalidURL,
        UnicodeEncodeError,
    ) as error:
        return None, failure(f"cannot send: {error}", sent=sent)
    except httpx.TransportError as error:
        return None, failure(f"{type(error).__name__}: {error}", retryable=True, sent=sent)
    except httpx.HTTPError as error:  # e.g. an undecodable response body: the request did go out
        return None, failure(f"{type(error).__name__}: {error}", sent=sent)
    return response, classify_response(response, request.now_ms, sent)
