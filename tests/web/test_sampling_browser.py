"""The Funnels page's sample (`sample=`) in real headless Chromium against a `funnels serve` subprocess on
the demo dataset: a slow exact answer is offered a 10% sample, which runs from the offer, shows the API's
scaled rows and a note with the sample and its intervals, stays in the URL, and leaves the analyses under
the funnel exact."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.web.conftest import Dashboard
from tests.web.test_funnels_browser import (  # the module's demo server and signed-in page, as fixtures
    analyst_page as analyst_page,
)
from tests.web.test_funnels_browser import (
    api_rows,
    expect_table,
    fill_dates,
    fill_steps,
    shown_rows,
    url_query,
)
from tests.web.test_funnels_browser import (
    dashboard as dashboard,
)


def slow_after(page: Page, seconds: float) -> None:
    """The page's threshold for a slow answer (the server's `slowSeconds`), as a server configured so."""
    page.eval_on_selector(
        "#builder",
        f"form => {{ const b = JSON.parse(form.dataset.builder); b.slowSeconds = {seconds}; "
        "form.dataset.builder = JSON.stringify(b); }",
    )


def test_a_slow_funnel_is_offered_a_sample_that_runs_and_states_its_error(
    analyst_page: Page, dashboard: Dashboard
) -> None:
    page = analyst_page
    fill_dates(page)
    fill_steps(page, [("event", "page"), ("track", "connect")])
    expect(page.locator("#sample")).to_have_value("")
    page.click("#run")
    expect_table(page, "1. page", "2. connect")
    exact = shown_rows(page)
    expect(page.locator("#sample-note")).to_have_count(0)  # the demo answers fast: nothing offered

    slow_after(page, 0)  # every answer is slow now
    page.click("#run")
    offer = page.locator("#sample-note.sample-offer")
    expect(offer).to_contain_text("A 10% sample of users")
    page.click("#sample-offer-run")
    note = page.locator("#sample-note.sample-note")
    expect(note).to_contain_text("Estimated from a 10% sample of persons")
    query = url_query(page)
    assert query["sample"] == "0.1"
    expect(page.locator("#sample")).to_have_value("0.1")
    sampled = shown_rows(page)
    assert sampled == api_rows(dashboard, query)  # the API's scaled counts
    assert sampled != exact and sampled[0]["users"] % 10 == 0  # the sample's users × 10
    bounds = note.locator("li[data-step]")
    expect(bounds).to_have_count(2)
    for index, row in enumerate(sampled):
        low = int(bounds.nth(index).get_attribute("data-low") or -1)
        high = int(bounds.nth(index).get_attribute("data-high") or -1)
        assert low <= row["users"] <= high
    # The analyses under the funnel count every user: they ran without the sample, without an error.
    expect(page.locator("#ttc-facts dd").first).to_have_text(f"{exact[1]['users']:,}")
    expect(page.locator("#trends-table tbody tr").first).to_be_attached()
    expect(page.locator("#trends-error")).to_be_hidden()
    expect(page.locator("#ttc-error")).to_be_hidden()

    page.reload()  # the URL holds the sample; the page's threshold is the server's again
    expect(page.locator("#sample")).to_have_value("0.1")
    expect(page.locator("#sample-note.sample-note")).to_be_visible()
    assert shown_rows(page) == sampled
    page.select_option("#sample", "")
    page.click("#run")
    expect(page.locator("#sample-note")).to_have_count(0)
    assert "sample" not in url_query(page)
    assert shown_rows(page) == exact
