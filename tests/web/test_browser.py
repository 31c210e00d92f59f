"""The dashboard's shell in real headless Chromium against a `funnels serve` subprocess: signing in and out,
the nav per scope, the 403 page, and the session cookie as the browser keeps it."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from funnels.sessions import SESSION_COOKIE
from tests.web.conftest import Dashboard, browser_sign_in


def nav_entries(page: Page) -> list[str]:
    return page.locator("nav.nav a").all_inner_texts()


def test_an_admin_signs_in_sees_every_page_and_signs_out(page: Page, dashboard: Dashboard) -> None:
    page.goto(f"{dashboard.url}/settings")
    expect(page).to_have_url(f"{dashboard.url}/login?next=/settings")
    page.fill('input[name="key"]', dashboard.admin_key)
    page.click('button[type="submit"]')
    expect(page).to_have_url(f"{dashboard.url}/settings")
    expect(page.locator("h1")).to_have_text("Settings")
    assert nav_entries(page) == ["Funnels", "People", "Deliveries", "Settings"]
    expect(page.locator(".key-chip")).to_contain_text("Test admin")
    [cookie] = [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it

    for title in ("Funnels", "People", "Deliveries"):
        page.click(f"nav.nav >> text={title}")
        expect(page.locator("h1")).to_have_text(title)
        expect(page.locator('nav.nav a[aria-current="page"]')).to_have_text(title)

    page.click("text=Sign out")
    expect(page).to_have_url(f"{dashboard.url}/login")
    assert [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE] == []
    page.goto(f"{dashboard.url}/funnels")
    expect(page).to_have_url(re.compile(r"/login\?next=/funnels$"))


def test_a_query_read_key_sees_funnels_only(page: Page, dashboard: Dashboard) -> None:
    browser_sign_in(page, dashboard, dashboard.query_key)
    expect(page).to_have_url(f"{dashboard.url}/funnels")
    assert nav_entries(page) == ["Funnels"]
    response = page.goto(f"{dashboard.url}/settings")
    assert response is not None and response.status == 403
    expect(page.locator("#page-error h1")).to_have_text("No access to Settings")
    expect(page.locator("#page-error")).to_contain_text("needs an API key with the admin scope")
    page.click("#page-error >> text=Go to Funnels")
    expect(page).to_have_url(f"{dashboard.url}/funnels")


def test_a_wrong_key_is_refused_with_a_message(page: Page, dashboard: Dashboard) -> None:
    page.goto(f"{dashboard.url}/login")
    page.fill('input[name="key"]', "fk_000000000000_wrong")
    page.click('button[type="submit"]')
    expect(page.locator("#login-error")).to_have_text("That API key is unknown or revoked.")
    events_only = dashboard.create_key("events:write", name="tracking")
    page.fill('input[name="key"]', events_only)
    page.click('button[type="submit"]')
    expect(page.locator("#login-error")).to_contain_text("needs the query:read or admin scope")
    page.fill('input[name="key"]', dashboard.admin_key)  # the re-rendered form still works
    page.click('button[type="submit"]')
    expect(page).to_have_url(f"{dashboard.url}/funnels")
