"""The Funnels page's "Person property…" breakdown in real headless Chromium against a `funnels serve`
subprocess: the demo's sample events plus identify events a year earlier that give some users a `plan`; the
builder suggests the identify events' keys, breaks the demo funnel down by `person.plan` (no attribution to
choose), shows the API's rows, keeps
the choice in the URL and across a reload."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page, expect

from funnels.demo import sample_events
from funnels.events import Event
from funnels.services import Services
from tests.web.conftest import DASHBOARD_CONFIG, Dashboard, browser_sign_in, make_keys, serving, write_config
from tests.web.test_funnels_browser import TODAY, api_rows, demo_query, shown_rows, url_query

PLANS = ("free", "pro", "team")


def plans(users: int) -> list[Event]:
    """An identify a year ago for every other demo user, setting a plan."""
    when = int((TODAY - timedelta(days=365)).timestamp() * 1000)
    return [
        Event(
            event_id=f"plan-{index}",
            type="identify",
            event="identify",
            user_key=f"user-{index:05d}",
            user_id=f"user-{index:05d}",
            ts_ms=when + index,
            received_ms=when,
            properties={"plan": PLANS[index % len(PLANS)]},
        )
        for index in range(0, users, 2)
    ]


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    root = tmp_path_factory.mktemp("funnels-person")
    data_dir = root / "data"
    svc = Services.open(data_dir)
    try:
        svc.events.insert_events([*sample_events(TODAY, users=600), *plans(600)])
        keys = make_keys(svc.state)
    finally:
        svc.close()
    with serving(data_dir, write_config(root, DASHBOARD_CONFIG), keys) as dashboard:
        yield dashboard


def test_a_breakdown_by_a_person_property(page: Page, dashboard: Dashboard) -> None:
    browser_sign_in(page, dashboard, dashboard.query_key)
    page.goto(f"{dashboard.url}/funnels?{urlencode(demo_query())}")
    page.wait_for_selector("#funnel-table tbody tr[data-step]")
    page.select_option("#breakdown", "properties.")
    page.select_option("#attribution", "last_touch")
    keys = page.locator("#breakdown-keys option")
    expect(keys.first).to_be_attached()  # the steps' property keys
    event_keys = set(keys.evaluate_all("options => options.map(o => o.value)"))
    assert "plan" not in event_keys  # only identify events carry it
    page.select_option("#breakdown", "person.")
    # The key suggestions are the identify events' property keys now.
    expect(page.locator('#breakdown-keys option[value="plan"]')).to_be_attached()
    assert keys.evaluate_all("options => options.map(o => o.value)") == ["plan"]
    expect(page.locator("#breakdown-property-field")).to_be_visible()
    expect(page.locator("#attribution")).to_be_disabled()
    expect(page.locator("#attribution")).to_have_value("first_touch")  # the only one a person property has
    page.fill("#breakdown-property", "plan")
    page.click("#run")
    expect(page.locator("#results-caption")).to_contain_text("by person.plan (top")
    query = url_query(page)
    assert query["breakdown"] == "person.plan" and "breakdown_attribution" not in query
    shown = shown_rows(page)
    assert shown == api_rows(dashboard, query)
    assert {row["breakdown"] for row in shown if row["users"]} == {"free", "pro", "team", "(none)"}
    page.reload()
    expect(page.locator("#breakdown")).to_have_value("person.")
    expect(page.locator("#breakdown-property")).to_have_value("plan")
    expect(page.locator("#attribution")).to_be_disabled()
    assert shown_rows(page) == shown
