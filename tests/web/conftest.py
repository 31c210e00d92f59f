"""Fixtures for the dashboard's tests.

HTTP level (in-process, the ASGI app): `sign_in(client, key)` and `csrf_token(client)`.

Browser level (a real `funnels serve` subprocess and Debian's headless Chromium driven by Playwright):
`dashboard` (the server, with a data directory, a config file and an admin and a query:read key),
`browser`, `page` (a fresh browser context: no cookies; fails the test on any uncaught script error) and
`admin_page` (signed in with the admin key). Helpers to start other servers: `make_keys(state)`,
`data_dir_with_keys(root)`, `write_config(root, config)` and `serving(data_dir, config_path, keys)`. The server and the browser are shared by the tests of one
module: a test that changes state (keys, the config) makes its own keys or puts things back.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, Playwright, Route, expect, sync_playwright

from funnels.auth import create_key
from funnels.clock import SystemClock
from funnels.store.state import StateStore
from tests.processes import free_port, start_server
from tests.receivers import NETWORK, HttpReceiver
from tests.web.browser import VIEWPORT, launch

# Waits, not deadlines: how long a locator may take to reach its expected state on a busy 2-core machine.
expect.set_options(timeout=20_000)

DASHBOARD_CONFIG: dict[str, Any] = {
    "models": [{"name": "customer"}],
    "network": NETWORK,
    "funnels": [
        {
            "id": "onboarding",
            "forModels": "customer",
            "steps": [
                {
                    "event": "sign_up",
                    "actions": [{"type": "webhook", "args": {"url": "http://127.0.0.1:9/x"}}],
                },
                {"event": "first_query"},
            ],
        }
    ],
}


# --- HTTP level ------------------------------------------------------------------------------------------


def form_csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]*)"', html)
    assert match, "no csrf_token field in the page"
    return match.group(1)


def sign_in(client: TestClient, key: str, next: str = "") -> httpx.Response:
    """Post the sign-in form as a browser would (the form's CSRF token from GET /login); no redirects."""
    token = form_csrf(client.get("/login").text)
    return client.post("/login", data={"key": key, "csrf_token": token, "next": next}, follow_redirects=False)


def csrf_token(client: TestClient, path: str = "/funnels") -> str:
    """The session's CSRF token, as a signed-in page carries it in `<meta name="csrf-token">`."""
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', client.get(path).text)
    assert match, "the page has no CSRF token: not signed in?"
    return match.group(1)


# --- browser level ---------------------------------------------------------------------------------------


@dataclass
class Dashboard:
    """A running `funnels serve` with a config and keys made before it started."""

    url: str
    data_dir: Path
    config_path: Path | None  # None: started without --config
    admin_key: str
    query_key: str
    log: Path = field(repr=False, default=Path())

    def api(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        """A bearer request to the server (the admin key unless another is given)."""
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def create_key(self, *scopes: str, name: str = "") -> str:
        response = self.api("POST", "/v0/keys", json={"name": name, "scopes": list(scopes)})
        assert response.status_code == 201, response.text
        key: str = response.json()["key"]
        return key


def make_keys(state: StateStore) -> tuple[str, str]:
    """An admin key and a query:read key, made in the state store before the server starts."""
    admin_key = create_key(state, SystemClock(), ["admin"], name="Test admin")
    query_key = create_key(state, SystemClock(), ["query:read"], name="Test analyst")
    return admin_key, query_key


def data_dir_with_keys(root: Path) -> tuple[Path, tuple[str, str]]:
    """`root/data`, new, with a state store holding `make_keys`' two keys, for a server to start on."""
    data_dir = root / "data"
    data_dir.mkdir()
    state = StateStore(data_dir / "state.sqlite3")
    try:
        return data_dir, make_keys(state)
    finally:
        state.close()


def write_config(root: Path, config: dict[str, Any]) -> Path:
    path = root / "funnels.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@contextmanager
def serving(data_dir: Path, config_path: Path | None, keys: tuple[str, str]) -> Iterator[Dashboard]:
    """`funnels serve` on `data_dir` (with `--config config_path` unless None) until the block ends."""
    port = free_port()
    server = start_server(data_dir, port, *(("--config", str(config_path)) if config_path else ()))
    try:
        yield Dashboard(
            f"http://127.0.0.1:{port}", data_dir, config_path, *keys, data_dir.parent / "server.log"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    root = tmp_path_factory.mktemp("dashboard")
    data_dir, keys = data_dir_with_keys(root)
    with serving(data_dir, write_config(root, DASHBOARD_CONFIG), keys) as dashboard:
        yield dashboard


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = launch(playwright)
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], f"uncaught errors in the page's scripts: {errors}"


def browser_sign_in(page: Page, dashboard: Dashboard, key: str) -> None:
    """Sign in through the form; returns on the page the sign-in lands on."""
    page.goto(f"{dashboard.url}/login")
    page.fill('input[name="key"]', key)
    page.click('button[type="submit"]')
    page.wait_for_url(re.compile(r"^(?!.*/login).*$"))


@pytest.fixture
def admin_page(page: Page, dashboard: Dashboard) -> Page:
    browser_sign_in(page, dashboard, dashboard.admin_key)
    return page


# --- a server with automation traffic (People, Deliveries) -----------------------------------------------

SEEDED_CUSTOMERS = 30  # more than one page of the Deliveries table (25 rows)
REFUSED = ("cus_2003", "cus_2007")  # their production_api_call webhook is refused (410): dead jobs


def seeded_config(receiver_url: str) -> dict[str, Any]:
    return {
        "models": [{"name": "customer"}, {"name": "organization"}],
        "funnels": [
            {
                "id": "onboarding",
                "forModels": "customer",
                "steps": [
                    {
                        "event": "sign_up",
                        "actions": {
                            "type": "webhook",
                            "args": {
                                "url": f"{receiver_url}/welcome",
                                "body": {"id": "{{ ids[0] }}", "plan": "{{ modelProperties.plan }}"},
                            },
                        },
                    },
                    {"event": "development_api_call"},
                    {
                        "event": "production_api_call",
                        "actions": {"type": "webhook", "args": {"url": f"{receiver_url}/crm"}},
                    },
                ],
            }
        ],
        "delivery": {"maxAttempts": 2, "backoffBase": "1s", "backoffMax": "1s", "timeout": "5s"},
        "network": NETWORK,
    }


@dataclass
class Seeded:
    dashboard: Dashboard
    receiver: HttpReceiver

    def wait_for_totals(self, **expected: int) -> None:
        """Wait until the worker has delivered what the seeding scheduled (the job counts per status)."""
        deadline = time.monotonic() + 60
        while True:
            totals = {
                status: self.dashboard.api("GET", "/v0/actions", params={"status": status, "size": 1}).json()[
                    "total"
                ]
                for status in expected
            }
            if totals == expected:
                return
            assert time.monotonic() < deadline, f"deliveries {totals}, expected {expected}"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """A `funnels serve` with a config whose webhooks go to an `HttpReceiver`, an organization and
    `SEEDED_CUSTOMERS` customers who signed up (welcome webhooks sent), some calling the API; the CRM webhook
    of the `REFUSED` customers answers 410, so their jobs are dead."""
    root = tmp_path_factory.mktemp("seeded")
    data_dir, keys = data_dir_with_keys(root)
    with HttpReceiver() as receiver:
        config_path = write_config(root, seeded_config(receiver.url))
        with serving(data_dir, config_path, keys) as dashboard:
            post = dashboard.api
            org = {
                "model": "organization",
                "ids": ["org-acme", "acme.test"],
                "displayName": "Acme Rockets",
                "properties": {"domain": "acme.test"},
            }
            assert post("POST", "/api/v1/identify", json=org).status_code == 200
            people = [
                {
                    "model": "customer",
                    "ids": [f"cus_{2000 + n}", f"person{n}@acme.test"],
                    "displayName": f"Person {n}",
                    "properties": {
                        "email": f"person{n}@acme.test",
                        "plan": ["free", "team"][n % 2],
                        "seats": n,
                    },
                    "parentModel": "organization",
                    "parentIds": ["org-acme"],
                }
                for n in range(1, SEEDED_CUSTOMERS + 1)
            ]
            assert post("POST", "/api/v1/identify", json=people).status_code == 200
            events = [
                {"name": "sign_up", "ids": [f"cus_{2000 + n}"], "properties": {"source": "docs"}}
                for n in range(1, SEEDED_CUSTOMERS + 1)
            ]
            assert post("POST", "/api/v1/events", json=events).status_code == 200
            for _refused in REFUSED:
                receiver.reply("/crm", 410, {"error": "gone"})
            later = [
                {"name": name, "ids": [customer]}
                for customer in REFUSED
                for name in ("development_api_call", "production_api_call")
            ]
            assert post("POST", "/api/v1/events", json=later).status_code == 200
            seeded = Seeded(dashboard, receiver)
            seeded.wait_for_totals(sent=SEEDED_CUSTOMERS, dead=len(REFUSED))
            yield seeded


@pytest.fixture
def seeded_page(page: Page, seeded: Seeded) -> Page:
    browser_sign_in(page, seeded.dashboard, seeded.dashboard.admin_key)
    return page


class HeldBack:
    """The first request whose URL matches `glob` and satisfies `hold` is held back (the others go on), so
    a test can make an older answer arrive after a newer one: `wait()` until it has been made, `release()`
    to send it on and let the page handle its answer."""

    def __init__(self, page: Page, glob: str, hold: Callable[[str], bool]) -> None:
        self.page = page
        self.held: list[Route] = []

        def route(request_route: Route) -> None:
            if not self.held and hold(request_route.request.url):
                self.held.append(request_route)
            else:
                request_route.continue_()

        page.route(glob, route)

    def wait(self) -> None:
        for _ in range(100):  # Playwright runs route handlers while the test waits in one of its calls
            if self.held:
                return
            self.page.wait_for_timeout(50)
        raise AssertionError("the request to hold back never came")

    def release(self) -> None:
        (route,) = self.held
        url = route.request.url
        with self.page.expect_response(lambda response: response.url == url):
            route.continue_()
        self.page.evaluate("() => new Promise((done) => setTimeout(done, 100))")  # its handler has run
