"""The Deliveries page in real headless Chromium against a `funnels serve` subprocess with automation
traffic: rows equal `GET /v0/actions`, filters go into the URL, Load more pages through the log, a row opens
on its payload and attempts, and Retry sends a dead job again (the receiver now accepts) until it is sent."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.web.conftest import REFUSED, SEEDED_CUSTOMERS, Seeded


def test_rows_and_load_more(seeded_page: Page, seeded: Seeded) -> None:
    page = seeded_page
    api = seeded.dashboard.api("GET", "/v0/actions", params={"size": 200}).json()
    page.goto(f"{seeded.dashboard.url}/deliveries")
    rows = page.locator("#deliveries-table tr.job")
    expect(rows).to_have_count(25)
    # The filters are one row at 1280 px (the builder's step filters once shared their class name).
    status = page.locator('#delivery-filters select[name="status"]').bounding_box()
    submit = page.locator('#delivery-filters button[type="submit"]').bounding_box()
    assert status and submit and abs(status["y"] + status["height"] - submit["y"] - submit["height"]) < 4
    assert submit["x"] > status["x"] + status["width"]
    first = api["data"][0]
    row = rows.first
    expect(row).to_have_attribute("data-job-id", str(first["id"]))
    expect(row.locator(".badge")).to_have_text(first["status"])
    expect(row.locator("td.attempts")).to_have_text(str(first["attempts"]))
    expect(row.locator("a.instance-link")).to_have_attribute(
        "href", f"/people?model={first['instance']['model']}&id={first['instance']['id']}"
    )
    page.click("#deliveries-more")
    expect(rows).to_have_count(api["total"])
    expect(page.locator("#deliveries-more")).to_be_hidden()
    assert [rows.nth(i).get_attribute("data-job-id") for i in range(api["total"])] == [
        str(job["id"]) for job in api["data"]
    ]
    assert api["total"] == SEEDED_CUSTOMERS + len(REFUSED)


def test_filter_by_status_open_a_dead_job_and_retry_it(seeded_page: Page, seeded: Seeded) -> None:
    page = seeded_page
    page.goto(f"{seeded.dashboard.url}/deliveries")
    page.select_option("#delivery-filters select[name=status]", "dead")
    page.click("#delivery-filters button[type=submit]")
    rows = page.locator("#deliveries-table tr.job")
    expect(rows).to_have_count(len(REFUSED))
    assert "status=dead" in page.url
    dead = seeded.dashboard.api("GET", "/v0/actions", params={"status": "dead"}).json()["data"]
    job = dead[0]
    row = page.locator(f'#deliveries-table tr.job[data-job-id="{job["id"]}"]')
    row.click()
    detail = page.locator(f'#deliveries-table tr.detail[data-detail-for="{job["id"]}"]')
    expect(detail).to_be_visible()
    attempts = detail.locator(".attempts-table tbody tr")
    expect(attempts).to_have_count(len(job["attempt_log"]))
    expect(attempts.first.locator(".status-code")).to_have_text(str(job["attempt_log"][0]["status_code"]))
    expect(detail.locator(".last-error")).to_contain_text("410")

    page.reload()  # the filter comes back from the URL
    expect(page.locator("#delivery-filters select[name=status]")).to_have_value("dead")
    expect(rows).to_have_count(len(REFUSED))

    # The receiver accepts now (its queue of 410s is used up): the retry is sent.
    page.locator(f'#deliveries-table tr.job[data-job-id="{job["id"]}"]').click()
    page.locator(f'tr.detail[data-detail-for="{job["id"]}"] button[data-retry]').click()
    row = page.locator(f'#deliveries-table tr.job[data-job-id="{job["id"]}"]')
    expect(row.locator(".badge")).to_have_text("sent")
    expect(row.locator("td.attempts")).to_have_text("1")
    after = seeded.dashboard.api("GET", f"/v0/actions/{job['id']}").json()
    assert after["status"] == "sent"
    detail = page.locator(f'tr.detail[data-detail-for="{job["id"]}"]')
    expect(detail.locator("button[data-retry]")).to_have_count(0)


def test_filter_by_instance_from_a_link(seeded_page: Page, seeded: Seeded) -> None:
    page = seeded_page
    customer = REFUSED[1]
    page.goto(f"{seeded.dashboard.url}/deliveries?model=customer&id={customer}&funnel=onboarding")
    rows = page.locator("#deliveries-table tr.job")
    api = seeded.dashboard.api("GET", "/v0/actions", params={"model": "customer", "id": customer}).json()
    expect(rows).to_have_count(api["total"])
    expect(page.locator("#delivery-filters input[name=id]")).to_have_value(customer)
    expect(page.locator("#delivery-filters select[name=funnel]")).to_have_value("onboarding")
    page.click("#clear-filters")
    expect(rows).to_have_count(25)
