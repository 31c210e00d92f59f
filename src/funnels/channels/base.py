"""What every action type shares: the `Channel` registration, the delivery request and its result.

A channel is one module with an args schema (validated in the config file and again after rendering), a
settings schema (its section of the config file, with environment fallbacks) and one `deliver` function.
`deliver` takes rendered args, never reads the database, never raises for a delivery problem: it returns
a `DeliveryResult` saying whether the receiver took it and, if not, whether trying again could help.
The helpers below are the one place that decides what "trying again could help" means for HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC
from email.utils import parsedate_to_datetime
from functools import cache
from types import MappingProxyType
from typing import Annotated, Any
from urllib.parse import quote

import httpx
from pydantic import AfterValidator, BaseModel, SecretStr

from funnels import __version__
from funnels.channels.network import AddressRefused

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
class Escape:
    """Marks an args field whose interpolated values (each `{{ }}` output) are escaped for its syntax.

    The template's literal text is left alone: only what a variable brings in is escaped, like Jinja's
    autoescape. `funnels.automation.templates` renders the field with this escaper.
    """

    name: str
    escape: Callable[[str], str]


@dataclass(frozen=True)
class Sensitive:
    """Marks an args field that may carry a credential: `redact` gives what the delivery log may show."""

    redact: Callable[[Any], Any]


def percent_encode(value: str) -> str:
    """A value for a URL: every character outside RFC 3986's unreserved set percent-encoded (UTF-8), so
    a value stays one path segment or one query value (`../admin?x=` cannot climb or add a query)."""
    if value in (".", ".."):  # dot segments: a client or server would resolve them
        return "%2E" * len(value)
    return quote(value, safe="")


URL_VALUE = Escape("url", percent_encode)


def _redact_any(value: Any) -> Any:
    return REDACTED if value not in (None, "") else value


def _redact_headers_any(value: Any) -> Any:
    return redact_headers(value) if isinstance(value, Mapping) else _redact_any(value)


def _redact_url_any(value: Any) -> Any:
    return redact_url(value) if isinstance(value, str) else _redact_any(value)


SECRET = Sensitive(_redact_any)  # the whole value (a token, a password)
SECRET_HEADERS = Sensitive(_redact_headers_any)  # values of credential-like headers
SECRET_URL = Sensitive(_redact_url_any)  # a URL's userinfo password and credential-like query values

# A URL arg: interpolated values percent-encoded, credentials in it redacted in the log.
Url = Annotated[str, AfterValidator(_not_blank), URL_VALUE, SECRET_URL]


@cache
def _markers(model: type[BaseModel], kind: type[Any]) -> Mapping[str, Any]:
    """The args fields (by the name used in the config file) carrying a marker of `kind` (read once per
    schema: every delivery redacts its args several times)."""
    found = {}
    for name, info in model.model_fields.items():
        for marker in info.metadata:
            if isinstance(marker, kind):
                found[info.alias or name] = marker
    return MappingProxyType(found)


def escapers(model: type[BaseModel]) -> Mapping[str, Escape]:
    """Args field → the escaper for values interpolated into it (fields without one are not escaped)."""
    return _markers(model, Escape)


def redact(model: type[BaseModel], values: Mapping[str, Any]) -> dict[str, Any]:
    """Args (rendered or as sent) for the delivery log, the API, the dashboard and `funnels replay`: each
    field the channel's args schema marks `Sensitive` redacted. The one redaction of args; idempotent."""
    sensitive: Mapping[str, Sensitive] = _markers(model, Sensitive)
    return {key: sensitive[key].redact(value) if key in sensitive else value for key, value in values.items()}


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _pair(before: Any, after: Any, pairs: dict[str, str]) -> None:
    """Each string of `before` that redaction changed, with what `after` shows in its place."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        for key, value in before.items():
            _pair(value, after.get(key), pairs)
    elif isinstance(before, list | tuple) and isinstance(after, list | tuple) and len(before) == len(after):
        for value, shown in zip(before, after, strict=True):
            _pair(value, shown, pairs)
    elif isinstance(before, str):
        if before and before != after:
            pairs[before] = after if isinstance(after, str) else REDACTED
    elif before != after:  # a container redacted whole
        pairs.update((text, REDACTED) for text in _strings(before) if text)


@dataclass(frozen=True)
class Redactor:
    """Removes one job's secrets from what is kept of it: its args (`redact`), and any text (an error, a
    receiver's answer that echoes a header) where a secret value of its args or settings appears."""

    model: type[BaseModel]
    replacements: tuple[tuple[str, str], ...]  # (secret text, what shows instead), longest first

    @classmethod
    def of(cls, model: type[BaseModel], values: Mapping[str, Any], settings: BaseModel | None) -> Redactor:
        pairs: dict[str, str] = {}
        _pair(values, redact(model, values), pairs)
        if settings is not None:
            for name in type(settings).model_fields:
                value = getattr(settings, name)
                if isinstance(value, SecretStr) and value.get_secret_value():
                    pairs[value.get_secret_value()] = REDACTED
        ordered = sorted(pairs.items(), key=lambda pair: -len(pair[0]))
        return cls(model, tuple(ordered))

    def args(self, values: Mapping[str, Any]) -> dict[str, Any]:
        return redact(self.model, values)

    def text(self, text: str | None) -> str | None:
        if text is None:
            return None
        for secret, shown in self.replacements:
            text = text.replace(secret, shown)
        return text

    def result(self, result: DeliveryResult) -> DeliveryResult:
        """The result with its `sent` args redacted and secrets removed from its error and response."""
        return replace(
            result,
            error=self.text(result.error),
            response=self.text(result.response),
            sent=self.args(result.sent),
        )


@dataclass(frozen=True)
class Unsubscribe:
    """How the recipient of a non-transactional message opts out (`funnels.automation.consent`): the
    one-click URL (None when the server's public URL is not known) and the signed token it carries."""

    url: str | None
    token: str


@dataclass(frozen=True)
class DeliveryRequest:
    """Everything a send needs besides its args and settings."""

    idempotency_key: str  # stable per action job: every attempt of one job carries the same key
    timeout_s: float
    http: httpx.Client
    now_ms: int  # from the injected clock (the webhook signature's timestamp)
    unsubscribe: Unsubscribe | None = None  # set for an email or SMS that is not transactional


@dataclass(frozen=True)
class DeliveryResult:
    ok: bool
    retryable: bool = False  # network error, timeout, 429 or 5xx: worth another attempt
    error: str | None = None
    status_code: int | None = None
    retry_after_s: float | None = None  # the receiver's Retry-After, when it sent one
    response: str | None = None  # a short excerpt of the receiver's answer, for the delivery log
    sent: dict[str, Any] = field(default_factory=dict)  # what went out (secrets redacted), for the log
    # The request went out but no answer came (a read timeout, a connection dropped while waiting): the
    # receiver may have acted on it. An at-most-once job then ends `unknown` instead of being retried.
    maybe_delivered: bool = False


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


def failure(
    error: str,
    *,
    retryable: bool = False,
    sent: dict[str, Any] | None = None,
    maybe_delivered: bool = False,
) -> DeliveryResult:
    """A delivery that did not happen (by default: not worth retrying, e.g. missing settings), or whose
    outcome is not known (`maybe_delivered`)."""
    return DeliveryResult(
        ok=False, retryable=retryable, error=error, sent=sent or {}, maybe_delivered=maybe_delivered
    )


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
    """A URL for the delivery log: the userinfo password and credential-like query values replaced (a URL
    with neither userinfo nor a query is returned as it is, unparsed: most webhook URLs, on every send)."""
    if "@" not in url and "?" not in url:
        return url
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

    Timeouts and network errors are worth retrying; a URL or header that cannot be sent at all, or an
    address the network guard refuses (`funnels.channels.network`), is not. A failure after the request
    may have gone out (no answer in time, the connection dropped while sending or waiting) is marked
    `maybe_delivered`; one before it could (no connection, no free connection) is not.
    """
    try:
        response = request.http.request(method, url, timeout=request.timeout_s, **kwargs)
    except AddressRefused as error:  # the same address next time: not worth retrying
        return None, failure(str(error), sent=sent)
    except (httpx.ConnectTimeout, httpx.PoolTimeout):
        return None, failure(f"no connection within {request.timeout_s:g}s", retryable=True, sent=sent)
    except httpx.TimeoutException:
        return None, failure(
            f"no answer within {request.timeout_s:g}s", retryable=True, sent=sent, maybe_delivered=True
        )
    except (
        httpx.UnsupportedProtocol,
        httpx.LocalProtocolError,
        httpx.InvalidURL,
        UnicodeEncodeError,
    ) as error:
        return None, failure(f"cannot send: {error}", sent=sent)
    except (httpx.ConnectError, httpx.ProxyError) as error:
        return None, failure(f"{type(error).__name__}: {error}", retryable=True, sent=sent)
    except httpx.TransportError as error:  # read, write or protocol errors: the request may have gone out
        return None, failure(
            f"{type(error).__name__}: {error}", retryable=True, sent=sent, maybe_delivered=True
        )
    except httpx.HTTPError as error:  # e.g. an undecodable response body: the request did go out
        return None, failure(f"{type(error).__name__}: {error}", sent=sent)
    return response, classify_response(response, request.now_ms, sent)
