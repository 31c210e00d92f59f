"""What a first-time user of the Funnels page tripped on, in real headless Chromium against a `funnels serve`
subprocess on a small hand-made dataset: date presets, event names as a pick-list, each step's meaning in
words, the best converting breakdown values when they tie, the medians with a breakdown, and grouped bars
that keep their numbers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page, expect

from funnels.events import Event
from funnels.services import Services
from tests.web.conftest import DASHBOARD_CONFIG, Dashboard, browser_sign_in, make_keys, serving, write_config

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
# (utm_source, users, of whom sign up, seconds from the page view to the sign-up): google and twitter both
# convert every user (a tie at 100%), newsletter half.
SOURCES = [("google", 2, 2, 60), ("twitter", 3, 3, 600), ("newsletter", 2, 1, 3600)]


def events() -> list[Event]:
    made = []
    for source, users, converted, seconds in SOURCES:
        for n in range(users):
            user = f"{source}-{n}"
            start = int((NOW - timedelta(days=2)).timestamp() * 1000) + n
            made.append(
                Event(
                    f"{user}-p",
                    "page",
                    "Pricing",
                    user,
                    start,
                    start,
                    user_id=user,
                    columns={"utm_source": source},
                )
            )
            if n < converted:
                at = start + seconds * 1000
                made.append(Event(f"{user}-s", "track", "signup", user, at, at, user_id=user))
    return made


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    root: Path = tmp_path_factory.mktemp("first-use")
    svc = Services.open(root / "data")
    try:
        svc.events.insert_events(events())
        keys = make_keys(svc.state)
    finally:
        svc.close()
    with serving(root / "data", write_config(root, DASHBOARD_CONFIG), keys) as dashboard:
        yield dashboard


@pytest.fixture
def analyst_page(page: Page, dashboard: Dashboard) -> Page:
    browser_sign_in(page, dashboard, dashboard.query_key)
    expect(page).to_have_url(f"{dashboard.url}/funnels")
    return page


STEPS = [
    {"type": "event", "event": "page", "name": "page::0", "filters": []},
    {"type": "track", "event": "signup", "name": "signup::1", "filters": []},
]


def funnel_query(**params: str) -> dict[str, str]:
    return {
        "date_from": (NOW - timedelta(days=7)).date().isoformat(),
        "date_to": NOW.date().isoformat(),
        "steps": json.dumps(STEPS),
        **params,
    }


def open_funnel(page: Page, dashboard: Dashboard, **params: str) -> list[dict[str, Any]]:
    """The funnel opened from its URL; returns the API's rows for it."""
    query = funnel_query(**params)
    page.goto(f"{dashboard.url}/funnels?{urlencode(query)}")
    page.wait_for_selector("#funnel-table tbody tr[data-step]")
    response = dashboard.api("GET", "/v0/funnel", key=dashboard.query_key, params=query)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


def last_steps(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each breakdown value's row of the last step."""
    last = max(row["step"] for row in rows)
    return {row["breakdown"]: row for row in rows if row["step"] == last}


def test_date_presets_set_the_dates(analyst_page: Page) -> None:
    page = analyst_page
    today = datetime.now(UTC).date()
    for days in (7, 30, 90):
        page.click(f'#date-presets button[data-days="{days}"]')
        expect(page.locator("#date-to")).to_have_value(today.isoformat())
        expect(page.locator("#date-from")).to_have_value((today - timedelta(days=days)).isoformat())
    expect(page.locator("#date-presets button")).to_have_text(["Last 7 days", "Last 30 days", "Last 90 days"])


def test_event_names_are_a_pick_list_from_the_catalog(analyst_page: Page, dashboard: Dashboard) -> None:
    """Every name the catalog has for the step's type is listed, without typing a letter; picking one fills
    the step (and its filters' suggestions follow)."""
    page = analyst_page
    second = page.locator("#steps [data-step]").nth(1)
    pick = second.locator('select[name="pick"]')
    names = dashboard.api("GET", "/v0/events/names", key=dashboard.query_key).json()
    tracked = [item["event"] for item in names["data"] if item["type"] == "track"]
    assert tracked == ["signup"]
    expect(pick.locator("option")).to_have_count(1 + len(tracked))
    expect(pick.locator("option").nth(1)).to_have_attribute("value", "signup")
    expect(second.locator('input[name="event"]')).to_have_value("")
    pick.select_option("signup")
    expect(second.locator('input[name="event"]')).to_have_value("signup")
    expect(pick).to_have_value("")  # ready for another pick
    # Type `page`: the page names seen; type `event`: the stored types.
    second.locator('select[name="type"]').select_option("page")
    expect(pick.locator("option[value='Pricing']")).to_have_count(1)
    second.locator('select[name="type"]').select_option("event")
    expect(pick.locator("option[value='page']")).to_have_count(1)
    expect(pick.locator("option[value='track']")).to_have_count(1)


def test_each_step_says_what_it_matches_in_words(analyst_page: Page) -> None:
    page = analyst_page
    step = page.locator("#steps [data-step]").nth(0)
    meaning = step.locator(".step-meaning")
    step.locator('select[name="type"]').select_option("event")
    step.locator('input[name="event"]').fill("page")
    expect(meaning).to_have_text("Matches any page view (whatever its name)")
    step.locator('select[name="type"]').select_option("page")
    step.locator('input[name="event"]').fill("Pricing")
    expect(meaning).to_have_text("Matches page view named “Pricing”")
    step.locator('select[name="type"]').select_option("track")
    step.locator('input[name="event"]').fill("signup")
    expect(meaning).to_have_text("Matches track event named “signup”")


def test_a_tie_for_best_converting_shows_every_value(analyst_page: Page, dashboard: Dashboard) -> None:
    page = analyst_page
    rows = open_funnel(page, dashboard, breakdown="utm_source", breakdown_top_n="5")
    by_value = last_steps(rows)
    top = max(row["conversion_from_start"] for row in by_value.values())
    best = sorted(value for value, row in by_value.items() if row["conversion_from_start"] == top)
    assert best == ["google", "twitter"]  # the data's tie (2 of 2 and 3 of 3)
    summary = page.locator("#funnel-summary")
    expect(summary).to_contain_text("Best converting (2-way tie)")
    assert sorted(json.loads(summary.get_attribute("data-best") or "")) == best
    expect(summary.locator("dd", has_text="%").last).to_contain_text(f"{top * 100:.1f}%")
    for value in best:
        expect(summary).to_contain_text(value)


def test_the_median_time_stays_with_a_breakdown(analyst_page: Page, dashboard: Dashboard) -> None:
    """There is no overall median with a breakdown: the values' medians, lowest to highest, are shown."""
    page = analyst_page
    rows = open_funnel(page, dashboard, breakdown="utm_source", breakdown_top_n="5")
    medians = sorted(row["median_seconds_from_start"] for row in last_steps(rows).values())
    assert len(set(medians)) == 3  # 1 min, 10 min, 1 h by the data
    summary = page.locator("#funnel-summary")
    expect(summary.locator("dt", has_text="Median time to convert")).to_have_count(1)
    assert sorted(json.loads(summary.get_attribute("data-medians") or "")) == medians
    expect(summary).to_contain_text("1.0 min – 1.0 h")
    rows = open_funnel(page, dashboard)  # and without one, the one median over everyone
    expect(summary.locator("dt", has_text="Best converting")).to_have_count(0)
    assert json.loads(summary.get_attribute("data-medians") or "") == [rows[-1]["median_seconds_from_start"]]
    expect(summary.locator("dt", has_text="Median time to convert")).to_have_count(1)


def test_grouped_bars_keep_their_numbers(analyst_page: Page, dashboard: Dashboard) -> None:
    """With a breakdown every bar is labelled with its users, as a single series is (they were in the
    tooltips only)."""
    page = analyst_page
    rows = open_funnel(page, dashboard, breakdown="utm_source", breakdown_top_n="5")
    values = list(dict.fromkeys(row["breakdown"] for row in rows))  # the series, in the API's order
    assert len(values) == 3
    by_series = [
        str(row["users"])
        for value in values
        for row in sorted(rows, key=lambda r: r["step"])
        if row["breakdown"] == value
    ]
    canvas = page.locator("#funnel-chart")
    expect(canvas).to_have_attribute("data-bar-labels", json.dumps(by_series, separators=(",", ":")))
    rows = open_funnel(page, dashboard)
    expected = [str(row["users"]) for row in rows]
    expect(canvas).to_have_attribute("data-bar-labels", json.dumps(expected, separators=(",", ":")))
