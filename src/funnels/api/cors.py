"""CORS for the Segment-compatible routes (`/v1/*`) only, so analytics.js can send from any site.

How it works: `SegmentCors` is Starlette's `CORSMiddleware` applied to paths under `/v1/`; every other path
(`/v0/*`, `/api/v1/*`, the dashboard) passes through untouched, so it stays same-origin: no CORS headers, and
a preflight there is answered like any other `OPTIONS` (405). The origins allowed are `--cors-origins`
(`*` by default: the write key ships in every visitor's browser anyway); methods GET and POST; request
headers `Authorization` (analytics.js sends the key as HTTP Basic, which is what makes it preflight),
`Content-Type` and `X-Retry-Count` (analytics.js sends it on a retry). A preflight is answered here, before
the idempotency middleware and the routes: it reads no key, no body and no store. Two changes to Starlette's
behaviour: a refused preflight is a 400 in the error envelope (Starlette answers plain text), and with an
allow-list a request that is not a preflight but carries an `Origin` outside it (a `text/plain` post with
`writeKey` in the body, or `sendBeacon`, which never preflight) is a 403 `FORBIDDEN` before it reaches a
route, so the list holds for what a browser can send without asking first. A client that is not a browser
sends no `Origin` and is not affected: the allow-list is a browser policy, the write key is the credential.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from funnels.api.errors import ApiError, envelope

PREFIX: Final[str] = "/v1/"
ANY_ORIGIN: Final[tuple[str, ...]] = ("*",)
ALLOWED_METHODS: Final[tuple[str, ...]] = ("GET", "POST")
ALLOWED_HEADERS: Final[tuple[str, ...]] = ("Authorization", "Content-Type", "X-Retry-Count")
# How long a browser may reuse a preflight's answer: Chromium's own cap (Firefox allows a day).
PREFLIGHT_MAX_AGE_SECONDS: Final[int] = 7200


def parse_origins(value: str) -> tuple[str, ...]:
    """`*`, or a comma-separated list of origins (`scheme://host[:port]`, no path); ValueError naming the
    first one that is not an origin."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise ValueError("no origin given: use * for any origin, or a comma-separated list")
    if items == ["*"]:
        return ANY_ORIGIN
    for item in items:
        parts = urlsplit(item)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or parts.username is not None
        ):
            raise ValueError(f"{item!r} is not an origin (http[s]://host[:port], or * alone)")
    # a browser's Origin header never ends with a slash
    return tuple(item.rstrip("/") for item in items)


class SegmentCors(CORSMiddleware):
    """CORS on `/v1/*`, from `origins` (see the module docstring); `public_url` starts errors' `doc_url`."""

    def __init__(
        self, app: ASGIApp, origins: Sequence[str] = ANY_ORIGIN, public_url: str | None = None
    ) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            max_age=PREFLIGHT_MAX_AGE_SECONDS,
        )
        self.inner = app
        self.public_url = public_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.inner(scope, receive, send)
            return
        origin = Headers(scope=scope).get("origin")
        if origin is not None and scope["method"] != "OPTIONS" and not self.is_allowed_origin(origin):
            refused = ApiError(
                "FORBIDDEN",
                f"Requests from the origin {origin!r} are not allowed: it is not in the server's "
                "--cors-origins.",
            )
            await JSONResponse(envelope(refused, self.public_url), status_code=403)(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        # Starlette's text is "Disallowed CORS origin, headers": what was refused, kept in the message.
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        error = ApiError(
            "BAD_REQUEST",
            f"CORS preflight refused ({refused}): /v1/* allows the origins in the server's --cors-origins, "
            f"the methods {', '.join(ALLOWED_METHODS)} and the headers {', '.join(ALLOWED_HEADERS)}.",
        )
        cors = {
            name: value
            for name, value in response.headers.items()
            if name.startswith("access-control-") or name == "vary"
        }
        return JSONResponse(envelope(error, self.public_url), status_code=400, headers=cors)
