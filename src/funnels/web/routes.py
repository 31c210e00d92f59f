"""The dashboard's HTML routes: `/` (to a page or the sign-in form), `/login`, `/logout`, and one route per
entry of `web/pages.py`'s table. A page is a server-rendered shell; its data comes from the JSON API, which
its script calls with the session cookie and the CSRF token (`static/app.js`)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response
from starlette.types import Message

from funnels.api.buffering import holding
from funnels.api.deps import dashboard_session, read_body, services
from funnels.api.errors import ApiError
from funnels.auth import verify_key
from funnels.sessions import SESSION_COOKIE, SESSION_TTL_MS, close_session, open_session
from funnels.web.pages import PAGES, Page, visible_pages
from funnels.web.render import render

router = APIRouter(include_in_schema=False)

# The sign-in form's own CSRF token (there is no session yet): a cookie the form must echo, so another
# site cannot sign a browser in with the other site's key.
LOGIN_CSRF_COOKIE = "funnels_login_csrf"
MAX_FORM_FIELDS = 20
MAX_FORM_BYTES = 16 * 1024


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def safe_next(value: object) -> str:
    """`value` if it is a path on this server (not `//host`, no scheme), else ""."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return ""
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path in ("/login", "/logout"):
        return ""
    return value


def login_url(target: str) -> str:
    return f"/login?next={quote(target, safe='/')}" if target and target != "/" else "/login"


async def _form(request: Request) -> FormData | None:
    """The posted form, or None when it cannot be read (a malformed multipart body, too many fields). Read
    before any sign-in, so it is small (a 400 past `MAX_FORM_BYTES`) and held within the buffering budget."""
    too_large = ApiError("BAD_REQUEST", f"The form is larger than the limit of {MAX_FORM_BYTES // 1024} KB.")
    async with holding(request.app.state.body_budget) as held:
        body = await read_body(request, held, MAX_FORM_BYTES, too_large)

        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            return await Request(request.scope, receive).form(max_fields=MAX_FORM_FIELDS, max_files=0)
        except HTTPException:
            return None


def _text(form: FormData | None, name: str) -> str:
    value = form.get(name) if form is not None else None
    return value if isinstance(value, str) else ""


@router.get("/")
def home(request: Request) -> Response:
    """Signed in: the first page the key may see (the query string kept, so `funnels demo`'s link opens a
    filled-in funnel); else the sign-in form, which comes back here."""
    session = dashboard_session(request)
    query = f"?{request.url.query}" if request.url.query else ""
    if session is None:
        return _redirect(login_url(f"/{query}" if query else ""))
    pages = visible_pages(session.key)
    return _redirect(f"{pages[0].path}{query}" if pages else "/login")


def _login_page(request: Request, target: str, error: str | None = None, status: int = 200) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not (20 <= len(token) <= 100 and token.isascii()):
        token = secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        session=None,
        next=target,
        login_csrf=token,
        error=error,
        status=status,
        session_hours=SESSION_TTL_MS // 3_600_000,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, path="/login", httponly=True, samesite="strict", secure=_https(request)
    )
    return response


@router.get("/login")
def login_form(request: Request, next: str = "") -> Response:
    target = safe_next(next)
    session = dashboard_session(request)
    if session is not None and visible_pages(session.key):
        return _redirect(target or "/")
    return _login_page(request, target)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    target = safe_next(_text(form, "next"))
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    given = _text(form, "csrf_token")
    if not expected or not secrets.compare_digest(given.encode(), expected.encode()):
        message = "The sign-in form had expired. It has been refreshed: please sign in again."
        return _login_page(request, target, message, 400)
    key = _text(form, "key").strip()
    if not key:
        return _login_page(request, target, "Enter an API key.", 400)
    svc = services(request)
    record = await run_in_threadpool(verify_key, svc.state, key)
    if record is None:
        return _login_page(request, target, "That API key is unknown or revoked.", 401)
    pages = visible_pages(record)
    if not pages:
        scopes = ", ".join(sorted(record.scopes))
        message = f"This key ({scopes}) cannot use the dashboard: it needs the query:read or admin scope."
        return _login_page(request, target, message, 403)
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:  # signing in again (another key, say) ends the session this browser had
        await run_in_threadpool(close_session, svc.state, previous)
    token, _session = await run_in_threadpool(open_session, svc.state, svc.clock, record)
    response = _redirect(target or pages[0].path)
    response.headers["Cache-Control"] = "no-store"  # it carries the session: never cached nor stored
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_TTL_MS // 1000,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_https(request),
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login", httponly=True, samesite="strict")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await _form(request)
    session = await run_in_threadpool(dashboard_session, request)
    if session is not None:
        if not session.csrf_matches(_text(form, "csrf_token")):
            return render(
                request,
                "error.html",
                session=session,
                status=403,
                title="Not signed out",
                message="The sign-out request did not carry this session's CSRF token. Use the Sign out button.",
            )
        svc = services(request)
        await run_in_threadpool(close_session, svc.state, request.cookies.get(SESSION_COOKIE, ""))
    response = _redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_https(request))
    return response


def page_route(page: Page) -> Callable[[Request], Response]:
    """The route of one page: signed out → the sign-in form (coming back here); without the page's scope →
    a 403 page; else the page's template, with its extra context."""

    def endpoint(request: Request) -> Response:
        session = dashboard_session(request)
        if session is None:
            query = f"?{request.url.query}" if request.url.query else ""
            return _redirect(login_url(f"{page.path}{query}"))
        if not session.key.allows(page.scope):
            return render(
                request,
                "error.html",
                session=session,
                status=403,
                title=f"No access to {page.title}",
                message=f"The {page.title} page needs an API key with the {page.scope} scope; "
                f"this session's key has {', '.join(sorted(session.key.scopes))}.",
            )
        extra: dict[str, Any] = dict(page.context(request)) if page.context else {}
        return render(request, page.template, session=session, page=page, **extra)

    endpoint.__name__ = f"{page.name}_page"
    return endpoint


for _page in PAGES:
    router.add_api_route(_page.path, page_route(_page), methods=["GET"])
