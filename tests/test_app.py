"""Auth on every route of the app, from one table: each route the app serves (enumerated from `app.routes`,
so a new route cannot be forgotten) is either listed with the scope it needs or listed as public with why.

An API route must answer 401 without a credential or with an unknown key, 403 with a key that has every
other (non-admin) scope, and neither with a key that has exactly its scope; always with the error envelope.
A dashboard page sends a signed-out browser to the sign-in form and answers a 403 page to a session whose
key lacks the page's scope. The scopes are written here, not read from the routes' dependencies: a route
that lost its `require(...)` must fail this test, not change what it expects.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from funnels.app import create_app
from funnels.auth import create_key
from funnels.clock import ManualClock
from funnels.services import Services
from funnels.types import SCOPES
from tests.conftest import bearer
from tests.web.conftest import sign_in

Route = tuple[str, str]  # (method, path as the app declares it)

# The Segment routes: a key from the Authorization header (Basic or Bearer), else the body's `writeKey`.
SEGMENT: dict[Route, str] = {
    ("POST", f"/v1/{name}"): "events:write"
    for name in (
        *("track", "page", "screen", "identify", "group", "alias", "batch"),
        *("t", "p", "s", "i", "g", "a", "b"),
    )
}

API: dict[Route, str] = {
    ("POST", "/api/v1/identify"): "events:write",
    ("POST", "/api/v1/events"): "events:write",
    ("POST", "/api/v1/event"): "events:write",
    ("POST", "/v0/events"): "events:write",
    **SEGMENT,
    ("GET", "/v0/funnel"): "query:read",
    ("GET", "/v0/funnel/time_to_convert"): "query:read",
    ("GET", "/v0/funnel/trends"): "query:read",
    ("GET", "/v0/funnel/people"): "query:read",
    ("GET", "/v0/funnels"): "query:read",
    ("GET", "/v0/events/names"): "query:read",
    ("GET", "/v0/events/properties"): "query:read",
    ("GET", "/v0/events/values"): "query:read",
    ("GET", "/v0/events/users"): "query:read",
    ("GET", "/v0/saved_funnels"): "query:read",
    ("POST", "/v0/saved_funnels"): "query:read",
    ("GET", "/v0/saved_funnels/{funnel_id}"): "query:read",
    ("PUT", "/v0/saved_funnels/{funnel_id}"): "query:read",
    ("DELETE", "/v0/saved_funnels/{funnel_id}"): "query:read",
    ("GET", "/v0/lift"): "query:read",
    ("POST", "/v0/import"): "admin",
    ("GET", "/v0/actions"): "admin",
    ("GET", "/v0/actions/summary"): "admin",
    ("GET", "/v0/actions/{job_id}"): "admin",
    ("POST", "/v0/actions/{job_id}/retry"): "admin",
    ("GET", "/v0/models/{model}"): "admin",
    ("GET", "/v0/models/{model}/{instance_id}"): "admin",
    ("PUT", "/v0/models/{model}/{instance_id}/subscriptions"): "admin",
    ("GET", "/v0/users/{user_key}"): "admin",
    ("GET", "/v0/config"): "admin",
    ("POST", "/v0/config/reload"): "admin",
    ("GET", "/v0/keys"): "admin",
    ("POST", "/v0/keys"): "admin",
    ("POST", "/v0/keys/{key_id}/revoke"): "admin",
}

# Dashboard pages (HTML, signed in by the session cookie): the scope each needs.
PAGES: dict[Route, str] = {
    ("GET", "/funnels"): "query:read",
    ("GET", "/people"): "admin",
    ("GET", "/deliveries"): "admin",
    ("GET", "/settings"): "admin",
}

PUBLIC: dict[Route, str] = {
    ("GET", "/healthz"): "a load balancer's probe: says only ok or not",
    ("GET", "/errors"): "the error codes' documentation, the target of every envelope's doc_url",
    ("GET", "/"): "only redirects: to /login, or to the first page the session may open",
    ("GET", "/login"): "the sign-in form",
    ("POST", "/login"): "signing in is how a browser gets a credential (the form carries its CSRF token)",
    ("POST", "/logout"): "ends the caller's own session, if any (with its CSRF token); else a redirect",
    ("GET", "/static"): "the dashboard's CSS, scripts and Chart.js: no data",
    ("GET", "/openapi.json"): "the API's description: no data",
    ("GET", "/v1/projects/{writeKey}/settings"): "analytics.js's settings: the same for any key, no data",
    ("POST", "/v1/m"): "analytics.js's usage metrics: answered 204 unread, nothing stored",
    ("GET", "/analytics.js/v1/{write_key}/analytics.min.js"): "analytics.js itself, for other sites: no data",
    ("GET", "/analytics-next/bundles/{name}"): "analytics.js's chunks: no data",
    ("GET", "/u/{token}"): "an unsubscribe link's page: its signed token is the capability; changes nothing",
    ("POST", "/u/{token}"): "one-click unsubscribe (RFC 8058): the signed token is the capability",
}

PATH_PARAMS = {
    "{job_id}": "1",
    "{model}": "customer",
    "{instance_id}": "c1",
    "{key_id}": "fk_0000000000",
    "{funnel_id}": "0123456789abcdef",
    "{token}": "not-a-token",
}


def app_routes(services: Services) -> set[Route]:
    """Every (method, path) the app serves, mounts (static files) as GET; HEAD is GET's shadow."""
    found: set[Route] = set()
    for route in iter_route_contexts(create_app(services, run_shipper=False).routes):
        assert route.path is not None, route
        for method in route.methods or {"GET"}:
            if method != "HEAD":
                found.add((method, route.path))
    return found


def url(path: str) -> str:
    for param, value in PATH_PARAMS.items():
        path = path.replace(param, value)
    return path


def call(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    # POSTs send `{}`: no Segment `writeKey`, and a body that parses, so only auth can refuse it early.
    body: dict[str, Any] = {"json": {}} if method == "POST" else {}
    client.cookies.clear()
    return client.request(method, url(path), headers=headers or {}, follow_redirects=False, **body)


def envelope(response: httpx.Response, status: int, code: str, route: Route) -> None:
    assert response.status_code == status, (route, response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"] == code, (route, error)
    assert error["message"] and error["doc_url"].endswith(f"/errors#{code.lower()}"), (route, error)


def lacking(scope: str) -> list[str]:
    """Every scope a key can have without being allowed `scope` (admin allows everything)."""
    return [other for other in SCOPES if other not in (scope, "admin")]


def test_every_route_is_in_the_table(services: Services) -> None:
    listed = set(API) | set(PAGES) | set(PUBLIC)
    assert not set(API) & set(PUBLIC) and not set(PAGES) & set(PUBLIC)
    served = app_routes(services)
    assert sorted(served - listed) == [], "a new route: add it to API, PAGES or PUBLIC with its scope"
    assert sorted(listed - served) == [], "a listed route the app no longer serves"


def test_every_api_route_needs_its_scope(client: TestClient, services: Services, clock: ManualClock) -> None:
    # One app for the whole table (each route's checks are a few in-process requests).
    without = {scope: create_key(services.state, clock, lacking(scope)) for scope in SCOPES}
    only = {scope: create_key(services.state, clock, [scope]) for scope in SCOPES}
    for route, scope in sorted(API.items()):
        method, path = route
        envelope(call(client, method, path), 401, "UNAUTHORIZED", route)
        envelope(call(client, method, path, bearer("fk_unknown_secret")), 401, "UNAUTHORIZED", route)
        envelope(call(client, method, path, bearer(without[scope])), 403, "FORBIDDEN", route)
        allowed = call(client, method, path, bearer(only[scope]))
        assert allowed.status_code not in (401, 403) and allowed.status_code < 500, (route, allowed.text)


def test_a_segment_write_key_in_the_body_needs_events_write(
    client: TestClient, services: Services, clock: ManualClock
) -> None:
    without = create_key(services.state, clock, lacking("events:write"))
    for route in sorted(SEGMENT):
        _method, path = route
        envelope(client.post(path, json={"writeKey": without}), 403, "FORBIDDEN", route)
        envelope(client.post(path, json={"writeKey": "fk_unknown_secret"}), 401, "UNAUTHORIZED", route)


def test_every_page_needs_a_session_with_its_scope(
    client: TestClient, services: Services, clock: ManualClock
) -> None:
    for route, scope in sorted(PAGES.items()):
        method, path = route
        signed_out = call(client, method, path)
        assert signed_out.status_code == 303, (route, signed_out.status_code)
        assert signed_out.headers["location"] == f"/login?next={path}", route
        signed_in = sign_in(client, create_key(services.state, clock, lacking(scope)))
        if signed_in.status_code == 303:
            refused = client.request(method, path, follow_redirects=False)
            assert refused.status_code == 403 and "No access" in refused.text, (route, refused.status_code)
        else:  # a key that can open no page (events:write only) cannot sign in: the page stays behind the form
            assert signed_in.status_code == 403 and "cannot use the dashboard" in signed_in.text, route
            assert client.request(method, path, follow_redirects=False).status_code == 303, route
        client.cookies.clear()
        sign_in(client, create_key(services.state, clock, [scope]))
        assert client.request(method, path, follow_redirects=False).status_code == 200, route
