"""Screenshots of the dashboard for the README: `make screenshots` (or `.venv/bin/python scripts/screenshots.py
[PAGE ...]`) starts a demo server in a temporary directory (the sample dataset, a config, a few keys and
some automation traffic) and saves each page at 1280×800 to docs/screenshots/<page>.png with Playwright
driving Debian's /usr/bin/chromium.

To add a page: give it an entry in `SHOTS` (what to do on the page before the shot, e.g. run a query).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx
import orjson
import yaml
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the server and browser helpers the tests use

from tests.processes import free_port, start_server  # noqa: E402
from tests.web.browser import VIEWPORT, launch  # noqa: E402

from funnels.auth import create_key, key_id_of, revoke_key  # noqa: E402
from funnels.clock import SystemClock  # noqa: E402
from funnels.demo import DAYS, DEMO_STEPS, setup_demo  # noqa: E402
from funnels.store.state import StateStore  # noqa: E402

OUT = ROOT / "docs" / "screenshots"

CONFIG = {
    "models": [{"name": "customer"}, {"name": "organization"}],
    "funnels": [
        {
            "id": "onboarding",
            "forModels": "customer",
            "steps": [
                {
                    "event": "sign_up",
                    "actions": [
                        {"type": "webhook", "args": {"url": "http://127.0.0.1:9/welcome"}},
                        {
                            "type": "webhook",
                            "delay": "3d",
                            "unless": "development_api_call",
                            "args": {"url": "http://127.0.0.1:9/nudge"},
                        },
                    ],
                },
                {"event": "development_api_call"},
                {
                    "event": "production_api_call",
                    "actions": {"type": "webhook", "args": {"url": "http://127.0.0.1:9/live"}},
                },
            ],
        },
        {
            "id": "org_activation",
            "forModels": "organization",
            "steps": [{"event": "$identify"}, {"event": "invite_sent"}, {"event": "second_seat"}],
        },
    ],
}


@dataclass(frozen=True)
class Demo:
    url: str
    admin_key: str


def seed_automation(url: str, key: str) -> None:
    """A few customers moving through the onboarding funnel (the People and Deliveries pages show them)."""
    headers = {"Authorization": f"Bearer {key}"}
    people = [("c-1001", "Ada Lovelace"), ("c-1002", "Grace Hopper"), ("c-1003", "Alan Turing")]
    for id_, name in people:
        email = name.split()[0].lower() + "@example.com"
        body = {"model": "customer", "ids": [id_, email], "displayName": name, "properties": {"email": email}}
        httpx.post(f"{url}/api/v1/identify", json=body, headers=headers).raise_for_status()
    events = [
        ("sign_up", "c-1001"),
        ("sign_up", "c-1002"),
        ("sign_up", "c-1003"),
        ("development_api_call", "c-1001"),
    ]
    for name, id_ in events:
        httpx.post(
            f"{url}/api/v1/events", json={"name": name, "ids": [id_]}, headers=headers
        ).raise_for_status()


def sign_in(page: Page, demo: Demo) -> None:
    page.goto(f"{demo.url}/login")
    page.fill('input[name="key"]', demo.admin_key)
    page.click('button[type="submit"]')
    page.wait_for_url(f"{demo.url}/funnels**")


def settle(page: Page) -> None:
    """Wait until the page's API calls are done (nothing is loading any more)."""
    page.wait_for_load_state("networkidle")


def demo_funnel(page: Page) -> None:
    """The demo's funnel (page → connect → swap on ethereum) by UTM source, opened from its URL."""
    today = datetime.now(UTC).date()
    query = {
        "date_from": (today - timedelta(days=DAYS)).isoformat(),
        "date_to": today.isoformat(),
        "steps": orjson.dumps(DEMO_STEPS).decode(),
        "window_seconds": "1209600",
        "funnel_type": "closed",
        "breakdown": "utm_source",
        "breakdown_top_n": "5",
    }
    page.goto(f"{page.url.split('?')[0]}?{urlencode(query)}")
    page.wait_for_selector("#funnel-table tbody tr[data-step]")
    settle(page)


# page → what to do once it is open (after `settle`). The login page is shot signed out.
SHOTS: dict[str, Callable[[Page], None]] = {
    "login": lambda page: None,
    "funnels": demo_funnel,
    "settings": lambda page: page.wait_for_selector("#keys-table tbody tr[data-key-id]"),
}


def shoot(names: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        setup_demo(data_dir)
        state = StateStore(data_dir / "state.sqlite3")
        clock = SystemClock()
        admin_key = create_key(state, clock, ["admin"], name="Ada Lovelace")
        create_key(state, clock, ["events:write"], name="Website tracking")
        create_key(state, clock, ["query:read"], name="Growth team (read-only)")
        old = create_key(state, clock, ["events:write"], name="Old staging server")
        revoke_key(state, clock, key_id_of(old))
        state.close()
        config = work / "funnels.yaml"
        config.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
        port = free_port()
        server = start_server(data_dir, port, "--config", str(config))
        demo = Demo(f"http://127.0.0.1:{port}", admin_key)
        try:
            seed_automation(demo.url, admin_key)
            with sync_playwright() as playwright:
                browser = launch(playwright)
                page = browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
                for name in names:
                    if name == "login":
                        page.goto(f"{demo.url}/login")
                    else:
                        if "/login" in page.url or page.url == "about:blank":
                            sign_in(page, demo)
                        page.goto(f"{demo.url}/{name}")
                    settle(page)
                    SHOTS[name](page)
                    path = OUT / f"{name}.png"
                    page.screenshot(path=str(path))
                    print(f"saved {path.relative_to(ROOT)}")
                browser.close()
        finally:
            server.terminate()
            server.wait()


def main() -> None:
    names = sys.argv[1:] or list(SHOTS)
    unknown = [name for name in names if name not in SHOTS]
    if unknown:
        sys.exit(f"unknown page(s) {', '.join(unknown)}; known: {', '.join(SHOTS)}")
    shoot(names)


if __name__ == "__main__":
    main()
