"""Nothing the server serves loads from another host: every HTML page (signed in or not) and stylesheet
refers only to this server; the interactive API docs pages, which load from a CDN, are not served."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

from fastapi.testclient import TestClient
from starlette.applications import Starlette

from funnels.api import admin, automation, catalog, events, funnel, pages, segment
from funnels.api import keys as keys_api
from funnels.web import routes as dashboard
from funnels.web.pages import PAGES
from tests.web.conftest import sign_in

ROUTERS = (automation, events, segment, funnel, catalog, admin, keys_api, dashboard, pages)

# (tag, attribute) pairs a browser loads (or submits to) without a click
LOADED = {
    ("script", "src"),
    ("link", "href"),
    ("img", "src"),
    ("iframe", "src"),
    ("source", "src"),
    ("embed", "src"),
    ("object", "data"),
    ("video", "src"),
    ("audio", "src"),
    ("form", "action"),
}
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)""")


class Loads(HTMLParser):
    """The URLs an HTML page loads: attributes in LOADED, and url(...) in style attributes and elements."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is not None and (tag, name) in LOADED:
                self.urls.append(value)
            if name == "style" and value:
                self.urls += css_urls(value)
        self._in_style = tag == "style"

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.urls += css_urls(data)


def css_urls(css: str) -> list[str]:
    return [first or second for first, second in CSS_URL.findall(css)]


def same_origin(url: str) -> bool:
    parts = urlsplit(url.strip())
    return (not parts.scheme and not parts.netloc) or parts.scheme == "data"


def get_paths(client: TestClient) -> list[str]:
    """Every GET route without path parameters, the app's own (/openapi.json, /docs, …) and its routers':
    whatever of them answers HTML is checked."""
    app = client.app
    assert isinstance(app, Starlette)
    routes = [*app.routes, *(route for module in ROUTERS for route in module.router.routes)]
    paths = []
    for route in routes:
        path, methods = getattr(route, "path", ""), getattr(route, "methods", None) or ()
        if "GET" in methods and "{" not in path:
            paths.append(path)
    return paths


def test_no_page_loads_from_another_host(client: TestClient, keys: dict[str, str]) -> None:
    paths = get_paths(client)
    assert {"/login", "/errors", *(page.path for page in PAGES)} <= set(paths)
    loaded: dict[str, list[str]] = {}
    for signed_in in (False, True):  # signed out: the sign-in form; signed in: the pages
        if signed_in:
            assert sign_in(client, keys["all"]).status_code == 303
        for path in paths:
            response = client.get(path, headers={"Accept": "text/html"}, follow_redirects=False)
            if response.headers.get("content-type", "").startswith("text/html"):
                parser = Loads()
                parser.feed(response.text)
                loaded[path] = loaded.get(path, []) + parser.urls
    assert {"/login", "/errors", *(page.path for page in PAGES)} <= set(loaded)
    stylesheets: set[str] = set()
    for path, urls in loaded.items():
        for url in urls:
            assert same_origin(url), f"{path} loads {url}"
            if url.split("?")[0].endswith(".css"):
                stylesheets.add(url)
    assert any(url.endswith(".js") or ".js?" in url for urls in loaded.values() for url in urls)
    assert stylesheets
    for url in stylesheets:
        for loaded in css_urls(client.get(url).text):
            assert same_origin(loaded), f"{url} loads {loaded}"


def test_the_api_docs_pages_are_not_served_but_the_openapi_document_is(client: TestClient) -> None:
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NOT_FOUND"
    assert client.get("/openapi.json").json()["info"]["title"] == "funnels"
