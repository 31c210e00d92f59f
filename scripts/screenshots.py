"""Screenshots of the dashboard for the README: `make screenshots` (or `.venv/bin/python scripts/screenshots.py
[PAGE ...]`) starts a demo server in a temporary directory (what `funnels demo` sets up: the sample
dataset, the automation config and its customers and deliveries; plus a few keys) and saves each page at 1280×800 to docs/screenshots/<page>.png, and those
named `<page>-phone` at a phone's 390×844, with Playwright driving Debian's /usr/bin/chromium.

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

import orjson
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the server and browser helpers the tests use

from tests.processes import free_port, start_server  # noqa: E402
from tests.web.browser import VIEWPORT, launch  # noqa: E402

from funnels.auth import create_key, key_id_of, revoke_key  # noqa: E402
from funnels.clock import SystemClock  # noqa: E402
from funnels.demo import DAYS, DEMO_STEPS, setup_demo  # noqa: E402
from funnels.demo_automation import DemoSink  # noqa: E402
from funnels.store.state import StateStore  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
PHONE = {"width": 390, "height": 844}
FULL_PAGE = {"funnels-organizations", "people"}  # shot whole, not just the viewport


@dataclass(frozen=True)
class Demo:
    url: str
    admin_key: str


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


def demo_analyses(page: Page) -> None:
    """Below the demo's funnel: conversion over time, time to convert, and the people who reached step 2."""
    demo_funnel(page)
    page.click('#funnel-table tbody tr[data-step="2"]')
    page.wait_for_selector('#people-card[data-state="ready"]')
    settle(page)
    page.locator("#trends-card").evaluate(
        "card => window.scrollTo(0, card.getBoundingClientRect().top + window.scrollY - 72)"
    )


def organizations(page: Page) -> None:
    """The configured onboarding funnel counted by organization (each counts its customers' events): the
    whole page (`FULL_PAGE`), so the builder's Count select shows with the results and the analyses."""
    page.click("#configured-list >> text=onboarding")
    page.wait_for_selector("#funnel-table tbody tr[data-step]")
    page.select_option("#aggregate-by", "organization")
    page.click("#run")
    page.wait_for_selector("#results-caption:has-text('counting organizations')")
    page.wait_for_selector('#trends-card[data-state="ready"]')
    page.wait_for_selector('#ttc-card[data-state="ready"]')
    page.evaluate("window.scrollTo(0, 0)")  # else the sticky header is drawn where the page was scrolled to


def open_person(page: Page) -> None:
    """A customer who reached two steps, with a parent organization and a few actions: one capped, one in
    the treated group of the nudge's holdout; unsubscribed from a newsletter topic (`OPT_OUTS`)."""
    page.goto(page.url.split("/people")[0] + "/people?model=customer&id=cus_1002")
    page.wait_for_selector("#timeline li.timeline-item")
    page.wait_for_selector("#person-opt-outs li")
    settle(page)
    page.evaluate("window.scrollTo(0, 0)")  # shot whole (`FULL_PAGE`): its subscriptions are below the fold


def open_delivery(page: Page) -> None:
    """The newest page of the log: sent, scheduled, cancelled and failing jobs side by side."""
    page.wait_for_selector("#deliveries-table tr.job")


def delivery_actions(page: Page) -> None:
    """Below the log: each action's jobs by status (held out, capped, suppressed among them) and the demo's
    holdout with its lift (`GET /v0/lift`)."""
    page.wait_for_selector('#by-action-card[data-state="ready"]')
    page.wait_for_selector('#lift-card[data-state="ready"]')
    page.locator("#by-action-card").evaluate(
        "card => window.scrollTo(0, card.getBoundingClientRect().top + window.scrollY - 72)"
    )


# page → what to do once it is open (after `settle`). The login page is shot signed out.
SHOTS: dict[str, Callable[[Page], None]] = {
    "login": lambda page: None,
    "funnels": demo_funnel,
    "funnels-analyses": demo_analyses,
    "funnels-organizations": organizations,
    "settings": lambda page: page.wait_for_selector("#keys-table tbody tr[data-key-id]"),
    "people": lambda page: open_person(page),
    "deliveries": lambda page: open_delivery(page),
    "deliveries-actions": delivery_actions,
    # A phone: the builder (its steps' words and pick-lists), the list of people, the log with its status.
    "funnels-phone": demo_funnel,
    "people-phone": lambda page: page.wait_for_selector("#people-table tbody tr[data-id]"),
    "deliveries-phone": lambda page: open_delivery(page),
}


def shoot(names: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        result = setup_demo(data_dir)
        state = StateStore(data_dir / "state.sqlite3")
        clock = SystemClock()
        admin_key = create_key(state, clock, ["admin"], name="Ada Lovelace")
        create_key(state, clock, ["events:write"], name="Website tracking")
        create_key(state, clock, ["query:read"], name="Growth team (read-only)")
        old = create_key(state, clock, ["events:write"], name="Old staging server")
        revoke_key(state, clock, key_id_of(old))
        state.close()
        port = free_port()
        sink = DemoSink(result.sink_port)  # the webhooks of the demo's config post here
        server = start_server(data_dir, port, "--config", str(result.config_path))
        demo = Demo(f"http://127.0.0.1:{port}", admin_key)
        try:
            with sync_playwright() as playwright:
                browser = launch(playwright)
                page = browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
                for name in names:
                    page.set_viewport_size(PHONE if name.endswith("-phone") else VIEWPORT)  # type: ignore[arg-type]
                    if name == "login":
                        page.goto(f"{demo.url}/login")
                    else:
                        if "/login" in page.url or page.url == "about:blank":
                            sign_in(page, demo)
                        page.goto(f"{demo.url}/{name.split('-')[0]}")  # funnels-analyses: /funnels
                    settle(page)
                    SHOTS[name](page)
                    path = OUT / f"{name}.png"
                    page.screenshot(path=str(path), full_page=name in FULL_PAGE)
                    print(f"saved {path.relative_to(ROOT)}")
                browser.close()
        finally:
            server.terminate()
            server.wait()
            sink.close()


def main() -> None:
    names = sys.argv[1:] or list(SHOTS)
    unknown = [name for name in names if name not in SHOTS]
    if unknown:
        sys.exit(f"unknown page(s) {', '.join(unknown)}; known: {', '.join(SHOTS)}")
    shoot(names)


if __name__ == "__main__":
    main()
