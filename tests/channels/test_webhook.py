"""The webhook channel against a real HTTP receiver: signature, headers, bodies, and how failures classify."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from funnels import __version__
from funnels.channels.base import parse_retry_after, redact_url, resolve_settings
from funnels.channels.webhook import (
    CHANNEL,
    WebhookArgs,
    WebhookSettings,
    deliver_webhook,
    sign,
    verify_signature,
)
from tests.receivers import NOW_MS, HttpReceiver, delivery_request, free_port, local_http

SECRET = "whsec-test-123"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with local_http() as client:
        yield client


def settings(secret: str | None = SECRET) -> WebhookSettings:
    resolved = resolve_settings(CHANNEL, {"secret": secret} if secret else {}, {})
    assert isinstance(resolved, WebhookSettings)
    return resolved


def test_a_signed_json_post_carries_idempotency_and_signature_headers(
    http_receiver: HttpReceiver, http: httpx.Client
) -> None:
    args = WebhookArgs(
        url=f"{http_receiver.url}/hooks/converted", headers={"X-Team": "growth"}, body={"id": "u1"}
    )
    result = deliver_webhook(args, settings(), delivery_request(http, key="job-42"))
    assert result.ok and result.status_code == 200 and not result.retryable
    (request,) = http_receiver.requests
    assert (request.method, request.path, request.json) == ("POST", "/hooks/converted", {"id": "u1"})
    headers = request.headers
    assert headers["idempotency-key"] == "job-42"
    assert headers["user-agent"] == f"funnels/{__version__}"
    assert headers["content-type"] == "application/json"
    assert headers["x-team"] == "growth"
    assert headers["funnels-timestamp"] == str(NOW_MS // 1000)
    assert headers["funnels-signature"].startswith("v1=")
    assert verify_signature(SECRET, headers["funnels-timestamp"], request.body, headers["funnels-signature"])
    assert not verify_signature(
        SECRET, headers["funnels-timestamp"], request.body + b" ", headers["funnels-signature"]
    )
    assert not verify_signature(SECRET, str(NOW_MS // 1000 + 1), request.body, headers["funnels-signature"])
    assert not verify_signature(
        "another-secret", headers["funnels-timestamp"], request.body, headers["funnels-signature"]
    )
    assert SECRET not in json.dumps(result.sent)
    assert result.sent["body"] == request.text and result.sent["headers"]["Idempotency-Key"] == "job-42"


def documented_signature(secret: str, timestamp: str, body: bytes) -> str:
    """docs/config.md's recipe ("Verifying webhook signatures"), written out here without `sign`: HMAC-SHA256
    keyed by the secret's UTF-8 bytes over `{Funnels-Timestamp}.{raw body}`, as `v1=` + lower-case hex."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def test_the_signature_is_the_documented_hmac_of_the_bytes_the_receiver_got(
    http_receiver: HttpReceiver, http: httpx.Client
) -> None:
    secret = "whsec-ключ-✓"  # not ASCII: the key is the secret's UTF-8 bytes
    url = f"{http_receiver.url}/hooks"
    sends = [
        WebhookArgs(url=url, body={"b": 1, "a": [1.5, None, True], "name": 'Zoë "q" <t>', "n": {"z": "✓"}}),
        WebhookArgs(url=url, method="PUT", body="plain text, ünïcode"),
        WebhookArgs(url=url, method="GET", body={"ignored": True}),
    ]
    for index, args in enumerate(sends):
        request = delivery_request(http, key=f"job-{index}", now_ms=NOW_MS + index * 1_500)
        assert deliver_webhook(args, settings(secret), request).ok
    received = http_receiver.wait_for(len(sends))
    assert [request.method for request in received] == ["POST", "PUT", "GET"]
    assert received[0].body and received[1].body and received[2].body == b""
    for index, request in enumerate(received):
        timestamp = request.headers["funnels-timestamp"]
        assert timestamp == str((NOW_MS + index * 1_500) // 1000)  # Unix seconds, as a decimal
        assert request.headers["funnels-signature"] == documented_signature(secret, timestamp, request.body)


# docs/config.md's test vector, computed with `openssl dgst -sha256 -hmac whsec_example` over the message.
VECTOR_SECRET, VECTOR_TIMESTAMP, VECTOR_BODY = "whsec_example", 1775001600, b'{"id":"42"}'
VECTOR_SIGNATURE = "v1=042b0e9315b3304250f3a9964a9f3b40514f41f3425b08adaddfc58febf7d89f"


def test_a_delivery_reproduces_the_documented_test_vector(
    http_receiver: HttpReceiver, http: httpx.Client
) -> None:
    docs = (Path(__file__).parents[2] / "docs" / "config.md").read_text()
    assert VECTOR_SIGNATURE in docs and VECTOR_SECRET in docs and VECTOR_BODY.decode() in docs
    args = WebhookArgs(url=http_receiver.url, body={"id": "42"})
    assert deliver_webhook(
        args, settings(VECTOR_SECRET), delivery_request(http, now_ms=VECTOR_TIMESTAMP * 1000)
    ).ok
    (request,) = http_receiver.wait_for(1)
    assert request.body == VECTOR_BODY
    assert request.headers["funnels-timestamp"] == str(VECTOR_TIMESTAMP)
    assert request.headers["funnels-signature"] == VECTOR_SIGNATURE
    assert verify_signature(VECTOR_SECRET, VECTOR_TIMESTAMP, VECTOR_BODY, VECTOR_SIGNATURE)


def test_verify_signature_accepts_any_of_several_signatures_and_text_bodies() -> None:
    body = '{"id":"u1"}'
    good = sign(SECRET, 1700000000, body.encode())
    assert verify_signature(SECRET, 1700000000, body, f"v1=deadbeef, {good}")
    assert verify_signature(SECRET, "1700000000", body.encode(), good)
    assert not verify_signature(SECRET, 1700000000, body, "v1=deadbeef")
    assert not verify_signature(SECRET, 1700000000, body, "")


def test_without_a_secret_requests_go_unsigned(http_receiver: HttpReceiver, http: httpx.Client) -> None:
    result = deliver_webhook(
        WebhookArgs(url=http_receiver.url, body={"a": 1}), settings(None), delivery_request(http)
    )
    assert result.ok
    headers = http_receiver.requests[0].headers
    assert "funnels-signature" not in headers and "funnels-timestamp" not in headers
    assert headers["idempotency-key"] == "job-1"


def test_a_string_body_is_sent_as_is_as_text_unless_the_user_sets_a_content_type(
    http_receiver: HttpReceiver, http: httpx.Client
) -> None:
    deliver_webhook(WebhookArgs(url=http_receiver.url, body="a=1&b=2"), settings(), delivery_request(http))
    xml = WebhookArgs(
        url=http_receiver.url, method="PUT", headers={"content-type": "application/xml"}, body="<a/>"
    )
    deliver_webhook(xml, settings(), delivery_request(http))
    text, sent_xml = http_receiver.wait_for(2)
    assert text.body == b"a=1&b=2" and text.headers["content-type"] == "text/plain; charset=utf-8"
    assert sent_xml.method == "PUT" and sent_xml.body == b"<a/>"
    assert sent_xml.headers["content-type"] == "application/xml"


def test_get_and_delete_send_no_body_and_the_signature_covers_the_empty_body(
    http_receiver: HttpReceiver, http: httpx.Client
) -> None:
    for method in ("GET", "DELETE"):
        args = WebhookArgs(url=f"{http_receiver.url}/x?user=u1", method=method, body={"ignored": True})
        assert deliver_webhook(args, settings(), delivery_request(http)).ok
    for request, method in zip(http_receiver.wait_for(2), ("GET", "DELETE"), strict=True):
        assert (request.method, request.body, request.query) == (method, b"", {"user": "u1"})
        headers = request.headers
        assert verify_signature(SECRET, headers["funnels-timestamp"], b"", headers["funnels-signature"])


def test_our_idempotency_key_wins_and_credentials_are_redacted_in_the_log(
    http_receiver: HttpReceiver, http: httpx.Client
) -> None:
    args = WebhookArgs(
        url=f"{http_receiver.url}/h?token=t0k&page=2",
        headers={
            "idempotency-key": "theirs",
            "Authorization": "Bearer sk-live-1",
            "User-Agent": "crm-sync/1",
        },
        body={"a": 1},
    )
    result = deliver_webhook(args, settings(), delivery_request(http, key="ours"))
    request = http_receiver.requests[0]
    assert request.headers["idempotency-key"] == "ours"
    assert (
        request.headers["authorization"] == "Bearer sk-live-1"
        and request.headers["user-agent"] == "crm-sync/1"
    )
    logged = json.dumps(result.sent)
    assert "sk-live-1" not in logged and "t0k" not in logged
    assert "page=2" in result.sent["url"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # Nothing to redact: logged as rendered, not as a URL parser would rewrite it.
        ("https://Hooks.Example.com/a%7eb/c", "https://Hooks.Example.com/a%7eb/c"),
        ("https://u:secret@hooks.example.com/h", "https://u:***@hooks.example.com/h"),
        (
            "https://hooks.example.com/h?api_key=k1&page=2",
            "https://hooks.example.com/h?api_key=***&page=2",
        ),
        ("https://hooks.example.com/h?page=2", "https://hooks.example.com/h?page=2"),
    ],
)
def test_redact_url_touches_only_credentials(url: str, shown: str) -> None:
    if "@" not in url and "?" not in url:
        assert redact_url(url) == url  # verbatim, not normalized
    assert unquote(redact_url(url)) == unquote(shown)  # the mark is percent-encoded in a URL
    assert redact_url(redact_url(url)) == redact_url(url)  # idempotent


def test_a_password_in_the_url_is_sent_as_basic_auth_but_not_logged(
    http_receiver: HttpReceiver, http: httpx.Client
) -> None:
    url = f"http://hook:pa55@{http_receiver.url.removeprefix('http://')}/h"
    result = deliver_webhook(WebhookArgs(url=url), settings(), delivery_request(http))
    assert http_receiver.requests[0].headers["authorization"].startswith("Basic ")
    assert result.ok and "pa55" not in json.dumps(result.sent) and "hook:" in result.sent["url"]


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "retry_after_s"),
    [
        (500, {}, True, None),
        (503, {"Retry-After": "7"}, True, 7.0),
        (429, {"Retry-After": "120"}, True, 120.0),
        (
            429,
            {"Retry-After": format_datetime(datetime.fromtimestamp(NOW_MS / 1000 + 90, UTC), usegmt=True)},
            True,
            90.0,
        ),
        (404, {"Retry-After": "5"}, False, None),
        (400, {}, False, None),
    ],
)
def test_failures_are_classified_by_status(
    http_receiver: HttpReceiver,
    http: httpx.Client,
    status: int,
    headers: dict[str, str],
    retryable: bool,
    retry_after_s: float | None,
) -> None:
    http_receiver.reply("/h", status, {"error": "nope"}, headers)
    result = deliver_webhook(WebhookArgs(url=f"{http_receiver.url}/h"), settings(), delivery_request(http))
    assert not result.ok and result.status_code == status
    assert result.retryable is retryable and result.retry_after_s == retry_after_s
    assert result.error is not None and str(status) in result.error
    assert result.response == '{"error": "nope"}'


def test_redirects_count_as_delivered(http_receiver: HttpReceiver, http: httpx.Client) -> None:
    http_receiver.reply("/h", 302, b"", {"Location": "/elsewhere"})
    result = deliver_webhook(WebhookArgs(url=f"{http_receiver.url}/h"), settings(), delivery_request(http))
    assert result.ok and result.status_code == 302 and len(http_receiver.requests) == 1


def test_the_response_excerpt_is_short(http_receiver: HttpReceiver, http: httpx.Client) -> None:
    http_receiver.reply("/h", 500, "x" * 5_000)
    result = deliver_webhook(WebhookArgs(url=f"{http_receiver.url}/h"), settings(), delivery_request(http))
    assert result.response is not None and len(result.response) <= 500 and result.response.startswith("xxx")


def test_a_closed_port_is_retryable(http: httpx.Client) -> None:
    url = f"http://127.0.0.1:{free_port()}/h"
    result = deliver_webhook(WebhookArgs(url=url), settings(), delivery_request(http))
    assert not result.ok and result.retryable and result.status_code is None and result.error
    assert not result.maybe_delivered  # nothing went out: an at-most-once job may be retried


def test_a_slow_receiver_times_out_and_is_retryable(http_receiver: HttpReceiver, http: httpx.Client) -> None:
    http_receiver.reply("/slow", 200, {"ok": True}, delay_s=5)
    started = time.monotonic()
    result = deliver_webhook(
        WebhookArgs(url=f"{http_receiver.url}/slow"), settings(), delivery_request(http, timeout_s=0.3)
    )
    assert time.monotonic() - started < 3
    assert not result.ok and result.retryable and result.error == "no answer within 0.3s"
    assert len(http_receiver.requests) == 1  # it did arrive: hence the idempotency key on the retry
    assert result.maybe_delivered  # an at-most-once job ends `unknown` instead of a retry


def test_an_unsendable_url_or_header_is_not_retryable_and_does_not_raise(
    http_receiver: HttpReceiver, http: httpx.Client
) -> None:
    cases = [
        WebhookArgs(url="ftp://example.test/x"),
        WebhookArgs(url="not a url"),
        WebhookArgs(
            url=http_receiver.url, headers={"X-Name": "a\r\nX-Injected: 1"}
        ),  # a rendered header value
    ]
    for args in cases:
        result = deliver_webhook(args, settings(), delivery_request(http))
        assert (
            not result.ok and not result.retryable and result.error and result.error.startswith("cannot send")
        )
    assert http_receiver.requests == []


def test_retry_after_parsing() -> None:
    now = NOW_MS
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("-3", now) == 0.0
    past = format_datetime(datetime.fromtimestamp(now / 1000, UTC) - timedelta(minutes=5), usegmt=True)
    assert parse_retry_after(past, now) == 0.0
    assert parse_retry_after("Wed, 01 Apr 2026 00:01:00 GMT", now) == 60.0
    for bad in (None, "", "soon", "Wed, 99 Foo 2026"):
        assert parse_retry_after(bad, now) is None


def test_settings_take_the_secret_from_the_environment_unless_the_file_sets_it() -> None:
    from_env = resolve_settings(CHANNEL, {}, {"FUNNELS_WEBHOOK_SECRET": "env-secret"})
    from_file = resolve_settings(CHANNEL, {"secret": "file-secret"}, {"FUNNELS_WEBHOOK_SECRET": "env-secret"})
    empty_env = resolve_settings(CHANNEL, {}, {"FUNNELS_WEBHOOK_SECRET": ""})
    assert isinstance(from_env, WebhookSettings) and isinstance(from_file, WebhookSettings)
    assert from_env.secret is not None and from_env.secret.get_secret_value() == "env-secret"
    assert from_file.secret is not None and from_file.secret.get_secret_value() == "file-secret"
    assert isinstance(empty_env, WebhookSettings) and empty_env.secret is None
    assert "file-secret" not in repr(from_file)


def test_attempts_of_one_job_share_a_key_so_a_deduplicating_receiver_acts_once(
    http_receiver: HttpReceiver, http: httpx.Client
) -> None:
    http_receiver.responses["/h"].append((503, {}, b"busy"))  # a plain (status, headers, body) tuple
    args = WebhookArgs(url=f"{http_receiver.url}/h", body={"id": "u1"})
    first = deliver_webhook(args, settings(), delivery_request(http, key="job-9"))
    retry = deliver_webhook(args, settings(), delivery_request(http, key="job-9", now_ms=NOW_MS + 2_000))
    other = deliver_webhook(args, settings(), delivery_request(http, key="job-10"))
    assert (first.ok, first.retryable, retry.ok, other.ok) == (False, True, True, True)
    groups = http_receiver.by_idempotency_key()
    assert list(groups) == ["job-9", "job-10"] and len(groups["job-9"]) == 2
    assert [request.headers["idempotency-key"] for request in http_receiver.unique()] == ["job-9", "job-10"]
    # each attempt is signed at its own time
    stamps = [request.headers["funnels-timestamp"] for request in groups["job-9"]]
    assert stamps == [str(NOW_MS // 1000), str(NOW_MS // 1000 + 2)]
