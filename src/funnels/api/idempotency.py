"""`Idempotency-Key` on POST/PUT/PATCH/DELETE: a retried request gets the first response back instead of
running twice.

How it works: first the credential is checked (`authenticated`: a known API key in `Authorization`, else a
live dashboard session); a request without a valid one goes straight to the app, which answers 401 before
reading its body, so unauthenticated traffic neither makes the server buffer bodies nor touches the
records. Then the middleware buffers the request body (each chunk from the process-wide budget,
`api.buffering`: 503 with Retry-After when spent), fingerprints the request (method, path, query, raw
body) and, in one write transaction, claims a record scoped to the credential (a hash of the
`Authorization` header, else of the dashboard's session cookie), method, path and key
(`funnels.store.idempotency.begin`). A finished record is replayed with `Idempotent-Replayed: true`
without calling the app; a live claim is a 409 IDEMPOTENCY_IN_PROGRESS; the same key with a different
request is a 400 INVALID_IDEMPOTENCY_KEY. Otherwise the app runs on the buffered body, its response is
forwarded as it streams and stored once complete. A 5xx, an exception or an incomplete response drops the
claim so a retry runs again; so do 401 and 429 (it asks the client to retry). A response that carries a
secret (`Cache-Control: no-store`, or a `Set-Cookie`: a created API key, a session) is never stored: the
record keeps a 409 CONFLICT saying so, which is what a replay gets. Requests without the header, and other
methods, pass through untouched; so does a Segment request whose only key is the body's `writeKey`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import anyio
import anyio.to_thread
import orjson
from starlette.datastructures import Headers
from starlette.requests import Request, cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from funnels.api.buffering import Holding, holding
from funnels.api.deps import dashboard_session, key_from_headers
from funnels.api.errors import ApiError, error_body
from funnels.services import Services
from funnels.sessions import SESSION_COOKIE
from funnels.store.idempotency import (
    Claim,
    RecordKey,
    StoredResponse,
    abandon,
    begin,
    finish,
    prune,
)

METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_KEY_LENGTH = 255
# Above anything an endpoint reads (5 MB of events, up to 4× that compressed): buffering stays bounded.
MAX_BODY_BYTES = 24 * 1024 * 1024
PRUNE_EVERY_MS = 60 * 1000
REPLAYED_HEADER = (b"idempotent-replayed", b"true")
# Headers that describe the connection or the moment of sending rather than the response; a replay gets
# its own.
NOT_STORED_HEADERS = frozenset(
    {"content-length", "date", "server", "connection", "keep-alive", "transfer-encoding"}
)
# Why `begin` refused to run the request, as the error the client gets.
REFUSALS: dict[str, Callable[[], ApiError]] = {
    "mismatch": lambda: ApiError(
        "INVALID_IDEMPOTENCY_KEY",
        "This Idempotency-Key was used with a different request.",
        param="Idempotency-Key",
    ),
    "in_progress": lambda: ApiError(
        "IDEMPOTENCY_IN_PROGRESS",
        "A request with this Idempotency-Key is still being processed; retry shortly.",
    ),
}
# Responses that say "try again" (or that the caller was no one) are not worth replaying.
NOT_STORED_STATUSES = frozenset({401, 429})


def valid_key(key: str) -> bool:
    """1–255 printable ASCII characters."""
    return 1 <= len(key) <= MAX_KEY_LENGTH and all(" " <= char <= "~" for char in key)


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:  # length-prefixed, so no two different part lists hash alike
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def fingerprint(scope: Scope, body: bytes) -> str:
    """What makes two requests the same request: method, path, query string and the raw body bytes."""
    return _sha256(scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""), body)


def record_key(scope: Scope, headers: Headers, key: str) -> RecordKey:
    """The record's scope: one credential (hashed, never stored), one method and path, one key. Without an
    `Authorization` header the dashboard's session is, so two signed-in browsers never see each other's
    responses (a created key's secret, say)."""
    credential_text = headers.get("authorization") or _session_credential(headers)
    credential = hashlib.sha256(credential_text.encode("latin-1")).hexdigest()
    return RecordKey(credential=credential, method=scope["method"], path=scope["path"], key=key)


def authenticated(request: Request) -> bool:
    """Whether the request carries a valid credential, as `api.deps.authorize` would find it: a known key
    in `Authorization`, else a live dashboard session (its CSRF token and scopes are the route's to check)."""
    key = key_from_headers(request)
    if key:
        services: Services = request.app.state.services
        return services.keys.verify(key) is not None
    return dashboard_session(request) is not None


def _session_credential(headers: Headers) -> str:
    """The session cookie's token and the CSRF header together (both authenticate a dashboard request, so
    a retry that adds a missing token is a new request, not a replay of the 403), or "" without a cookie."""
    token = cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE)
    return f"session {token} {headers.get('x-csrf-token', '')}" if token else ""


@dataclass
class CapturedResponse:
    """The app's response as it went out."""

    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    complete: bool = False

    def carries_secret(self) -> bool:
        """Whether the response holds something shown once: it says `Cache-Control: no-store` (a created
        API key) or sets a cookie (a dashboard session)."""
        return any(
            name == "set-cookie" or (name == "cache-control" and "no-store" in value.lower())
            for name, value in self.headers
        )

    def stored(self, secret_stand_in: StoredResponse) -> StoredResponse | None:
        """The response to keep (for one that carries a secret, `secret_stand_in`), or None when a retry
        should run again."""
        if not self.complete or self.status is None or self.status >= 500:
            return None
        if self.status in NOT_STORED_STATUSES:
            return None
        if self.carries_secret():
            return secret_stand_in
        headers = [(name, value) for name, value in self.headers if name not in NOT_STORED_HEADERS]
        return StoredResponse(self.status, headers, b"".join(self.chunks))


def secret_stand_in(scope: Scope) -> StoredResponse:
    """What a replay gets instead of a response that carried a secret: that secret is never stored."""
    error = ApiError(
        "CONFLICT",
        "The first response to this Idempotency-Key carried a secret (a new API key or a session), which "
        "is shown once and never stored, so it cannot be shown again. Send a new Idempotency-Key to run the "
        "request again.",
        param="Idempotency-Key",
    )
    body = orjson.dumps(error_body(Request(scope), error))
    return StoredResponse(error.status, [("content-type", "application/json")], body)


class IdempotencyMiddleware:
    """Pure ASGI middleware: replays the stored response to a repeated `Idempotency-Key`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._next_prune_ms = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = headers.get("idempotency-key")
        if key is None:
            await self.app(scope, receive, send)
            return
        services: Services = scope["app"].state.services
        if not authenticated(Request(scope)):
            # No valid credential: the app answers 401 before reading the body, and nothing is stored.
            await self.app(scope, receive, send)
            return
        if not valid_key(key):
            message = f"The Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters."
            await self._error(
                scope, receive, send, ApiError("INVALID_IDEMPOTENCY_KEY", message, param="Idempotency-Key")
            )
            return
        async with holding(scope["app"].state.body_budget) as held:
            try:
                body = await self._read_body(receive, held)
            except ApiError as error:
                await self._error(scope, receive, send, error)
                return
            if body is None:  # the client went away before sending its body
                return
            await self._claim_and_run(scope, receive, send, body, services, record_key(scope, headers, key))

    async def _claim_and_run(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, services: Services, record: RecordKey
    ) -> None:
        now_ms = services.clock.now_ms()
        prune_due = now_ms >= self._next_prune_ms
        if prune_due:
            self._next_prune_ms = now_ms + PRUNE_EVERY_MS

        def claim() -> Claim:
            if prune_due:
                prune(services.state, now_ms)
            return begin(services.state, record, fingerprint(scope, body), now_ms)

        result = await anyio.to_thread.run_sync(claim)
        if result.response is not None:
            await self._replay(send, result.response)
        elif result.outcome in REFUSALS:
            await self._error(scope, receive, send, REFUSALS[result.outcome]())
        else:
            # The routes derive default event ids from the claim's epoch (see `api.deps.default_event_ids`).
            scope.setdefault("state", {})["idempotency_epoch_ms"] = result.epoch_ms
            await self._run(scope, receive, send, body, services, record, result.token)

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes,
        services: Services,
        record: RecordKey,
        token: str,
    ) -> None:
        """Run the app on the buffered body, then store its response or drop the claim."""
        body_given = False
        captured = CapturedResponse()

        async def replay_receive() -> Message:
            nonlocal body_given
            if not body_given:
                body_given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        async def capture_send(message: Message) -> None:
            # recorded before forwarding, so a response the client failed to receive is still kept
            if message["type"] == "http.response.start":
                captured.status = message["status"]
                captured.headers = [
                    (name.decode("latin-1").lower(), value.decode("latin-1"))
                    for name, value in message.get("headers", [])
                ]
            elif message["type"] == "http.response.body":
                captured.chunks.append(message.get("body", b""))
                captured.complete = not message.get("more_body", False)
            await send(message)

        try:
            await self.app(scope, replay_receive, capture_send)
        finally:
            stored = captured.stored(secret_stand_in(scope))
            settle = (
                partial(finish, services.state, record, token, stored, services.clock.now_ms())
                if stored is not None
                else partial(abandon, services.state, record, token)
            )
            # shielded: a cancelled request must still release or finish its claim
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(settle)

    @staticmethod
    async def _read_body(receive: Receive, held: Holding) -> bytes | None:
        """The whole request body, each chunk taken from the budget; None if the client disconnected.
        Raises a 400 past the limit, a 503 when the budget is spent."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            if len(body) + len(chunk) > MAX_BODY_BYTES:
                raise ApiError(
                    "BAD_REQUEST",
                    f"The request body is larger than the limit of {MAX_BODY_BYTES // 1024} KB.",
                )
            held.add(len(chunk))
            body += chunk
            if not message.get("more_body", False):
                return bytes(body)

    @staticmethod
    async def _replay(send: Send, response: StoredResponse) -> None:
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers]
        headers += [(b"content-length", str(len(response.body)).encode()), REPLAYED_HEADER]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    @staticmethod
    async def _error(scope: Scope, receive: Receive, send: Send, error: ApiError) -> None:
        """The error in the same envelope every other error uses."""
        response = JSONResponse(
            error_body(Request(scope), error), status_code=error.status, headers=error.headers
        )
        await response(scope, receive, send)
