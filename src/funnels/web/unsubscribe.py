"""The unsubscribe links' pages, open without sign-in: the token in the path is the capability
(`funnels.automation.consent`).

- `GET /u/{token}` shows who and what the link unsubscribes, with a button that posts to the same URL. It
  changes nothing: mail scanners and link previews fetch links in messages.
- `POST /u/{token}` unsubscribes (source `link`) and answers a confirmation page; again is a no-op. It is
  what the button posts, and what a mail client sends for RFC 8058's one-click unsubscribe (a body of
  `List-Unsubscribe=One-Click`): any POST to a valid link unsubscribes from the link's topic. The page's
  second button posts the form field `scope=all`, which unsubscribes from the whole channel instead (the
  only part of a body that is read: the first `MAX_FORM_BYTES` of a form-encoded one). No CSRF token: there
  is no session, and all a forged POST can do is what the link's recipient could.

A token that is not one this server signed, or names an instance that no longer exists, gets the app's
plain 404 for an unknown path (the same answer for every such token). Both are rate limited per client
address (`api.ratelimit`): a burst of `BURST`, then `PER_SECOND`."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import Response

from funnels.api.buffering import holding
from funnels.api.deps import services
from funnels.api.errors import ApiError
from funnels.api.ratelimit import RateLimiter
from funnels.automation.consent import Recipient, recipient, unsubscribe_by_link
from funnels.services import Services
from funnels.web.render import render

router = APIRouter(include_in_schema=False)

BURST = 60  # requests a client address may make at once
PER_SECOND = 1.0  # and then, on average
MAX_FORM_BYTES = 1_024  # of a posted form: `scope=all` or a one-click body; the rest is not read


def limiter() -> RateLimiter:
    return RateLimiter(BURST, PER_SECOND)


def _limit(request: Request) -> None:
    limits: RateLimiter = request.app.state.unsubscribe_limiter
    wait_s = limits.take(request.client.host if request.client else "")
    if wait_s is not None:
        raise ApiError(
            "TOO_MANY_REQUESTS",
            "Too many unsubscribe requests from this address: try again in a moment.",
            headers={"Retry-After": RateLimiter.retry_after(wait_s)},
        )


def _not_found() -> HTTPException:
    return HTTPException(404)  # exactly what an unknown path answers


async def _all(request: Request) -> bool:
    """Whether a form posted `scope=all` (the page's second button). Reads at most `MAX_FORM_BYTES` of a
    form-encoded body, never fails on one: a one-click POST must unsubscribe whatever its body holds."""
    if (
        request.headers.get("content-type", "").split(";")[0].strip().lower()
        != "application/x-www-form-urlencoded"
    ):
        return False
    body = bytearray()
    async with holding(request.app.state.body_budget) as held:
        async for chunk in request.stream():
            taken = chunk[: MAX_FORM_BYTES - len(body)]
            held.add(len(taken))
            body += taken
            if len(body) >= MAX_FORM_BYTES:
                break
    return parse_qs(body.decode("utf-8", "replace")).get("scope") == ["all"]


def _find(svc: Services, token: str, unsubscribe: bool, everything: bool = False) -> Recipient | None:
    named = svc.worker.tokens.read(token)
    if named is None:
        return None
    instance_id, topic = named
    if not unsubscribe:
        with svc.state.read() as connection:
            return recipient(connection, instance_id, topic)
    if everything:
        topic = topic.partition(":")[0]  # the channel: `email`
    with svc.state.write() as connection:
        return unsubscribe_by_link(connection, instance_id, topic, svc.clock.now_ms())


def _page(request: Request, found: Recipient, done: bool) -> Response:
    channel = found.topic.partition(":")[0]
    everything = Recipient(found.instance_id, channel, found.shown, found.unsubscribed).what
    response = render(
        request,
        "unsubscribe.html",
        session=None,
        shown=found.shown,
        what=found.what,
        done=done,
        everything=everything if channel != found.topic else None,
    )
    response.headers["Referrer-Policy"] = "no-referrer"  # the URL is the capability: never pass it on
    response.headers["X-Robots-Tag"] = "noindex"
    return response


@router.get("/u/{token}")
async def confirm(request: Request, token: str) -> Response:
    _limit(request)
    found = await run_in_threadpool(_find, services(request), token, False)
    if found is None:
        raise _not_found()
    return _page(request, found, done=found.unsubscribed)


@router.post("/u/{token}")
async def unsubscribe(request: Request, token: str) -> Response:
    _limit(request)
    everything = await _all(request)
    found = await run_in_threadpool(_find, services(request), token, True, everything)
    if found is None:
        raise _not_found()
    return _page(request, found, done=True)
