"""Request plumbing shared by the routes: services, auth with scopes (an API key, or the dashboard's session
cookie with its CSRF token), bounded JSON bodies."""

from __future__ import annotations

import asyncio
import base64
import binascii
import gzip
import hashlib
import io
import logging
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyCookie, HTTPBearer

from funnels import discovery
from funnels.analytics.query import QueryValidationError
from funnels.api.buffering import Holding, holding
from funnels.api.errors import ApiError, validation_error
from funnels.auth import ApiKey
from funnels.services import Services
from funnels.sessions import SESSION_COOKIE, DashboardSession, find_session
from funnels.store.events import EventStore, EventStoreError, QueryBudget, QueryCancelled

log = logging.getLogger(__name__)

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "X-CSRF-Token"
_UNRESOLVED = object()

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer fk_...`")
session_cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    description="The dashboard's session (sign in at /login); unsafe methods also need `X-CSRF-Token`",
)


def services(request: Request) -> Services:
    result: Services = request.app.state.services
    return result


def key_from_headers(request: Request) -> str | None:
    """The API key from `Authorization: Bearer KEY` or HTTP Basic (the key as username)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    return None


def dashboard_session(request: Request) -> DashboardSession | None:
    """The live dashboard session the request's cookie names, if any (looked up once per request)."""
    found = getattr(request.state, "dashboard_session", _UNRESOLVED)
    if found is _UNRESOLVED:
        token = request.cookies.get(SESSION_COOKIE)
        svc = services(request)
        found = find_session(svc.state, svc.clock, token) if token else None
        request.state.dashboard_session = found
    return found  # type: ignore[return-value]


def authorize(request: Request, scope: str, key: str | None = None, local: bool = False) -> ApiKey:
    """The caller's key, or 401 (no or unknown key) / 403 (missing scope, or a missing CSRF token).

    Without a key in the request, the dashboard's session cookie stands for its key; then an unsafe method
    must also carry the session's CSRF token in the `X-CSRF-Token` header (a bearer key needs none: a
    browser never sends one on its own). The server's local credential (`server.json`, for the CLI on this
    machine) counts only where the route says `local`, and only for that route's scope."""
    key = key or key_from_headers(request)
    if key and discovery.is_local_credential(key):
        return _local_caller(request, key, scope, local)
    if key:
        record = services(request).keys.verify(key)
        if record is None:
            raise ApiError("UNAUTHORIZED", "The API key is unknown or revoked.")
    else:
        session = dashboard_session(request)
        if session is None:
            if request.cookies.get(SESSION_COOKIE):
                raise ApiError(
                    "UNAUTHORIZED",
                    "The dashboard session has ended (signed out, expired, or its key was revoked); "
                    "sign in again.",
                )
            raise ApiError("UNAUTHORIZED", "An API key is required: send `Authorization: Bearer <key>`.")
        if request.method in UNSAFE_METHODS and not session.csrf_matches(request.headers.get(CSRF_HEADER)):
            raise ApiError(
                "CSRF_FAILED",
                f"A request signed in by the dashboard's session cookie must send the session's CSRF token "
                f"in the `{CSRF_HEADER}` header.",
            )
        record = session.key
    if not record.allows(scope):
        raise ApiError("FORBIDDEN", f"This API key lacks the `{scope}` scope.")
    return record


LOCAL_ROUTES = (
    "GET /v0/funnel, /v0/funnel/time_to_convert, /v0/funnel/trends, /v0/funnel/people, GET /v0/events/names, "
    "/properties, /values, /users and POST /v0/import"
)


def _local_caller(request: Request, key: str, scope: str, local: bool) -> ApiKey:
    """The local credential's caller: this route's scope and nothing else; 401 if it is not this run's."""
    if not discovery.matches(key, getattr(request.app.state, "local_credential", None)):
        raise ApiError(
            "UNAUTHORIZED",
            "The local credential is not this server's (it is made anew each time the server starts).",
        )
    if not local:
        raise ApiError(
            "FORBIDDEN", f"The server's local credential (server.json) is accepted only by {LOCAL_ROUTES}."
        )
    return ApiKey(id="local", scopes=frozenset({scope}), name=discovery.FILE_NAME)


def require(scope: str, local: bool = False) -> Any:
    """A route dependency: the request must carry a key with `scope` (documented as bearer auth, or the
    dashboard's session cookie); with `local`, the server's local credential is accepted too (the routes
    the CLI uses while a server holds the data directory: `LOCAL_ROUTES`)."""

    # Async: FastAPI runs it on the event loop (a sync dependency costs a thread-pool hop per request);
    # a key verified in the last few seconds is a dict lookup (`KeyCache`).
    async def dependency(
        request: Request, _token: Any = Depends(bearer), _session: Any = Depends(session_cookie)
    ) -> ApiKey:
        return authorize(request, scope, local=local)

    return Depends(dependency)


async def read_body(request: Request, held: Holding, limit: int, too_large: ApiError) -> bytes:
    """The raw body, each chunk taken from the app's buffering budget (503 when it is spent); `too_large`
    past `limit` bytes."""
    raw = bytearray()
    async for chunk in request.stream():
        if len(raw) + len(chunk) > limit:
            raise too_large
        held.add(len(chunk))
        raw += chunk
    return bytes(raw)


async def read_json(request: Request, limit: int, what: str = "request body") -> Any:
    """The body as JSON, whatever the Content-Type (Segment's analytics.js sends text/plain); gzip and
    deflate are decoded; over `limit` bytes (after decoding) is a 400 naming the limit. The bytes held
    meanwhile count against the process-wide budget (`api.buffering`)."""
    too_large = ApiError("BAD_REQUEST", f"The {what} is larger than the limit of {limit // 1024} KB.")
    async with holding(request.app.state.body_budget) as held:
        # compressed bodies are checked again after decoding
        body = await read_body(request, held, limit * 4 + 1024, too_large)
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            try:
                if encoding == "deflate":
                    body = zlib.decompressobj().decompress(body, limit + 1)
                else:
                    body = gzip.GzipFile(fileobj=io.BytesIO(body)).read(limit + 1)
            except (OSError, EOFError, zlib.error):
                raise ApiError("BAD_REQUEST", f"The {what} is not valid {encoding} data.") from None
            held.add(len(body))
        elif encoding not in ("", "identity"):
            raise ApiError("BAD_REQUEST", f"Unsupported Content-Encoding {encoding!r}; use gzip or none.")
        if len(body) > limit:
            raise too_large
        if not body.strip():
            raise ApiError("BAD_REQUEST", f"The {what} is empty; send JSON.")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise ApiError(
                "BAD_REQUEST", f"The {what} is not valid JSON: {error.msg} at position {error.pos}."
            ) from None


def default_event_ids(request: Request, payload: Any, count: int) -> list[str | None]:
    """Ids for events sent without a message id. Under an `Idempotency-Key` they derive from the key, the
    credential, the path, the body and the key's claim epoch: a retry that takes over the claim of a request
    that died after committing (its response never stored) logs the same ids again and dedups instead of
    doubling the events, while a key reused after its 24 h gets a new epoch and runs anew. Else: none."""
    epoch = getattr(request.state, "idempotency_epoch_ms", None)
    key = request.headers.get("idempotency-key")
    if epoch is None or not key:
        return [None] * count
    try:
        canonical = orjson.dumps(payload)
    except orjson.JSONEncodeError:  # nested past what orjson writes: the parse that follows rejects it
        return [None] * count
    parts = (request.headers.get("authorization", ""), request.url.path, key, str(epoch))
    digest = hashlib.sha256("\x1f".join(parts).encode() + b"\x1f" + canonical).hexdigest()[:32]
    return [f"idem_{digest}_{index}" for index in range(count)]


Parsed = TypeVar("Parsed")


async def run_query(
    request: Request,
    parse: Callable[[dict[str, Any]], Parsed],
    run: Callable[[EventStore, Parsed], dict[str, Any]],
) -> dict[str, Any]:
    """An analytics endpoint's body: parse the query string (every problem a 400 with `details`), then run
    the parsed query on the event store in a worker thread, under a budget (`EventStore.limited`): each of
    its queries has the server's time limit (`QueryTimeout`, answered as a 503 by `api.errors`), runs beside
    other requests' queries, and is cancelled when the client goes away first (`run_cancellable`)."""
    try:
        query = parse(dict(request.query_params))
    except QueryValidationError as error:
        raise validation_error(error.details) from None
    svc = services(request)
    return await run_cancellable(request, svc.events, QueryBudget(svc.query_timeout_seconds), run, query)


Result = TypeVar("Result")
CANCEL_EVERY_SECONDS = 0.5  # while the queries' thread runs on after a cancel: kill what started meanwhile


async def run_cancellable(
    request: Request,
    store: EventStore,
    budget: QueryBudget,
    run: Callable[[EventStore, Parsed], Result],
    query: Parsed,
) -> Result:
    """`run(store, query)` in a worker thread under `budget`; if the client disconnects first, the budget's
    queries are killed (`EventStore.cancel`) so they stop using the cores, and this waits for the thread to
    end (the response goes nowhere: the client is gone)."""

    def limited() -> Result:
        with store.limited(budget):
            return run(store, query)

    work = asyncio.ensure_future(anyio.to_thread.run_sync(limited, limiter=_analytics_threads(request)))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    while not work.done():  # the client left: stop the queries, and any that started as the kill ran
        try:
            await run_in_threadpool(store.cancel, budget)
        except EventStoreError as error:  # the kill refused: the queries end by themselves (or their limit)
            log.warning("cancelling the queries of %s %s: %s", request.method, request.url.path, error)
        await asyncio.wait({work}, timeout=CANCEL_EVERY_SECONDS)
    if budget.cancelled and isinstance(work.exception(), QueryCancelled):
        # Answered to no one; the access log shows nginx's "client closed request".
        raise ApiError(
            "BAD_REQUEST",
            "The client closed the connection before the answer; its queries were cancelled.",
            status=CLIENT_CLOSED_REQUEST,
        )
    return work.result()


CLIENT_CLOSED_REQUEST = 499
# Threads analytics requests may hold at once, apart from the thread pool every other handler shares: a
# burst of slow analytics requests (each waiting for one of the store's readers) never takes the threads
# ingestion and /healthz need.
ANALYTICS_THREADS = 8


def _analytics_threads(request: Request) -> anyio.CapacityLimiter:
    """The app's limiter of analytics threads (made on first use: it belongs to the running event loop)."""
    limiter: anyio.CapacityLimiter | None = getattr(request.app.state, "analytics_threads", None)
    if limiter is None:
        limiter = request.app.state.analytics_threads = anyio.CapacityLimiter(ANALYTICS_THREADS)
    return limiter


async def _disconnected(request: Request) -> None:
    """Return once the client has disconnected (ASGI's `http.disconnect`; an analytics GET has read its
    body, so any other message is the end of an empty one)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def single_valued_query(request: Request) -> None:
    """Each query parameter at most once: `?page=1&page=2` is a 400 naming it, not whichever comes last
    (no API endpoint takes a list in its query string)."""
    counts = Counter(key for key, _value in request.query_params.multi_items())
    repeated = sorted(key for key, count in counts.items() if count > 1)
    if repeated:
        raise validation_error({f"query.{key}": "given more than once" for key in repeated})
