"""The real analytics.js (@segment/analytics-next, vendored at `make install`) in Debian's Chromium, on a page
served from another origin than the API: Segment's snippet with only its host changed loads analytics.js and
its settings from a real `funnels serve`, sends page/identify/track there, and the events land. Chromium
fails every request to a host other than the two local servers, and the network log must show none. Then
identity stitching through it: a visitor who identifies mid-funnel, and one joined to their user by alias,
count as one user stitched and two raw (asserted through `GET /v0/funnel`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route

from tests.processes import wait_until
from tests.web.browser import VIEWPORT
from tests.web.conftest import Dashboard, data_dir_with_keys, serving

# Segment's standard snippet (its shape and the calls it queues), with the host changed: the script comes
# from funnels and `_cdn` names funnels, so the settings do too. Nothing else is set: the Segment.io
# integration's apiHost comes from the settings.
SNIPPET = """<!doctype html>
<html><head><title>Shop</title>
<script>
!function(){var analytics=window.analytics=window.analytics||[];if(!analytics.initialize)if(analytics.invoked)
window.console&&console.error&&console.error("Segment snippet included twice.");else{analytics.invoked=!0;
analytics.methods=["trackSubmit","trackClick","trackLink","trackForm","pageview","identify","reset","group",
"track","ready","alias","debug","page","screen","once","off","on","addSourceMiddleware",
"addIntegrationMiddleware","setAnonymousId","addDestinationMiddleware","register","deregister"];
analytics.factory=function(method){return function(){var args=Array.prototype.slice.call(arguments);
args.unshift(method);analytics.push(args);return analytics}};
for(var i=0;i<analytics.methods.length;i++){var key=analytics.methods[i];analytics[key]=analytics.factory(key)}
analytics.load=function(key,options){var script=document.createElement("script");script.type="text/javascript";
script.async=!0;script.setAttribute("data-global-segment-analytics-key","analytics");
script.src="__FUNNELS__/analytics.js/v1/"+key+"/analytics.min.js";
var first=document.getElementsByTagName("script")[0];first.parentNode.insertBefore(script,first);
analytics._loadOptions=options};
analytics._writeKey="__KEY__";analytics._cdn="__FUNNELS__";analytics.SNIPPET_VERSION="5.2.0";
analytics.load("__KEY__");
analytics.page("Pricing");
}}();
</script></head>
<body><h1>Shop</h1></body></html>
"""


class Site:
    """Another origin: an HTTP server on its own port serving one page, the snippet."""

    def __init__(self, html: str) -> None:
        body = html.encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/" else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body) if self.path == "/" else 0))
                self.end_headers()
                if self.path == "/":
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Site:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def funnels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dashboard, str]]:
    """A `funnels serve` with default options (any origin may call /v1), and its events:write key."""
    data_dir, keys = data_dir_with_keys(tmp_path_factory.mktemp("analytics-js"))
    with serving(data_dir, None, keys) as server:
        yield server, server.create_key("events:write", name="website")


def names(server: Dashboard) -> dict[tuple[str, str], int]:
    today = datetime.now(UTC).date().isoformat()
    params = {"date_from": today, "date_to": today}
    response = server.api("GET", "/v0/events/names", key=server.query_key, params=params)
    assert response.status_code == 200, response.text
    return {(row["type"], row["event"]): row["count"] for row in response.json()["data"]}


@dataclass
class Visit:
    """What a page visit did: every request (`METHOD url`), those the route refused, failed requests and
    uncaught script errors."""

    log: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def other_hosts(self, allowed: set[str]) -> list[str]:
        return [entry for entry in self.log if urlsplit(entry.split(" ", 1)[1]).netloc not in allowed]


@contextmanager
def visiting(browser: Browser, url: str, allowed: set[str]) -> Iterator[tuple[Page, Visit]]:
    """A fresh context on `url` whose requests to any host outside `allowed` fail at once (aborted and
    recorded, so a leak shows in the test instead of hanging on this machine's closed network)."""
    visit = Visit()

    def only_local(route: Route) -> None:
        if urlsplit(route.request.url).netloc in allowed:
            route.continue_()
        else:
            visit.refused.append(route.request.url)
            route.abort("blockedbyclient")

    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    try:
        context.route("**/*", only_local)
        page = context.new_page()
        page.on("pageerror", lambda error: visit.errors.append(str(error)))
        page.on("request", lambda request: visit.log.append(f"{request.method} {request.url}"))
        page.on("requestfailed", lambda request: visit.failed.append(f"{request.url}: {request.failure}"))
        page.goto(url)
        yield page, visit
    finally:
        context.close()


def test_the_standard_snippet_on_another_origin_sends_to_funnels_and_nowhere_else(
    browser: Browser, funnels: tuple[Dashboard, str]
) -> None:
    server, write_key = funnels
    api = server.url
    with Site(SNIPPET.replace("__FUNNELS__", api).replace("__KEY__", write_key)) as site:
        allowed = {urlsplit(site.url).netloc, urlsplit(api).netloc}
        assert len(allowed) == 2  # two origins: the page's and the API's
        with visiting(browser, site.url, allowed) as (page, visit):
            page.wait_for_function("() => window.analytics && window.analytics.initialized === true")
            # identify then track, each awaited until analytics.js has delivered it (or given up)
            delivered = page.evaluate(
                """async () => {
                    const identified = await analytics.identify("user-7", {plan: "pro"});
                    const tracked = await analytics.track("Signed Up", {source: "pricing"});
                    return [identified, tracked].map(
                        ctx => ctx.failedDelivery() ? String(ctx.failedDelivery().reason) : "ok");
                }"""
            )
            assert delivered == ["ok", "ok"]

    assert visit.refused == [] and visit.other_hosts(allowed) == []
    assert visit.errors == [] and visit.failed == []
    assert f"GET {site.url}/" in visit.log
    assert f"GET {api}/analytics.js/v1/{write_key}/analytics.min.js" in visit.log
    assert f"GET {api}/v1/projects/{write_key}/settings" in visit.log
    # analytics.js sends the key as HTTP Basic: each send was preflighted, and the answer let it through
    assert {f"POST {api}/v1/p", f"POST {api}/v1/i", f"POST {api}/v1/t"} <= set(visit.log)
    assert not [entry for entry in visit.log if entry.endswith("/v1/m")]  # metrics are off

    counts = wait_until(lambda: (found := names(server)) and found.get(("track", "Signed Up")) and found)
    assert counts == {("page", "Pricing"): 1, ("identify", "identify"): 1, ("track", "Signed Up"): 1}
    # identify and track carry the user id: a funnel of the two converts
    today = datetime.now(UTC).date().isoformat()
    steps = [
        {"type": "identify", "event": "identify", "name": "identified"},
        {"type": "track", "event": "Signed Up", "name": "signed up"},
    ]
    query = {"date_from": today, "date_to": today, "steps": json.dumps(steps)}
    response = server.api("GET", "/v0/funnel", key=server.query_key, params=query)
    assert response.status_code == 200, response.text
    assert [row["users"] for row in response.json()["data"]] == [1, 1]


def test_the_network_guard_catches_a_leak(browser: Browser, funnels: tuple[Dashboard, str]) -> None:
    """The control: the same snippet without `_cdn` on a plain-http page (analytics.js finds its host in
    the script's URL only for https) asks Segment's CDN for the settings. The route refuses it, and it shows."""
    server, write_key = funnels
    html = SNIPPET.replace('analytics._cdn="__FUNNELS__";', "")
    with Site(html.replace("__FUNNELS__", server.url).replace("__KEY__", write_key)) as site:
        allowed = {urlsplit(site.url).netloc, urlsplit(server.url).netloc}
        with visiting(browser, site.url, allowed) as (page, visit):
            for _ in range(200):  # Playwright delivers its events while it waits: wait in the page
                if visit.refused:
                    break
                page.wait_for_timeout(100)
    assert f"https://cdn.segment.com/v1/projects/{write_key}/settings" in visit.refused
    assert visit.other_hosts(allowed)


# --- identity stitching through analytics.js -------------------------------------------------------------

DELIVERED = "ctx => ctx.failedDelivery() ? String(ctx.failedDelivery().reason) : 'ok'"


def funnel_users(server: Dashboard, steps: list[dict[str, str]], identity: str) -> list[int]:
    today = datetime.now(UTC).date().isoformat()
    query = {"date_from": today, "date_to": today, "steps": json.dumps(steps), "identity": identity}
    response = server.api("GET", "/v0/funnel", key=server.query_key, params=query)
    assert response.status_code == 200, response.text
    return [row["users"] for row in response.json()["data"]]


def visit_and_send(browser: Browser, server: Dashboard, write_key: str, script: str) -> list[str]:
    """Open Segment's snippet on another origin and run `script` (an async function of the page that
    returns analytics.js's contexts, each awaited until delivered); what became of each send."""
    with Site(SNIPPET.replace("__FUNNELS__", server.url).replace("__KEY__", write_key)) as site:
        allowed = {urlsplit(site.url).netloc, urlsplit(server.url).netloc}
        with visiting(browser, site.url, allowed) as (page, visit):
            page.wait_for_function("() => window.analytics && window.analytics.initialized === true")
            delivered: list[str] = page.evaluate(f"async () => (await ({script})()).map({DELIVERED})")
    assert visit.refused == [] and visit.errors == [] and visit.failed == []
    return delivered


def stored(server: Dashboard, kind: str, event: str, count: int) -> None:
    """Wait until the server has shipped `count` events of this (type, event) to the event store."""
    wait_until(lambda: names(server).get((kind, event)) == count)


def test_an_anonymous_visitor_who_identifies_mid_funnel_converts_as_one_user(
    browser: Browser, funnels: tuple[Dashboard, str]
) -> None:
    """Plans viewed and a trial started anonymously; identify; Plans viewed again and a plan bought as the
    user. Stitched that is one person who converts; raw the anonymous id and the user id are two users,
    and neither converts."""
    server, write_key = funnels
    delivered = visit_and_send(
        browser,
        server,
        write_key,
        """async () => [
            await analytics.page("Plans"),
            await analytics.track("Trial Started"),
            await analytics.identify("user-42", {plan: "trial"}),
            await analytics.page("Plans"),
            await analytics.track("Plan Purchased"),
        ]""",
    )
    assert delivered == ["ok"] * 5
    stored(server, "track", "Plan Purchased", 1)
    steps = [
        {"type": "page", "event": "Plans", "name": "plans"},
        {"type": "track", "event": "Trial Started", "name": "trial"},
        {"type": "track", "event": "Plan Purchased", "name": "purchase"},
    ]
    assert funnel_users(server, steps, "stitched") == [1, 1, 1]
    assert funnel_users(server, steps, "raw") == [2, 1, 0]


def test_alias_joins_an_anonymous_visitor_to_the_user_the_backend_tracks(
    browser: Browser, funnels: tuple[Dashboard, str]
) -> None:
    """An anonymous visitor views Offers and a cart, then the page calls `analytics.alias("user-88")` (its
    previousId: the anonymous id) when the account is made; the backend then tracks the user by user id
    alone (Segment's HTTP API, as analytics-node would). Stitched one person converts; raw, two users."""
    server, write_key = funnels
    delivered = visit_and_send(
        browser,
        server,
        write_key,
        """async () => [
            await analytics.page("Offers"),
            await analytics.track("Cart Viewed"),
            await analytics.alias("user-88"),
        ]""",
    )
    assert delivered == ["ok"] * 3
    with httpx.Client(base_url=server.url, auth=(write_key, ""), timeout=30) as backend:
        for message in (
            {"type": "page", "name": "Offers"},
            {"type": "track", "event": "Order Completed"},
        ):
            sent = {**message, "userId": "user-88", "timestamp": datetime.now(UTC).isoformat()}
            assert backend.post(f"/v1/{message['type']}", json=sent).status_code == 200
    stored(server, "track", "Order Completed", 1)
    steps = [
        {"type": "page", "event": "Offers", "name": "offers"},
        {"type": "track", "event": "Cart Viewed", "name": "cart"},
        {"type": "track", "event": "Order Completed", "name": "order"},
    ]
    assert funnel_users(server, steps, "stitched") == [1, 1, 1]
    assert funnel_users(server, steps, "raw") == [2, 1, 0]
