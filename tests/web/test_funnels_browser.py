"""The Funnels page in real headless Chromium against a `funnels serve` subprocess on the demo dataset:
building the demo funnel (page → connect → swap on ethereum) by UTM source through the builder, its numbers
against `GET /v0/funnel` called directly, the URL holding the query, counting persons or raw ids, a configured
funnel, an error, saved funnels (save, list, open by link, update, delete) and the comparison with the
previous period, moving and removing steps, back and forward, suggestions following the dates, and a server
without a config."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from playwright.sync_api import Page, expect

from funnels.demo import DAYS, DEMO_STEPS, sample_events
from funnels.events import Event
from funnels.services import Services
from tests.web.conftest import DASHBOARD_CONFIG, Dashboard, browser_sign_in, make_keys, serving, write_config

TODAY = datetime.now(UTC).replace(hour=23, minute=59, second=59, microsecond=0)
DATE_FROM = (TODAY - timedelta(days=DAYS)).date().isoformat()
DATE_TO = TODAY.date().isoformat()


# One event long before the demo's dates, of a name and with a property seen nowhere else: the builder's
# suggestions offer them only when its dates include that day.
OLD_DAY = "2020-01-15"
OLD_EVENT = Event(
    event_id="old-1",
    type="track",
    event="legacy_checkout",
    user_key="user-old",
    user_id="user-old",
    ts_ms=int(datetime.fromisoformat(f"{OLD_DAY}T12:00:00+00:00").timestamp() * 1000),
    received_ms=int(datetime.fromisoformat(f"{OLD_DAY}T12:00:00+00:00").timestamp() * 1000),
    properties={"coupon": "WINTER20"},
)


def demo_data(root: Path, users: int) -> tuple[Path, tuple[str, str]]:
    """A data directory holding the demo's sample events (and `OLD_EVENT`), and its two keys."""
    data_dir = root / "data"
    svc = Services.open(data_dir)
    try:
        svc.events.insert_events([*sample_events(TODAY, users=users), OLD_EVENT])
        keys = make_keys(svc.state)
    finally:
        svc.close()
    return data_dir, keys


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The conftest's server, on a data directory holding the demo's sample events (1,500 users)."""
    root = tmp_path_factory.mktemp("funnels-dashboard")
    data_dir, keys = demo_data(root, users=1_500)
    with serving(data_dir, write_config(root, DASHBOARD_CONFIG), keys) as dashboard:
        yield dashboard


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
    # The filter's fields sit side by side without overlapping (a stray min-width once made them).
    boxes = [third.locator(f'[name="{name}"]').bounding_box() for name in ("operand", "operator", "value")]
    edges = [(box["x"], box["x"] + box["width"]) for box in boxes if box is not None]
    assert len(edges) == 3
    assert all(left[1] <= right[0] for left, right in itertools.pairwise(edges))

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
    for lost in page.locator("#dropoffs li strong").all_text_contents():
        assert re.fullmatch(r"−\d+\.\d%", lost), lost
    expect(page.locator("#funnel-summary > div")).to_have_count(5)  # with "Best converting"

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


def test_the_users_toggle_runs_the_funnel_stitched_or_raw(analyst_page: Page, dashboard: Dashboard) -> None:
    """The demo's anonymous visitors identify when they connect: counted as persons (the default) the
    funnel differs from counting each id as sent (`identity=raw`), and the URL keeps the choice."""
    page = analyst_page
    fill_dates(page)
    fill_steps(page, [("event", "page"), ("track", "connect")])
    expect(page.locator("#identity")).to_have_value("stitched")
    page.click("#run")
    expect_table(page, "1. page", "2. connect")
    stitched_query = url_query(page)
    assert "identity" not in stitched_query  # the API's default
    stitched = shown_rows(page)
    assert stitched == api_rows(dashboard, stitched_query)
    # Without a breakdown: four headline numbers, nothing in the place of "Best converting".
    expect(page.locator("#funnel-summary > div")).to_have_count(4)
    expect(page.locator("#funnel-summary")).not_to_contain_text("null")

    page.select_option("#identity", "raw")
    page.click("#run")
    expect(page.locator("#results-caption")).to_contain_text("raw ids")
    raw_query = url_query(page)
    assert raw_query == {**stitched_query, "identity": "raw"}
    raw = shown_rows(page)
    assert raw == api_rows(dashboard, raw_query)
    assert raw[0]["users"] > stitched[0]["users"] and raw[1]["users"] < stitched[1]["users"]

    page.reload()  # the URL holds the choice
    expect(page.locator("#identity")).to_have_value("raw")
    assert shown_rows(page) == raw
    page.go_back()
    expect(page.locator("#identity")).to_have_value("stitched")
    expect(page.locator("#results-caption")).not_to_contain_text("raw ids")
    assert shown_rows(page) == stitched


def test_the_order_select_runs_a_strict_funnel(analyst_page: Page, dashboard: Dashboard) -> None:
    """Strict order (each step the user's very next event) from the Order select: the API's rows, never
    more users than closed, and the URL keeps the choice."""
    page = analyst_page
    fill_dates(page)
    fill_steps(page, [("event", "page"), ("track", "connect")])
    page.click("#run")
    expect_table(page, "1. page", "2. connect")
    closed = shown_rows(page)
    page.select_option("#funnel-type", "strict")
    page.click("#run")
    expect(page.locator("#results-caption")).to_contain_text("strict")
    strict_query = url_query(page)
    assert strict_query["funnel_type"] == "strict"
    strict = shown_rows(page)
    assert strict == api_rows(dashboard, strict_query)
    assert strict[0]["users"] == closed[0]["users"] and strict[1]["users"] <= closed[1]["users"]
    page.reload()
    expect(page.locator("#funnel-type")).to_have_value("strict")
    assert shown_rows(page) == strict


def test_an_exclusion_row_runs_the_closed_funnel_with_exclusions(
    analyst_page: Page, dashboard: Dashboard
) -> None:
    """The Exclude editor: a page view between steps 1 and 2 (step 1's own event, so a later page re-arms)
    is sent as `exclusions`, the rows are the API's, never more users than without it, and a reload keeps
    it; the editor is disabled, and nothing is sent, for the other orders."""
    page = analyst_page
    fill_dates(page)
    fill_steps(page, [("event", "page"), ("track", "connect")])
    page.click("#run")
    expect_table(page, "1. page", "2. connect")
    plain = shown_rows(page)
    page.click("#add-exclusion")
    row = page.locator("#exclusions [data-exclusion]").first
    row.locator('[name="type"]').select_option("event")
    row.locator('[name="event"]').fill("page")
    expect(row.locator('[name="from_step"]')).to_have_value("1")
    expect(row.locator('[name="to_step"]')).to_have_value("2")
    page.click("#run")
    expect(page.locator("#results-caption")).to_contain_text("1 excluded")
    query = url_query(page)
    assert json.loads(query["exclusions"]) == [
        {"type": "event", "event": "page", "filters": [], "from_step": 1, "to_step": 2}
    ]
    excluded = shown_rows(page)
    assert excluded == api_rows(dashboard, query)
    assert excluded[0]["users"] == plain[0]["users"] and excluded[1]["users"] <= plain[1]["users"]
    page.reload()
    expect(page.locator("#exclusions [data-exclusion] [name='event']")).to_have_value("page")
    assert shown_rows(page) == excluded
    page.select_option("#funnel-type", "open")
    expect(page.locator("#add-exclusion")).to_be_disabled()  # inside the disabled fieldset
    page.click("#run")
    expect(page.locator("#results-caption")).to_contain_text("open")
    assert "exclusions" not in url_query(page)


def test_an_exclusion_takes_filters_as_a_step_does(analyst_page: Page, dashboard: Dashboard) -> None:
    """An exclusion row's "+ Filter": the excluded event's properties are offered as operands, the filter
    is sent inside `exclusions`, the rows are the API's for it (which differ from the unfiltered
    exclusion's: only connects through MetaMask exclude), and a reload keeps the filter row."""
    page = analyst_page
    fill_dates(page)
    fill_steps(page, [("event", "page"), ("track", "swap")])
    page.click("#add-exclusion")
    row = page.locator("#exclusions [data-exclusion]").first
    row.locator('[name="event"]').fill("connect")
    row.locator('[name="event"]').dispatch_event("change")
    expect(row.locator("datalist option[value='provider_name']")).to_have_count(1)  # connect's property
    row.locator('[data-action="add-filter"]').click()
    filter_row = row.locator("[data-filter]").first
    expect(filter_row.locator('[name="operand"]')).to_be_focused()
    filter_row.locator('[name="operand"]').fill("provider_name")
    filter_row.locator('[name="value"]').fill("MetaMask")
    page.click("#run")
    expect(page.locator("#results-caption")).to_contain_text("1 excluded")
    query = url_query(page)
    filtered = [{"operand": "provider_name", "operator": "equals", "value": "MetaMask"}]
    assert json.loads(query["exclusions"]) == [
        {"type": "track", "event": "connect", "filters": filtered, "from_step": 1, "to_step": 2}
    ]
    shown = shown_rows(page)
    assert shown == api_rows(dashboard, query)
    exclusion = {**json.loads(query["exclusions"])[0], "filters": []}
    unfiltered = {**query, "exclusions": json.dumps([exclusion])}
    assert api_rows(dashboard, unfiltered) != shown  # the filter changes the answer: it was applied
    page.reload()
    restored = page.locator("#exclusions [data-exclusion] [data-filter]")
    expect(restored).to_have_count(1)
    expect(restored.locator('[name="operand"]')).to_have_value("provider_name")
    expect(restored.locator('[name="value"]')).to_have_value("MetaMask")
    row = page.locator("#exclusions [data-exclusion]").first
    row.locator('[data-action="remove-filter"]').click()
    page.click("#run")
    expect(page.locator("#results-caption")).to_contain_text("1 excluded")
    assert json.loads(url_query(page)["exclusions"])[0]["filters"] == []


def test_hold_constant_runs_the_funnel_holding_a_column(analyst_page: Page, dashboard: Dashboard) -> None:
    """The Hold constant field: `device` is sent as hold_constant, the rows are the API's, never more users
    than without it, a reload keeps it, and it applies to open and strict funnels too."""
    page = analyst_page
    fill_dates(page)
    fill_steps(page, [("event", "page"), ("track", "connect")])
    page.click("#run")
    expect_table(page, "1. page", "2. connect")
    plain = shown_rows(page)
    page.fill("#hold-constant", "device")
    page.click("#run")
    expect(page.locator("#results-caption")).to_contain_text("same device")
    query = url_query(page)
    assert json.loads(query["hold_constant"]) == ["device"]
    held = shown_rows(page)
    assert held == api_rows(dashboard, query)
    assert held[0]["users"] == plain[0]["users"] and held[1]["users"] <= plain[1]["users"]
    page.reload()
    expect(page.locator("#hold-constant")).to_have_value("device")
    assert shown_rows(page) == held
    page.select_option("#funnel-type", "open")
    page.click("#run")
    expect(page.locator("#results-caption")).to_contain_text("open")
    query = url_query(page)
    assert query["funnel_type"] == "open" and json.loads(query["hold_constant"]) == ["device"]
    assert shown_rows(page) == api_rows(dashboard, query)
    page.select_option("#funnel-type", "strict")
    expect(page.locator("#hold-constant")).to_be_enabled()
    page.click("#run")
    expect(page.locator("#results-caption")).to_contain_text("strict")
    query = url_query(page)
    assert query["funnel_type"] == "strict" and json.loads(query["hold_constant"]) == ["device"]
    assert shown_rows(page) == api_rows(dashboard, query)


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


# --- saved funnels and the comparison with the previous period ----------------------------------------------


def shown_changes(page: Page) -> list[dict[str, Any]]:
    """The comparison table's numbers, from its rows' data- attributes."""
    page.wait_for_selector("#comparison-table tbody tr[data-step]")
    rows: list[dict[str, Any]] = page.eval_on_selector_all(
        "#comparison-table tbody tr[data-step]",
        """rows => rows.map(row => ({step: Number(row.dataset.step), users: Number(row.dataset.users),
            previous_users: Number(row.dataset.previousUsers), users_change: Number(row.dataset.usersChange),
            conversion_from_start_change_points: Number(row.dataset.changePoints)}))""",
    )
    return rows


def api_changes(dashboard: Dashboard, query: dict[str, str]) -> list[dict[str, Any]]:
    response = dashboard.api("GET", "/v0/funnel", key=dashboard.query_key, params=query)
    assert response.status_code == 200, response.text
    names = ("step", "users", "previous_users", "users_change", "conversion_from_start_change_points")
    return [{name: row[name] for name in names} for row in response.json()["comparison"]["data"]]


def test_save_list_open_by_link_and_compare(analyst_page: Page, dashboard: Dashboard) -> None:
    """Compare the last 10 days with the 10 before, save it, open it by its link in a fresh page, save a
    change, be refused a change made meanwhile elsewhere, delete it."""
    page = analyst_page
    fill_dates(page, (TODAY - timedelta(days=9)).date().isoformat(), DATE_TO)
    fill_steps(page, [("event", "page"), ("track", "connect")])
    page.check("#compare")
    page.click("#run")
    expect_table(page, "1. page", "2. connect")
    query = url_query(page)
    assert query["compare"] == "previous_period"
    expect(page.locator("#comparison h3")).to_contain_text("Compared with the previous period")
    changes = shown_changes(page)
    assert changes == api_changes(dashboard, query)
    assert changes[0]["previous_users"] > 0 and changes[1]["users"] > 0  # both periods within the demo's days

    page.fill("#save-name", "Last 10 days, connect")
    page.click("#save")
    saved_item = page.locator("#saved-list [data-saved-id]", has_text="Last 10 days, connect")
    expect(saved_item).to_have_attribute("aria-current", "true")
    expect(page.locator("#saved-name")).to_have_text("Last 10 days, connect")
    funnel_id = saved_item.get_attribute("data-saved-id")
    assert funnel_id
    link = page.locator("#saved-link")
    expect(link).to_have_attribute("href", f"/funnels?saved={funnel_id}")
    assert url_query(page) == {**query, "saved": funnel_id}
    stored = dashboard.api("GET", f"/v0/saved_funnels/{funnel_id}", key=dashboard.query_key).json()
    assert stored["parameters"] == query and stored["version"] == 1

    # The link, in a page of its own: the builder filled with the saved funnel and run, compared.
    fresh = page.context.new_page()
    fresh.goto(f"{dashboard.url}/funnels?saved={funnel_id}")
    expect_table(fresh, "1. page", "2. connect")
    expect(fresh.locator("#compare")).to_be_checked()
    expect(fresh.locator("#saved-name")).to_have_text("Last 10 days, connect")
    assert shown_rows(fresh) == api_rows(dashboard, query)
    assert shown_changes(fresh) == changes
    assert url_query(fresh) == {**query, "saved": funnel_id}
    fresh.reload()  # the address bar keeps the parameters and which saved funnel they are
    expect(fresh.locator("#saved-name")).to_have_text("Last 10 days, connect")
    assert shown_changes(fresh) == changes

    # A change saved from the fresh page; the first page still holds version 1, so its save is refused.
    fresh.select_option("#funnel-type", "open")
    fresh.click("#run")
    expect(fresh.locator("#results-caption")).to_contain_text("open")
    fresh.click("#saved-update")
    expect(fresh.locator("#saved-version")).to_have_text("version 2")
    stored = dashboard.api("GET", f"/v0/saved_funnels/{funnel_id}", key=dashboard.query_key).json()
    assert stored["parameters"]["funnel_type"] == "open" and stored["version"] == 2
    page.click("#saved-update")
    expect(page.locator("#saved-error")).to_contain_text("changed meanwhile")
    fresh.close()

    # Opened from the list (a configured funnel first, which closes it), then deleted.
    page.click('#configured-list [data-funnel-id="onboarding"]')
    expect(page.locator("#saved-open")).to_be_hidden()
    assert "saved" not in url_query(page)
    page.click(f'#saved-list [data-saved-id="{funnel_id}"]')
    expect(page.locator("#funnel-type")).to_have_value("open")
    expect(page.locator("#saved-version")).to_have_text("version 2")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#saved-delete")
    expect(page.locator(f'#saved-list [data-saved-id="{funnel_id}"]')).to_have_count(0)
    expect(page.locator("#saved-open")).to_be_hidden()
    assert "saved" not in url_query(page)
    assert dashboard.api("GET", f"/v0/saved_funnels/{funnel_id}", key=dashboard.query_key).status_code == 404


def test_a_link_to_a_deleted_saved_funnel_says_so(analyst_page: Page, dashboard: Dashboard) -> None:
    page = analyst_page
    page.goto(f"{dashboard.url}/funnels?saved=0123456789abcdef")
    expect(page.locator("#saved-error")).to_contain_text("No saved funnel 0123456789abcdef")
    expect(page.locator("#results-empty")).to_be_visible()


# --- the builder's steps, history, the date range of suggestions, no config ------------------------------


def fill_steps(page: Page, steps: list[tuple[str, str]]) -> None:
    """Make the builder's steps these (type, event) pairs, adding steps as needed."""
    rows = page.locator("#steps [data-step]")
    while rows.count() < len(steps):
        page.click("#add-step")
    for index, (type_, event) in enumerate(steps):
        rows.nth(index).locator('[name="type"]').select_option(type_)
        rows.nth(index).locator('[name="event"]').fill(event)


def fill_dates(page: Page, date_from: str = DATE_FROM, date_to: str = DATE_TO) -> None:
    page.fill("#date-from", date_from)
    page.fill("#date-to", date_to)


def expect_table(page: Page, *labels: str) -> None:
    """Wait until the table shows a run of these steps (its first column, per step)."""
    expect(page.locator("#funnel-table tbody tr[data-step] td:first-child")).to_have_text(list(labels))


def test_move_and_remove_steps_then_run(analyst_page: Page, dashboard: Dashboard) -> None:
    page = analyst_page
    fill_dates(page)
    fill_steps(page, [("track", "swap"), ("event", "page"), ("track", "connect"), ("track", "sign_up")])
    steps = page.locator("#steps [data-step]")
    steps.nth(1).locator('[data-action="up"]').click()  # page, swap, connect, sign_up
    steps.nth(1).locator('[data-action="down"]').click()  # page, connect, swap, sign_up
    steps.nth(3).locator('[data-action="remove-step"]').click()  # page, connect, swap
    assert step_fields(page) == [("event", "page"), ("track", "connect"), ("track", "swap")]
    expect(page.locator("#steps .step-num")).to_have_text(["1", "2", "3"])
    expect(steps.nth(0).locator('[data-action="up"]')).to_be_disabled()
    expect(steps.nth(2).locator('[data-action="down"]')).to_be_disabled()
    expect(steps.nth(1).locator('[data-action="up"]')).to_be_enabled()

    page.click("#run")
    expect_table(page, "1. page", "2. connect", "3. swap")
    built = [
        {"type": "event", "event": "page", "name": "page::0", "filters": []},
        {"type": "track", "event": "connect", "name": "connect::1", "filters": []},
        {"type": "track", "event": "swap", "name": "swap::2", "filters": []},
    ]
    query = url_query(page)
    assert json.loads(query["steps"]) == built
    response = dashboard.api(
        "GET", "/v0/funnel", key=dashboard.query_key, params={**query, "steps": json.dumps(built)}
    )
    assert response.status_code == 200, response.text
    expected = [(row["step"], row["users"]) for row in response.json()["data"]]
    shown = page.eval_on_selector_all(
        "#funnel-table tbody tr[data-step]",
        "rows => rows.map(row => [Number(row.dataset.step), Number(row.dataset.users)])",
    )
    assert [tuple(row) for row in shown] == expected  # in the table's order
    users = [users for _, users in expected]
    assert users[0] > users[1] > users[2] > 0  # the order matters: these are page → connect → swap


def test_back_and_forward_rerun_the_funnel_of_that_entry(analyst_page: Page, dashboard: Dashboard) -> None:
    page = analyst_page
    start = page.url
    fill_dates(page)
    fill_steps(page, [("event", "page"), ("track", "connect")])
    page.click("#run")
    expect_table(page, "1. page", "2. connect")
    url_a, rows_a = page.url, shown_rows(page)
    assert rows_a == api_rows(dashboard, url_query(page))

    page.locator("#steps [data-step]").nth(1).locator('[name="event"]').fill("swap")
    page.click("#run")
    expect_table(page, "1. page", "2. swap")
    url_b, rows_b = page.url, shown_rows(page)
    assert rows_b == api_rows(dashboard, url_query(page))
    assert url_a != url_b and rows_a != rows_b

    def shows(url: str, second: str, rows: list[dict[str, Any]]) -> None:
        expect(page).to_have_url(url)
        expect_table(page, "1. page", f"2. {second}")
        assert shown_rows(page) == rows
        assert step_fields(page) == [("event", "page"), ("track", second)]

    page.go_back()
    shows(url_a, "connect", rows_a)
    page.go_forward()
    shows(url_b, "swap", rows_b)

    # Back to the page as opened (no query): a fresh builder and no results, not B's left over.
    page.go_back()
    page.go_back()
    expect(page).to_have_url(start)
    expect(page.locator("#results-empty")).to_be_visible()
    expect(page.locator("#results-body")).to_be_hidden()
    assert step_fields(page) == [("event", "page"), ("track", "")]


def test_suggestions_follow_the_builder_dates(analyst_page: Page) -> None:
    """/v0/events/names, /properties and /values get the builder's dates: `OLD_EVENT` (2020) is suggested,
    with its property and value, only while the dates include its day."""
    page = analyst_page
    fill_dates(page)
    track_names = page.locator("#events-track")
    expect(track_names.locator("option[value='connect']")).to_have_count(1)  # loaded
    expect(track_names.locator("option[value='legacy_checkout']")).to_have_count(0)

    second = page.locator("#steps [data-step]").nth(1)
    fill_steps(page, [("event", "page"), ("track", "legacy_checkout")])
    second.locator('[name="event"]').dispatch_event("change")
    second.locator('[data-action="add-filter"]').click()
    second.locator('[name="operand"]').fill("coupon")
    second.locator('[name="operand"]').dispatch_event("change")
    operands = page.locator(f"#{second.get_attribute('data-operands')}")
    values = second.locator("[data-filter] datalist")
    expect(operands.locator("option[value='device']")).to_have_count(0)  # no event of it in these dates

    fill_dates(page, date_from="2020-01-01")
    expect(track_names.locator("option[value='legacy_checkout']")).to_have_count(1)
    expect(operands.locator("option[value='coupon']")).to_have_count(1)
    expect(values.locator("option[value='WINTER20']")).to_have_count(1)

    fill_dates(page, date_from="2020-01-16")  # the day after it
    expect(track_names.locator("option[value='legacy_checkout']")).to_have_count(0)
    expect(track_names.locator("option[value='connect']")).to_have_count(1)
    expect(operands.locator("option")).to_have_count(0)
    expect(values.locator("option")).to_have_count(0)


@pytest.fixture(scope="module")
def unconfigured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """A server started without --config, on a smaller copy of the demo's events."""
    data_dir, keys = demo_data(tmp_path_factory.mktemp("unconfigured"), users=200)
    with serving(data_dir, None, keys) as dashboard:
        yield dashboard


def test_without_a_config_a_note_says_so_and_the_builder_works(page: Page, unconfigured: Dashboard) -> None:
    browser_sign_in(page, unconfigured, unconfigured.query_key)
    configured = page.locator("#configured-list")
    expect(configured).to_contain_text("No config loaded")
    expect(configured.locator("[data-funnel-id]")).to_have_count(0)
    assert unconfigured.api("GET", "/v0/funnels").json()["data"] == []

    fill_dates(page)
    fill_steps(page, [("event", "page"), ("track", "connect")])
    page.click("#run")
    expect_table(page, "1. page", "2. connect")
    expected = api_rows(unconfigured, url_query(page))
    assert shown_rows(page) == expected
    assert expected[1]["users"] > 0


# --- below the funnel: conversion over time, time to convert, the people behind a step (analyses.js) ---------


def demo_query(**extra: str) -> dict[str, str]:
    query = {
        "date_from": DATE_FROM,
        "date_to": DATE_TO,
        "window_seconds": "1209600",
        "funnel_type": "closed",
        "steps": json.dumps(DEMO_STEPS),
    }
    return {**query, **extra}


def api_json(dashboard: Dashboard, path: str, query: dict[str, str]) -> dict[str, Any]:
    response = dashboard.api("GET", path, key=dashboard.query_key, params=query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def card_json(page: Page, card: str, attribute: str) -> Any:
    return json.loads(page.get_attribute(card, attribute) or "null")


def test_conversion_over_time_and_time_to_convert_follow_the_funnel(
    analyst_page: Page, dashboard: Dashboard
) -> None:
    """Below a funnel: its conversion per period and its time to convert, equal to the API's answers for
    the same query (without the breakdown); the interval and the steps measured can be changed."""
    page = analyst_page
    query = demo_query(breakdown="utm_source", breakdown_top_n="5")
    page.goto(f"{dashboard.url}/funnels?{urlencode(query)}")
    overall = {key: value for key, value in query.items() if not key.startswith("breakdown")}

    trends = page.locator("#trends-card")
    expect(trends).to_have_attribute("data-state", "ready")
    expect(trends).to_have_attribute("data-interval", "day")  # a range of DAYS + 1 days: per day
    expected = api_json(dashboard, "/v0/funnel/trends", {**overall, "interval": "day"})["data"]
    rows = [[r["period"], r["entered"], r["converted"], r["window_closed"]] for r in expected]
    assert card_json(page, "#trends-card", "data-rows") == rows
    funnel = api_json(dashboard, "/v0/funnel", overall)["data"]
    assert sum(row[1] for row in rows) == funnel[0]["users"]  # the periods add up to the funnel
    assert sum(row[2] for row in rows) == funnel[-1]["users"]
    expect(page.locator("#trends-table tbody tr")).to_have_count(len(rows))

    page.select_option("#trends-interval", "week")
    expect(trends).to_have_attribute("data-interval", "week")
    weekly = api_json(dashboard, "/v0/funnel/trends", {**overall, "interval": "week"})["data"]
    expect(page.locator("#trends-table tbody tr")).to_have_count(len(weekly))
    assert card_json(page, "#trends-card", "data-rows") == [
        [r["period"], r["entered"], r["converted"], r["window_closed"]] for r in weekly
    ]

    ttc = page.locator("#ttc-card")
    expect(ttc).to_have_attribute("data-state", "ready")
    whole = api_json(dashboard, "/v0/funnel/time_to_convert", overall)["data"][0]
    assert whole["users"] == funnel[-1]["users"] > 0
    assert card_json(page, "#ttc-card", "data-users") == whole["users"]
    assert card_json(page, "#ttc-card", "data-histogram") == [b["users"] for b in whole["histogram"]]
    expect(page.locator("#ttc-facts")).to_contain_text("Median")

    page.select_option("#ttc-from", "2")
    second = api_json(dashboard, "/v0/funnel/time_to_convert", {**overall, "from_step": "2", "to_step": "3"})
    expect(ttc).to_have_attribute(
        "data-histogram",
        json.dumps([b["users"] for b in second["data"][0]["histogram"]], separators=(",", ":")),
    )
    page.select_option("#ttc-to", "2")  # from 2 to 2: nothing to measure, said so
    expect(ttc).to_have_attribute("data-state", "empty")
    expect(ttc.locator(".analysis-note")).to_contain_text("later step")


def bar_point(page: Page, dataset: int, index: int) -> tuple[float, float]:
    """Where on the page Chart.js drew a bar of the funnel chart (its middle)."""
    x, y = page.evaluate(
        """([dataset, index]) => {
            const chart = Chart.getChart(document.querySelector('#funnel-chart'));
            const bar = chart.getDatasetMeta(dataset).data[index];
            return [bar.x, (bar.y + bar.base) / 2];
        }""",
        [dataset, index],
    )
    box = page.locator("#funnel-chart").bounding_box()
    assert box is not None
    return box["x"] + x, box["y"] + y


def test_a_bar_lists_its_people_page_by_page_with_a_csv(analyst_page: Page, dashboard: Dashboard) -> None:
    """A click on step 2's bar lists who reached it, as GET /v0/funnel/people pages them; "Load more"
    appends the next page; the CSV link downloads them all; a drop-off lists who dropped off there."""
    page = analyst_page
    query = demo_query()
    page.goto(f"{dashboard.url}/funnels?{urlencode(query)}")
    page.wait_for_selector("#funnel-table tbody tr[data-step]")
    expect(page.locator("#people-card")).to_be_hidden()

    page.mouse.click(*bar_point(page, 0, 1))
    card = page.locator("#people-card")
    expect(card).to_have_attribute("data-state", "ready")
    expect(page.locator("#people-title")).to_contain_text("reached 2. connect")
    first = api_json(dashboard, "/v0/funnel/people", {**query, "step": "2", "limit": "50"})
    assert first["users"] > 50  # more than one page
    keys = page.locator("#people-table tbody tr")
    expect(keys).to_have_count(50)
    assert [keys.nth(i).get_attribute("data-user-key") for i in range(50)] == [
        row["user_key"] for row in first["data"]
    ]
    page.click("#people-more")
    second = api_json(
        dashboard, "/v0/funnel/people", {**query, "step": "2", "limit": "50", "cursor": first["next_cursor"]}
    )
    expect(keys).to_have_count(50 + len(second["data"]))
    assert keys.nth(50).get_attribute("data-user-key") == second["data"][0]["user_key"]
    expect(page.locator("#people-count")).to_contain_text(f"of {first['users']:,} users")
    # The People page needs the admin scope: an analyst's list has no links to it.
    expect(keys.nth(0).locator("a")).to_have_count(0)

    # The CSV link is the same query as a download (the session's cookie authorises it like the page's calls).
    href = page.get_attribute("#people-csv", "href") or ""
    csv = page.evaluate("href => fetch(href).then(r => r.text())", href)
    lines = csv.strip().splitlines()
    assert lines[0].startswith("user_key,last_step,step_1_at")
    assert len(lines) == 1 + first["users"]

    # A drop-off: who reached step 2 but not step 3.
    page.click('#dropoffs li[data-to="3"]')
    expect(page.locator("#people-outcome")).to_have_value("dropped")
    dropped = api_json(
        dashboard, "/v0/funnel/people", {**query, "step": "3", "outcome": "dropped", "limit": "50"}
    )
    expect(card).to_have_attribute("data-users", str(dropped["users"]))
    shown = int(page.get_attribute("#dropoffs li[data-to='3']", "data-dropped") or "-1")
    assert dropped["users"] == shown  # the drop-off's number, listed

    # With a breakdown, a row lists the people of its value only.
    page.goto(f"{dashboard.url}/funnels?{urlencode(demo_query(breakdown='utm_source', breakdown_top_n='5'))}")
    row = page.locator('#funnel-table tbody tr[data-step="1"][data-breakdown="google"]')
    row.click()
    expect(card).to_have_attribute("data-breakdown-value", "google")
    expect(card).to_have_attribute("data-state", "ready")
    expect(card).to_have_attribute("data-users", row.get_attribute("data-users") or "")
    page.click("#people-close")
    expect(card).to_be_hidden()


def test_a_person_of_the_list_opens_with_their_events_on_the_people_page(
    page: Page, dashboard: Dashboard
) -> None:
    """Signed in as admin, each listed user links to the People page, which shows any user key, identified
    or anonymous: its stitched person, linked keys and events, as GET /v0/users/{key} answers; the page's
    list of user keys (GET /v0/events/users) links there too."""
    browser_sign_in(page, dashboard, dashboard.admin_key)
    query = demo_query()
    page.goto(f"{dashboard.url}/funnels?{urlencode(query)}")
    page.wait_for_selector("#funnel-table tbody tr[data-step]")
    page.click('#funnel-table tbody tr[data-step="2"]')
    first = page.locator("#people-table tbody tr").first
    expect(first.locator("a")).to_have_count(1)
    key = first.get_attribute("data-user-key") or ""
    first.locator("a").click()
    expect(page).to_have_url(f"{dashboard.url}/people?{urlencode({'key': key})}")
    expect(page.locator("#user")).to_be_visible()
    expect(page.locator("#user-key")).to_have_text(key)
    user = dashboard.api("GET", f"/v0/users/{key}", params={"limit": 25}).json()
    expect(page.locator("#user-keys [data-key]")).to_have_count(len(user["keys"]))
    items = page.locator("#user-timeline li.timeline-item")
    expect(items).to_have_count(len(user["timeline"]["items"]))
    assert [items.nth(i).get_attribute("data-id") for i in range(items.count())] == [
        item["id"] for item in user["timeline"]["items"]
    ]

    # An anonymous visitor who never identified: listed among the user keys, and shown the same way.
    listed = dashboard.api("GET", "/v0/events/users", key=dashboard.query_key, params={"limit": 1000}).json()
    anonymous = next(row["user_key"] for row in listed["data"] if not row["identified"])
    page.goto(f"{dashboard.url}/people")
    page.fill("#users-filter input[name=q]", anonymous)
    page.click("#users-filter button")
    link = page.locator(f'#users-table tbody tr[data-key="{anonymous}"] a')
    expect(link).to_have_count(1)
    link.click()
    expect(page.locator("#user-key")).to_have_text(anonymous)
    expect(page.locator("#user-instances")).to_contain_text("never identified")
    anonymous_user = dashboard.api("GET", f"/v0/users/{anonymous}", params={"limit": 25}).json()
    expect(page.locator("#user-timeline li.timeline-item")).to_have_count(
        len(anonymous_user["timeline"]["items"])
    )


def test_a_breakdown_by_an_event_property_attributed_to_a_step(
    analyst_page: Page, dashboard: Dashboard
) -> None:
    """Breakdown "Event property…" with a key, and "Value from" a step's event: the API's rows for
    breakdown=properties.chain&breakdown_attribution=step:3, kept in the URL and across a reload."""
    page = analyst_page
    page.goto(f"{dashboard.url}/funnels?{urlencode(demo_query())}")
    page.wait_for_selector("#funnel-table tbody tr[data-step]")
    expect(page.locator("#breakdown-property-field")).to_be_hidden()
    expect(page.locator("#attribution")).to_be_disabled()
    page.select_option("#breakdown", "properties.")
    expect(page.locator("#breakdown-property-field")).to_be_visible()
    page.fill("#breakdown-property", "chain")
    expect(page.locator("#attribution option")).to_have_count(2 + len(DEMO_STEPS))
    page.select_option("#attribution", "step:3")
    page.click("#run")
    expect(page.locator("#results-caption")).to_contain_text("by properties.chain, step:3")
    query = url_query(page)
    assert (query["breakdown"], query["breakdown_attribution"]) == ("properties.chain", "step:3")
    shown = shown_rows(page)
    assert shown == api_rows(dashboard, query)
    # Step 3 matches swaps on ethereum only: every converter is in that group.
    assert {row["breakdown"] for row in shown if row["step"] == 3 and row["users"]} == {"ethereum"}
    page.reload()
    expect(page.locator("#breakdown")).to_have_value("properties.")
    expect(page.locator("#breakdown-property")).to_have_value("chain")
    expect(page.locator("#attribution")).to_have_value("step:3")
    assert shown_rows(page) == shown
