"""The dashboard's pages, in one table: each entry is a route (`/<name>`), a nav entry, a template
(`templates/<name>.html`) and the scope it needs. Adding a page is adding a `Page` here and its template
(see docs/dashboard.md); `web/routes.py` serves every entry the same way."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import Request

from funnels.analytics.query import (
    DEFAULT_TOP_N,
    DEFAULT_WINDOW_SECONDS,
    MAX_STEPS,
    MIN_STEPS,
    NUMERIC_OPERATORS,
    OPERATORS,
)
from funnels.auth import ApiKey
from funnels.automation.deliveries import STATUSES
from funnels.types import BREAKDOWN_COLUMNS, NAMED_BY_TYPE, SCOPES

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


# The step types a `/v0/funnel` step may have: `event` (any name of a stored type), `track` (one track
# event by name) and the types that carry a name of their own (page, screen, identify, ...).
STEP_TYPES: tuple[str, ...] = ("event", "track", *sorted(NAMED_BY_TYPE))


# An exact funnel slower than this is offered a 10% sample (sampling.js; docs/semantics.md, "Sampling"): about
# what a person waits without leaving the page; the 10M-event closed funnel takes 2–3 s on 2 cores.
SLOW_QUERY_SECONDS: Final = 3.0


def _declared_models(request: Request) -> list[str]:
    """The models the loaded config declares (what `aggregate_by` may name); none without a config."""
    plan = request.app.state.services.automation.plan
    return list(plan.config.models) if plan is not None else []


def _funnels_context(request: Request) -> Mapping[str, Any]:
    """The funnel builder's fixed choices (what `/v0/funnel` accepts); the data comes from the API."""
    return {
        "builder": {
            "stepTypes": list(STEP_TYPES),
            "operators": list(OPERATORS),
            "numericOperators": list(NUMERIC_OPERATORS),
            "breakdowns": list(BREAKDOWN_COLUMNS),
            "minSteps": MIN_STEPS,
            "maxSteps": MAX_STEPS,
            "defaultWindowSeconds": DEFAULT_WINDOW_SECONDS,
            "defaultTopN": DEFAULT_TOP_N,
            "models": _declared_models(request),
            "slowSeconds": SLOW_QUERY_SECONDS,
        },
    }


PAGES: tuple[Page, ...] = (
    Page(
        "funnels",
        "Funnels",
        "query:read",
        "Build a funnel from your events and see how many people reach each step, and how fast.",
        charts=True,
        context=_funnels_context,
    ),
    Page(
        "people",
        "People",
        "admin",
        "Your customers (any model instance), searched by id or name: ids, properties, funnel progress, timeline.",
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
