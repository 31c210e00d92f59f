"""Real receivers for delivery tests: an HTTP server and an SMTP server on 127.0.0.1, each in a thread.

`HttpReceiver` records every request and answers from a per-path queue of programmed replies (else
`default_reply`, 200 `{"ok": true}`); a reply may wait first, to make a sender time out. It notes when each
answer went out, so `overlapping` finds one idempotency key sent twice at once. `SmtpReceiver` is an aiosmtpd
server that records every message and can refuse recipients or data with a given SMTP reply.
"""

from __future__ import annotations

import email
import email.policy
import itertools
import json
import socket
import ssl
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qsl, urlsplit

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from funnels.channels.base import DeliveryRequest
from funnels.channels.network import guarded_client, parse_networks

NOW_MS = 1_775_001_600_000  # 2026-04-01T00:00:00Z, the tests' usual clock start
# What a config that delivers to these receivers allows: they listen on loopback, which is refused otherwise.
LOOPBACK = ["127.0.0.1/32"]
NETWORK = {"allow": LOOPBACK}  # the config's `network` section for them


def now_and_later_webhooks(receiver: HttpReceiver) -> list[dict[str, object]]:
    """A step's actions for the process tests: a webhook to `/now` at once and one to `/later` 3 s later,
    each naming the instance's first id as `n`."""
    return [
        {"type": "webhook", "args": {"url": f"{receiver.url}/now", "body": {"n": "{{ ids[0] }}"}}},
        {
            "type": "webhook",
            "delay": "3s",
            "args": {"url": f"{receiver.url}/later", "body": {"n": "{{ ids[0] }}"}},
        },
    ]


def local_http() -> httpx.Client:
    """The channels' HTTP client (as the worker builds it) with loopback allowed, for these receivers."""
    allowed = parse_networks(LOOPBACK)
    return guarded_client(lambda: allowed)


def delivery_request(
    http: httpx.Client, key: str = "job-1", timeout_s: float = 2.0, now_ms: int = NOW_MS
) -> DeliveryRequest:
    """A `DeliveryRequest` as the worker builds it, with test defaults."""
    return DeliveryRequest(idempotency_key=key, timeout_s=timeout_s, http=http, now_ms=now_ms)


class Reply(NamedTuple):
    """A programmed answer; a plain `(status, headers, body)` tuple works too."""

    status: int = 200
    headers: dict[str, str] | None = None
    body: bytes | str | dict[str, Any] | list[Any] = b""
    delay_s: float = 0.0  # wait before answering (a sender with a shorter timeout gives up)


DEFAULT_REPLY = Reply(200, {}, {"ok": True})


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    json: Any  # the parsed body when it was JSON, else None
    form: dict[str, str] | None  # the parsed body when it was a form, else None
    received_at: float  # time.monotonic()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def _parse_request(method: str, target: str, headers: dict[str, str], body: bytes) -> ReceivedRequest:
    parts = urlsplit(target)
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    parsed_json: Any = None
    form = None
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            parsed_json = json.loads(body)
        except ValueError:
            parsed_json = None
    elif content_type == "application/x-www-form-urlencoded":
        form = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    return ReceivedRequest(
        method=method,
        path=parts.path,
        query=dict(parse_qsl(parts.query, keep_blank_values=True)),
        headers=headers,
        body=body,
        json=parsed_json,
        form=form,
        received_at=time.monotonic(),
    )


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _handle(self) -> None:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if len(body) < length:  # the sender died mid-request: like any server, act on nothing
            self.close_connection = True
            return
        request = _parse_request(self.command, self.path, headers, body)
        receiver = self.server.receiver
        index, reply = receiver._record(request)
        try:
            self._reply(reply)
        finally:  # answered, or the sender is gone: either way this send is over
            receiver._answered(index)

    def _reply(self, reply: Reply) -> None:
        # Waiting on the closing event (not sleeping) lets close() release a slow reply at once.
        if reply.delay_s and self.server.receiver._closing.wait(reply.delay_s):
            return
        payload = reply.body
        reply_headers = dict(reply.headers or {})
        if isinstance(payload, dict | list):
            payload = json.dumps(payload).encode()
            reply_headers.setdefault("Content-Type", "application/json")
        elif isinstance(payload, str):
            payload = payload.encode()
            reply_headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        self.send_response(reply.status)
        for name, value in reply_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler still waiting on a slow reply must not hold up close()

    def __init__(self, receiver: HttpReceiver) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout) leaves a broken pipe: expected in these tests


class HttpReceiver:
    """A real HTTP server on a free port of 127.0.0.1 that records requests and answers as programmed."""

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self.responses: defaultdict[str, deque[Reply | tuple[Any, ...]]] = defaultdict(deque)
        self.default_reply = DEFAULT_REPLY  # the answer to a request with no programmed reply for its path
        # Index in `requests` → time.monotonic() when the receiver was done with it: its answer went out, or
        # could not (the sender was gone).
        self.answered_at: dict[int, float] = {}
        self._lock = threading.Condition()
        self._closing = threading.Event()
        self._server = _Server(self)
        self._scheme = "http"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="http-receiver", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}"

    def wrap_tls(self, context: ssl.SSLContext) -> None:
        """Serve HTTPS from now on, with `context`'s certificate (each connection's handshake happens in
        its handler thread, so a client that rejects the certificate does not stall the server)."""
        self._server.socket = context.wrap_socket(
            self._server.socket, server_side=True, do_handshake_on_connect=False
        )
        self._scheme = "https"

    def reply(
        self,
        path: str,
        status: int = 200,
        body: bytes | str | dict[str, Any] | list[Any] = b"",
        headers: dict[str, str] | None = None,
        delay_s: float = 0.0,
    ) -> None:
        """Queue one answer for the next request to `path`."""
        with self._lock:
            self.responses[path].append(Reply(status, headers or {}, body, delay_s))

    def _record(self, request: ReceivedRequest) -> tuple[int, Reply]:
        with self._lock:
            self.requests.append(request)
            queue = self.responses.get(request.path)
            reply = Reply(*queue.popleft()) if queue else self.default_reply
            self._lock.notify_all()
            return len(self.requests) - 1, reply

    def _answered(self, index: int) -> None:
        with self._lock:
            self.answered_at[index] = time.monotonic()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[ReceivedRequest]:
        """Block until at least `count` requests arrived; all of them (AssertionError on timeout)."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(
                    f"expected {count} request(s) within {timeout}s, got {len(self.requests)}"
                )
            return list(self.requests)

    def by_idempotency_key(self) -> dict[str, list[ReceivedRequest]]:
        """Requests grouped by their Idempotency-Key header, keys in order of first arrival."""
        groups: dict[str, list[ReceivedRequest]] = {}
        with self._lock:
            for request in self.requests:
                groups.setdefault(request.headers.get("idempotency-key", ""), []).append(request)
        return groups

    def unanswered(self) -> list[ReceivedRequest]:
        """The requests the receiver is still holding (their answer has not gone out yet)."""
        with self._lock:
            return [request for index, request in enumerate(self.requests) if index not in self.answered_at]

    def overlapping(self) -> list[tuple[ReceivedRequest, ReceivedRequest]]:
        """Pairs of requests with one Idempotency-Key where the second arrived before the receiver was done
        with the first: one action being sent twice at once. Empty if there is none."""
        with self._lock:
            spans: dict[str, list[tuple[float, float, int]]] = {}
            for index, request in enumerate(self.requests):
                key = request.headers.get("idempotency-key", "")
                answered = self.answered_at.get(index, float("inf"))
                spans.setdefault(key, []).append((request.received_at, answered, index))
            pairs = []
            for key_spans in spans.values():
                key_spans.sort()  # by arrival: if any two overlap, two neighbours do
                for (_, first_answered, first), (second_arrived, _, second) in itertools.pairwise(key_spans):
                    if second_arrived < first_answered:
                        pairs.append((self.requests[first], self.requests[second]))
            return pairs

    def unique(self) -> list[ReceivedRequest]:
        """What a receiver that dedups by Idempotency-Key would act on: the first request per key."""
        return [requests[0] for requests in self.by_idempotency_key().values()]

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    authenticated: bool  # whether the client logged in (SmtpReceiver with credentials)


def free_port() -> int:
    """A port that was free a moment ago (aiosmtpd's Controller needs a number before it binds)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class _Authenticator:
    credentials: tuple[str, str]

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        given = (data.login.decode(), data.password.decode()) if isinstance(data, LoginPassword) else None
        # handled=False: aiosmtpd then answers a failure with 535 itself
        return AuthResult(success=given == self.credentials, handled=False)


@dataclass
class _MailHandler:
    receiver: SmtpReceiver

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if (refusal := self.receiver.refuse_rcpt.get(address) or self.receiver.refuse_all_rcpt) is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.receiver.refuse_data is not None:
            return self.receiver.refuse_data
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        mail = ReceivedMail(
            str(envelope.mail_from), list(envelope.rcpt_tos), message, raw, bool(session.authenticated)
        )
        with self.receiver._lock:
            self.receiver.messages.append(mail)
            self.receiver._lock.notify_all()
        return "250 Message accepted for delivery"


class SmtpReceiver:
    """A real SMTP server (aiosmtpd) on a free port of 127.0.0.1 that records every message.

    Set `refuse_rcpt[address]`, `refuse_all_rcpt` or `refuse_data` to an SMTP reply (`"550 no such user"`)
    to make it refuse. With `credentials`, it offers AUTH (LOGIN/PLAIN) accepting that username and password.
    """

    host = "127.0.0.1"

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.messages: list[ReceivedMail] = []
        self.refuse_rcpt: dict[str, str] = {}
        self.refuse_all_rcpt: str | None = None
        self.refuse_data: str | None = None
        self._lock = threading.Condition()
        self.port = free_port()
        # A fixed server_hostname spares a reverse DNS lookup (getfqdn) per connection.
        auth: dict[str, Any] = {}
        if credentials is not None:
            # AUTH over plain text is fine on loopback. Offered, not required: requiring it without TLS makes
            # aiosmtpd warn (an error under our filterwarnings); `ReceivedMail.authenticated` tells instead.
            auth = {"auth_require_tls": False, "authenticator": _Authenticator(credentials)}
        self._controller = Controller(
            _MailHandler(self), hostname=self.host, port=self.port, server_hostname="receiver.test", **auth
        )
        self._controller.start()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[ReceivedMail]:
        """Block until at least `count` messages arrived; all of them (AssertionError on timeout)."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(
                    f"expected {count} message(s) within {timeout}s, got {len(self.messages)}"
                )
            return list(self.messages)

    def close(self) -> None:
        self._controller.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
