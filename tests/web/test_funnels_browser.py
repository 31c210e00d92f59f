"""The Funnels page in real headless Chromium against a `funnels serve` subprocess on the demo dataset:
building the demo funnel (page → connect → swap on ethereum) by UTM source through the builder, its numbers
against `GET /v0/funnel` called directly, the URL holding the query, a configured funnel, and an error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import yaml
from playwright.sync_api import Page, expect

from funnels.auth import create_key
from funnels.clock import SystemClock
from funnels.demo import DAYS, DEMO_STEPS, sample_events
from funnels.services import Services
from tests.processes import free_port, start_server
from tests.web.conftest import DASHBOARD_CONFIG, Dashboard, browser_sign_in

TODAY = datetime.now(UTC).replace(hour=23, minute=59, second=59, microsecond=0)
DATE_FROM = (TODAY - timedelta(days=DAYS)).date().isoformat()
DATE_TO = TODAY.date().isoformat()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The conftest's server, on a data directory holding the demo's sample events (1,500 users)."""
    root = tmp_path_factory.mktemp("funnels-dashboard")
    data_dir = root / "data"
    config_path = root / "funnels.yaml"
    config_path.write_text(yaml.safe_dump(DASHBOARD_CONFIG, sort_keys=False))
    svc = Services.open(data_dir)
    try:
        svc.events.insert_events(sample_events(TODAY, users=1_500))
        admin_key = create_key(svc.state, SystemClock(), ["admin"], name="Test admin")
        query_key = create_key(svc.state, SystemClock(), ["query:read"], name="Test analyst")
    finally:
        svc.close()
    port = free_port()
    server = start_server(data_dir, port, "--config", str(config_path))
    try:
        yield Dashboard(
            f"http://127.0.0.1:{port}", data_dir, config_path, admin_key, query_key, Path(root / "server.log")
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def analyst_page(page: Page, dashboard: Dashboard) -> Page:
    browser_sign_in(page, dashboard, dashboard.query_key)
    expect(page).to_have_url(f"{dashboard.url}/funnels")
    return page


def shown_rows(page: Page) -> list[dict[str, Any]]:
    """The table's numbers, from its rows' data- attributes (the chart is a canvas)."""
    page.wait_for_selector("#funnel-table tbody tr[data-step]")
    rows: list[dict[str, Any]] = page.eval_on_selector_all(
        "#funnel-table tbody tr[data-step]",
        """rows => rows.map(row => ({step: Number(row.dataset.step), breakdown: row.dataset.breakdown,
            users: Number(row.dataset.users),
            conversion_from_start: row.dataset.conversionFromStart === "" ? null : Number(row.dataset.conversionFromStart)}))""",
    )
    return sorted(rows, key=lambda row: (row["step"], row["breakdown"]))


def api_rows(dashboard: Dashboard, query: dict[str, str]) -> list[dict[str, Any]]:
    response = dashboard.api("GET", "/v0/funnel", key=dashboard.query_key, params=query)
    assert response.status_code == 200, response.text
    rows = [
        {
            "step": row["step"],
            "breakdown": row.get("breakdown", ""),
            "users": row["users"],
            "conversion_from_start": row["conversion_from_start"],
        }
        for row in response.json()["data"]
    ]
    return sorted(rows, key=lambda row: (row["step"], row["breakdown"]))


def url_query(page: Page) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(page.url).query))


def step_fields(page: Page) -> list[tuple[str, str]]:
    steps = page.locator("#steps [data-step]")
    return [
        (
            steps.nth(i).locator('[name="type"]').input_value(),
            steps.nth(i).locator('[name="event"]').input_value(),
        )
        for i in range(steps.count())
    ]


def test_build_the_demo_funnel_by_utm_source_and_reload_it(analyst_page: Page, dashboard: Dashboard) -> None:
    page = analyst_page
    expect(page.locator("#results-empty")).to_be_visible()  # no query in the URL: nothing run yet

    # The builder starts with two steps; make them page → connect, add swap with chain equals ethereum.
    steps = page.locator("#steps [data-step]")
    expect(steps).to_have_count(2)
    steps.nth(0).locator('[name="type"]').select_option("event")
    steps.nth(0).locator('[name="event"]').fill("page")
    steps.nth(1).locator('[name="type"]').select_option("track")
    steps.nth(1).locator('[name="event"]').fill("connect")
    page.click("#add-step")
    expect(steps).to_have_count(3)
    third = steps.nth(2)
    third.locator('[name="type"]').select_option("track")
    third.locator('[name="event"]').fill("swap")
    third.locator('[data-action="add-filter"]').click()
    # The operand and value come with suggestions from /v0/events/properties and /v0/events/values.
    expect(third.locator("datalist option[value='chain']")).to_have_count(1)
    third.locator('[name="operand"]').fill("chain")
    third.locator('[name="operand"]').dispatch_event("change")
    expect(third.locator("[data-filter] datalist option[value='ethereum']")).to_have_count(1)
    third.locator('[name="operator"]').select_option("equals")
    third.locator('[name="value"]').fill("ethereum")

    page.fill("#date-from", DATE_FROM)
    page.fill("#date-to", DATE_TO)
    page.select_option("#breakdown", "utm_source")
    page.fill("#top-n", "5")
    page.click("#run")

    shown = shown_rows(page)
    query = url_query(page)
    assert [
        {key: step[key] for key in ("type", "event", "filters")} for step in json.loads(query["steps"])
    ] == [{key: step[key] for key in ("type", "event", "filters")} for step in DEMO_STEPS]
    assert query["breakdown"] == "utm_source" and query["breakdown_top_n"] == "5"
    assert query["date_from"] == DATE_FROM and query["date_to"] == DATE_TO
    expected = api_rows(dashboard, query)
    assert shown == expected
    assert len({row["breakdown"] for row in expected}) == 5  # google, twitter, farcaster, newsletter, (none)
    assert all(row["users"] > 0 for row in expected if row["step"] == 3)
    totals = [sum(row["users"] for row in expected if row["step"] == step) for step in (1, 2, 3)]
    assert json.loads(page.get_attribute("#funnel-summary", "data-users") or "") == totals
    expect(page.locator("#dropoffs li")).to_have_count(2)

    # The URL holds the query: a reload shows the same funnel and the same numbers.
    page.reload()
    assert shown_rows(page) == expected
    assert step_fields(page) == [("event", "page"), ("track", "connect"), ("track", "swap")]
    expect(page.locator("#breakdown")).to_have_value("utm_source")


def test_the_demo_link_opens_a_filled_in_funnel(analyst_page: Page, dashboard: Dashboard) -> None:
    """`funnels demo` prints /funnels?<the /v0/funnel query>: it opens filled in and run."""
    query = {
        "date_from": DATE_FROM,
        "date_to": DATE_TO,
        "window_seconds": "1209600",
        "funnel_type": "closed",
        "steps": json.dumps(DEMO_STEPS),
    }
    page = analyst_page
    page.goto(f"{dashboard.url}/funnels?{urlencode(query)}")  # as demo.py builds it
    assert shown_rows(page) == api_rows(dashboard, query)
    expect(page.locator("#steps [data-step]")).to_have_count(3)


def test_a_configured_funnel_fills_the_builder(analyst_page: Page, dashboard: Dashboard) -> None:
    page = analyst_page
    page.click('#configured-list [data-funnel-id="onboarding"]')
    expect(page.locator("#steps [data-step]")).to_have_count(2)
    assert step_fields(page) == [("track", "sign_up"), ("track", "first_query")]
    page.wait_for_selector("#funnel-table tbody tr[data-step]")
    configured = dashboard.api("GET", "/v0/funnels", key=dashboard.query_key).json()["data"][0]
    shown_query, expected_query = url_query(page), dict(configured["query"])
    assert json.loads(shown_query.pop("steps")) == [
        {"filters": [], **step} for step in json.loads(expected_query.pop("steps"))
    ]
    assert shown_query == expected_query
    assert shown_rows(page) == api_rows(dashboard, configured["query"])  # nobody signed up: zeros


def test_an_api_error_is_shown_next_to_the_form(analyst_page: Page) -> None:
    page = analyst_page
    page.fill("#date-from", "2026-05-02")
    page.fill("#date-to", "2026-05-01")  # before date_from
    page.locator("#steps [data-step]").nth(1).locator('[name="event"]').fill("connect")
    page.click("#run")
    error = page.locator("#funnel-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("date_to")
    expect(page.locator("#run")).to_be_enabled()
