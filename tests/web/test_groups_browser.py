"""The Funnels page's "Count" select (`aggregate_by`) in real headless Chromium against a `funnels serve`
subprocess whose config declares customers and organizations: a funnel counted by organization shows
`GET /v0/funnel?aggregate_by=organization`'s numbers, the URL keeps the choice, and counting users again
shows the users' numbers; a server whose config declares no model shows no such select."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page, expect

from funnels.events import Event
from funnels.services import Services
from funnels.store import identity
from tests.web.conftest import (
    DASHBOARD_CONFIG,
    Dashboard,
    browser_sign_in,
    data_dir_with_keys,
    make_keys,
    serving,
    write_config,
)
from tests.web.test_funnels_browser import api_rows, expect_table, shown_rows, url_query

DAY_MS = 1_775_001_600_000  # 2026-04-01
QUERY = {
    "date_from": "2026-04-01",
    "date_to": "2026-04-01",
    "steps": '[{"type":"track","event":"sign_up","name":"sign_up::0"},'
    '{"type":"track","event":"api_call","name":"api_call::1"}]',
}


def event(user: str, name: str, second: int) -> Event:
    ts = DAY_MS + second * 1000
    return Event(
        event_id=f"{user}-{name}",
        type="track",
        event=name,
        user_key=user,
        user_id=user,
        ts_ms=ts,
        received_ms=ts,
    )


@pytest.fixture(scope="module")
def grouped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """acme (customers c1, c2) converts through two members, globex (c3) signs up only, c4 in none
    converts alone: users [3, 1], organizations [2, 1]."""
    root = tmp_path_factory.mktemp("groups-dashboard")
    data_dir = root / "data"
    svc = Services.open(data_dir)
    try:
        svc.events.insert_events(
            [
                event("c1", "sign_up", 0),
                event("c2", "api_call", 60),
                event("c3", "sign_up", 0),
                event("c4", "sign_up", 0),
                event("c4", "api_call", 5),
                Event(  # acme's own identify (stored under its primary id): its plan, for a breakdown
                    event_id="acme-identify",
                    type="identify",
                    event="identify",
                    user_key="acme",
                    user_id="acme",
                    ts_ms=DAY_MS - 86_400_000,
                    received_ms=DAY_MS,
                    properties={"plan": "pro"},
                ),
            ]
        )
        with svc.state.write() as connection:
            for model, primary in [("organization", "acme"), ("organization", "globex")] + [
                ("customer", f"c{n}") for n in range(1, 5)
            ]:
                key = identity.create_instance(connection, model, primary, None, "{}", DAY_MS)
                identity.claim_ids(connection, model, [primary], key, 0)
            pairs = [("acme", "c1"), ("acme", "c2"), ("globex", "c3")]
            identity.relate(
                connection,
                [identity.Relationship("organization", g, "customer", c) for g, c in pairs],
                DAY_MS,
            )
        keys = make_keys(svc.state)
    finally:
        svc.close()
    config = {**DASHBOARD_CONFIG, "models": [{"name": "customer"}, {"name": "organization"}]}
    with serving(data_dir, write_config(root, config), keys) as dashboard:
        yield dashboard


def test_count_organizations_then_users(page: Page, grouped: Dashboard) -> None:
    browser_sign_in(page, grouped, grouped.query_key)
    page.goto(f"{grouped.url}/funnels?{urlencode(QUERY | {'aggregate_by': 'organization'})}")
    expect(page.locator("#aggregate-by")).to_have_value("organization")
    expect(page.locator("#aggregate-by option")).to_have_text(["Users", "Customers", "Organizations"])
    expect_table(page, "1. sign_up", "2. api_call")
    expect(page.locator("#results-caption")).to_contain_text("counting organizations")
    expect(page.locator("#funnel-table thead th").nth(1)).to_have_text("Organizations")  # not "Users"
    by_organization = shown_rows(page)
    assert [row["users"] for row in by_organization] == [2, 1]
    assert by_organization == api_rows(grouped, url_query(page))
    # The analyses below say what they count.
    expect(page.locator("#ttc-card[data-state='ready'] #ttc-facts dt").first).to_have_text("Organizations")
    expect(page.locator("#trends-card .card-head .muted")).to_contain_text("Organizations by the period")

    page.select_option("#aggregate-by", "")
    page.click("#run")
    expect(page.locator("#results-caption")).not_to_contain_text("counting")
    expect(page.locator("#funnel-table thead th").nth(1)).to_have_text("Users")
    expect(page.locator("#ttc-card[data-state='ready'] #ttc-facts dt").first).to_have_text("Users")
    expect(page.locator("#trends-card .card-head .muted")).to_contain_text("Users by the period")
    assert "aggregate_by" not in url_query(page)
    expect(page.locator("#funnel-table tbody tr[data-step='1']")).to_have_attribute("data-users", "3")
    assert [row["users"] for row in shown_rows(page)] == [3, 1]

    page.go_back()  # the URL held the choice
    expect(page.locator("#aggregate-by")).to_have_value("organization")
    expect(page.locator("#funnel-table tbody tr[data-step='1']")).to_have_attribute("data-users", "2")


def test_organizations_by_their_own_person_property(page: Page, grouped: Dashboard) -> None:
    """Counting organizations, "Person property…" breaks them down by their own (acme's identify says
    `pro`, globex has none), as the API answers."""
    browser_sign_in(page, grouped, grouped.query_key)
    page.goto(f"{grouped.url}/funnels?{urlencode(QUERY | {'aggregate_by': 'organization'})}")
    expect_table(page, "1. sign_up", "2. api_call")
    page.select_option("#breakdown", "person.")
    expect(page.locator("#breakdown-property-field")).to_be_visible()
    page.fill("#breakdown-property", "plan")
    page.click("#run")
    expect(page.locator("#results-caption")).to_contain_text("by person.plan (top")
    expect(page.locator("#results-caption")).to_contain_text("counting organizations")
    query = url_query(page)
    assert query["aggregate_by"] == "organization" and query["breakdown"] == "person.plan"
    shown = shown_rows(page)
    assert shown == api_rows(grouped, query)
    assert {(row["breakdown"], row["users"]) for row in shown if row["users"]} == {("pro", 1), ("(none)", 1)}


def test_without_declared_models_there_is_no_count_select(
    page: Page, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("no-models")
    data_dir, keys = data_dir_with_keys(root)
    with serving(data_dir, None, keys) as dashboard:
        browser_sign_in(page, dashboard, dashboard.query_key)
        page.goto(f"{dashboard.url}/funnels")
        expect(page.locator("#identity")).to_be_visible()
        expect(page.locator("#aggregate-by")).to_have_count(0)
