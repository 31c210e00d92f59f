"""Every dashboard page at a laptop's 1280×800 and a phone's 390×844, in real headless Chromium against the
seeded `funnels serve`: no sideways scroll of the page (a wide table scrolls inside its `.table-wrap`),
nothing sticking out of the screen, and the controls' text not cut off."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import REFUSED, Seeded, browser_sign_in

VIEWPORTS = {"laptop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}

# What sticks out: the page's scroll width, and any element reaching past the right edge of the screen that
# no scrolling (or clipping) ancestor holds; every table's wrapper, and whether it scrolls sideways.
MEASURE = """() => {
  const clipped = (node) => {
    for (let up = node.parentElement; up && up !== document.body; up = up.parentElement) {
      if (["auto", "scroll", "hidden", "clip"].includes(getComputedStyle(up).overflowX)) return true;
    }
    return false;
  };
  const name = (node) => `${node.tagName.toLowerCase()}${node.id ? "#" + node.id : ""}.${[...node.classList].join(".")}`;
  const outside = [...document.body.querySelectorAll("*")].filter((node) => {
    const box = node.getBoundingClientRect();
    return box.width > 0 && box.right > window.innerWidth + 0.5 && !clipped(node);
  });
  const tables = [...document.querySelectorAll("table")].filter((table) => table.offsetParent).map((table) => {
    const wrap = table.parentElement;
    return {
      table: name(table),
      wrap: name(wrap),
      overflowX: getComputedStyle(wrap).overflowX,
      right: wrap.getBoundingClientRect().right,
    };
  });
  return {
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    outside: outside.slice(0, 8).map(name),
    tables,
  };
}"""

# Whether each select's chosen text fits its box (a select does not scroll: its text is just cut off).
SELECT_TEXT_FITS = """(selector) => [...document.querySelectorAll(selector)].filter((s) => s.offsetParent).map((select) => {
  const style = getComputedStyle(select);
  const probe = document.createElement("span");
  probe.textContent = select.selectedOptions[0]?.textContent ?? "";
  probe.style.font = style.font;
  probe.style.position = "absolute";
  probe.style.whiteSpace = "pre";
  document.body.append(probe);
  const text = probe.getBoundingClientRect().width;
  probe.remove();
  // the room for text: the box less its padding, borders and the arrow (about 20 px in Chromium)
  const room = select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - 20;
  return { name: select.name || select.id, text: probe.textContent, fits: text <= room, width: text, room };
})"""


def check_layout(page: Page, where: str) -> dict[str, Any]:
    measured: dict[str, Any] = page.evaluate(MEASURE)
    assert measured["scrollWidth"] <= measured["innerWidth"], f"{where} scrolls sideways: {measured}"
    assert measured["outside"] == [], f"{where}: sticking out of the screen: {measured['outside']}"
    for table in measured["tables"]:
        assert "table-wrap" in table["wrap"] and table["overflowX"] == "auto", f"{where}: {table}"
        assert table["right"] <= measured["innerWidth"] + 0.5, f"{where}: {table}"
    return measured


def selects_fit(page: Page, selector: str = "select") -> None:
    cut = [item for item in page.evaluate(SELECT_TEXT_FITS, selector) if not item["fits"]]
    assert cut == [], f"select text cut off: {cut}"


def open_funnels(page: Page, seeded: Seeded) -> None:
    steps = [
        {"type": "track", "event": "sign_up", "name": "sign_up::0"},
        {"type": "track", "event": "development_api_call", "name": "development_api_call::1"},
        {"type": "track", "event": "production_api_call", "name": "production_api_call::2"},
    ]
    query = {"date_from": "2000-01-01", "date_to": "2100-01-01", "steps": json.dumps(steps)}
    page.goto(f"{seeded.dashboard.url}/funnels?" + "&".join(f"{k}={v}" for k, v in query.items()))
    expect(page.locator("#funnel-table tbody tr[data-step]")).to_have_count(3)
    page.locator('[data-step] [data-action="add-filter"]').first.click()  # a filter row, too


def open_funnels_by_breakdown(page: Page, seeded: Seeded) -> None:
    open_funnels(page, seeded)
    page.select_option("#breakdown", "utm_source")
    page.click("#run")
    expect(page.locator("#results-status")).not_to_have_text("Running…")


def open_person(page: Page, seeded: Seeded) -> None:
    page.goto(f"{seeded.dashboard.url}/people?model=customer&id={REFUSED[0]}")
    expect(page.locator("#person")).to_be_visible()
    expect(page.locator("#timeline .timeline-item").first).to_be_visible()


def open_people(page: Page, seeded: Seeded) -> None:
    page.goto(f"{seeded.dashboard.url}/people")
    expect(page.locator("h1")).to_have_text("People")


def open_user_key(page: Page, seeded: Seeded) -> None:
    page.goto(f"{seeded.dashboard.url}/people?key={REFUSED[0]}")
    expect(page.locator("#user")).to_be_visible()
    expect(page.locator("#user-timeline .timeline-item").first).to_be_visible()


def open_funnel_people(page: Page, seeded: Seeded) -> None:
    """The funnel's analyses below it, with the people list of step 1 open."""
    open_funnels(page, seeded)
    expect(page.locator("#ttc-card")).not_to_have_attribute("data-state", "loading")
    page.click('#funnel-table tbody tr[data-step="1"]')
    expect(page.locator("#people-card")).to_have_attribute("data-state", "ready")


def open_deliveries(page: Page, seeded: Seeded) -> None:
    page.goto(f"{seeded.dashboard.url}/deliveries")
    rows = page.locator("#deliveries-table tr.job")
    expect(rows).to_have_count(25)
    rows.first.locator("[data-toggle]").click()
    expect(page.locator("#deliveries-table tr.detail").first).to_be_visible()


def open_settings(page: Page, seeded: Seeded) -> None:
    page.goto(f"{seeded.dashboard.url}/settings")
    expect(page.locator("#keys-table tbody tr[data-key-id]").first).to_be_visible()
    expect(page.locator("#config-funnels tbody tr").first).to_be_visible()


PAGES: dict[str, Callable[[Page, Seeded], None]] = {
    "funnels": open_funnels,
    "funnels-breakdown": open_funnels_by_breakdown,
    "people": open_people,
    "person": open_person,
    "user-key": open_user_key,
    "funnel-people": open_funnel_people,
    "deliveries": open_deliveries,
    "settings": open_settings,
}


@pytest.mark.parametrize("viewport", VIEWPORTS)
@pytest.mark.parametrize("name", PAGES)
def test_signed_in_pages_fit_the_screen(seeded_page: Page, seeded: Seeded, name: str, viewport: str) -> None:
    page = seeded_page
    page.set_viewport_size(VIEWPORTS[viewport])  # type: ignore[arg-type]
    PAGES[name](page, seeded)
    check_layout(page, f"{name} at {viewport}")
    selects_fit(page)
    if name.startswith("funnels"):  # every operator a filter can have fits its select
        operator = page.locator('[data-filter] select[name="operator"]').first
        for value in operator.locator("option").all_inner_texts():
            operator.select_option(value)
            selects_fit(page, "[data-filter] select")
    nav = page.locator("nav.nav a")
    expect(nav).to_have_count(4)
    for index in range(4):  # every page can be reached: the nav's entries are on the screen
        box = nav.nth(index).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= VIEWPORTS[viewport]["width"]


def test_the_deliveries_status_is_on_the_screen_of_a_phone(seeded_page: Page, seeded: Seeded) -> None:
    """The status was the fifth column, behind a sideways scroll at 390 px."""
    page = seeded_page
    page.set_viewport_size(VIEWPORTS["phone"])  # type: ignore[arg-type]
    open_deliveries(page, seeded)
    badge = page.locator("#deliveries-table tr.job .status-cell .badge").first
    box = badge.bounding_box()
    assert box and box["x"] + box["width"] <= VIEWPORTS["phone"]["width"]


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_sign_in_and_error_pages_fit_the_screen(page: Page, seeded: Seeded, viewport: str) -> None:
    page.set_viewport_size(VIEWPORTS[viewport])  # type: ignore[arg-type]
    page.goto(f"{seeded.dashboard.url}/login")
    check_layout(page, f"sign-in at {viewport}")
    page.fill('input[name="key"]', "fk_000000000000_wrong")
    page.click('button[type="submit"]')
    expect(page.locator("#login-error")).to_be_visible()
    check_layout(page, f"sign-in with an error at {viewport}")

    browser_sign_in(page, seeded.dashboard, seeded.dashboard.query_key)
    response = page.goto(f"{seeded.dashboard.url}/settings")
    assert response is not None and response.status == 403
    expect(page.locator("#page-error")).to_be_visible()
    check_layout(page, f"the 403 page at {viewport}")


def test_the_order_select_shows_its_whole_text_at_1280(seeded_page: Page, seeded: Seeded) -> None:
    """ "Strict: each step the next event" was cut off in the builder's half-width column."""
    page = seeded_page
    page.goto(f"{seeded.dashboard.url}/funnels")
    for value in ("closed", "open", "strict"):
        page.select_option("#funnel-type", value)
        selects_fit(page, "#funnel-type")
