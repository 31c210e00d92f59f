"""Rendering the dashboard's HTML: one Jinja2 environment (autoescaping on, undefined variables are errors)
and the variables and headers every page shares."""

from __future__ import annotations

from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from funnels import __version__
from funnels.sessions import DashboardSession
from funnels.web.pages import Page, visible_pages

STATIC = resources.files("funnels.web") / "static"
CHART_JS = "vendor/chart.umd.js"  # copied from npm by `make install`; pages say so when it is missing

# Pages run only the package's own scripts and styles (no inline code, nothing from elsewhere), are never
# framed, and are not cached: they carry the session's CSRF token.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def static_url(name: str) -> str:
    """`/static/<name>`, versioned by the file's modification time so a new install is never served stale."""
    path = STATIC / name
    try:
        version = int(path.stat().st_mtime)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return f"/static/{name}"
    return f"/static/{name}?v={version}"


def chart_js_available() -> bool:
    return (STATIC / CHART_JS).is_file()


templates = Jinja2Templates(
    env=Environment(
        loader=PackageLoader("funnels.web", "templates"), autoescape=True, undefined=StrictUndefined
    )
)
templates.env.globals.update(static_url=static_url, version=__version__)


def render(
    request: Request,
    template: str,
    *,
    session: DashboardSession | None,
    page: Page | None = None,
    status: int = 200,
    **context: Any,
) -> Response:
    """The template in the layout's context: who is signed in, the nav they may see, the CSRF token."""
    return templates.TemplateResponse(
        request,
        template,
        {
            "session": session,
            "nav": visible_pages(session.key) if session else [],
            "page": page,
            "csrf_token": session.csrf_token if session else "",
            "charts": page is not None and page.charts,
            "chart_js": chart_js_available(),
            **context,
        },
        status_code=status,
        headers=HEADERS,
    )
