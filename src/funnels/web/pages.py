"""The dashboard's pages, in one table: each entry is a route (`/<name>`), a nav entry, a template
(`templates/<name>.html`) and the scope it needs. Adding a page is adding a `Page` here and its template
(see docs/dashboard.md); `web/routes.py` serves every entry the same way."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from funnels.auth import ApiKey
from funnels.automation.deliveries import STATUSES
from funnels.types import SCOPES

# What each scope allows, for the key form on the Settings page.
SCOPE_HELP: dict[str, str] = {
    "events:write": "Send events: the native, Segment and automation endpoints.",
    "query:read": "Run funnel queries; in the dashboard, the Funnels page.",
    "admin": "Everything, including keys, the config, deliveries and people.",
}
assert set(SCOPE_HELP) == set(SCOPES)


@dataclass(frozen=True)
class Page:
    name: str  # the path is /<name>, the template <name>.html
    title: str  # the nav entry and the page's heading
    scope: str  # what a signed-in key needs to see it (`admin` sees every page)
    summary: str  # one line under the heading: what the page is for
    charts: bool = False  # load Chart.js (static/vendor/chart.umd.js) on this page
    # Extra template variables, computed per request (the JSON API stays the one source of data).
    context: Callable[[Request], Mapping[str, Any]] | None = None

    @property
    def path(self) -> str:
        return f"/{self.name}"

    @property
    def template(self) -> str:
        return f"{self.name}.html"


def _deliveries_context(_request: Request) -> Mapping[str, Any]:
    return {"statuses": STATUSES}


def _settings_context(_request: Request) -> Mapping[str, Any]:
    return {"scopes": list(SCOPE_HELP.items())}


PAGES: tuple[Page, ...] = (
    Page(
        "funnels",
        "Funnels",
        "query:read",
        "Build a funnel from your events and see how many people reach each step, and how fast.",
        charts=True,
    ),
    Page(
        "people",
        "People",
        "admin",
        "Look up one customer (any model instance): ids, properties, funnel progress and timeline.",
    ),
    Page(
        "deliveries",
        "Deliveries",
        "admin",
        "Every action the automation scheduled or sent, with its attempts; retry the ones that failed.",
        context=_deliveries_context,
    ),
    Page(
        "settings",
        "Settings",
        "admin",
        "API keys for the API, your SDKs and this dashboard, and the loaded automation config.",
        context=_settings_context,
    ),
)


def visible_pages(key: ApiKey) -> list[Page]:
    """The pages this key may open, in nav order."""
    return [page for page in PAGES if key.allows(page.scope)]
