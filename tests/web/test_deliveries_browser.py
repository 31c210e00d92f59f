"""The Deliveries page in real headless Chromium against a `funnels serve` subprocess with automation
traffic: rows equal `GET /v0/actions`, filters go into the URL, Load more pages through the log, a row opens
on its payload and attempts, Retry sends a dead job again (the receiver now accepts) until it is sent, and
Send again sends an at-most-once job whose outcome a crash left unknown."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.processes import wait_until
from tests.receivers import NETWORK, HttpReceiver
from tests.web.conftest import (
    REFUSED,
    SEEDED_CUSTOMERS,
    HeldBack,
    Seeded,
    browser_sign_in,
    data_dir_with_keys,
    serving,
    write_config,
)


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
    row.locator(".status-cell").click()  # a click on the row (not on its link to the instance) opens it
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
    page.locator(f'#deliveries-table tr.job[data-job-id="{job["id"]}"] .status-cell').click()
    page.locator(f'tr.detail[data-detail-for="{job["id"]}"] button[data-retry]').click()
    row = page.locator(f'#deliveries-table tr.job[data-job-id="{job["id"]}"]')
    expect(row.locator(".badge")).to_have_text("sent")
    expect(row.locator("td.attempts")).to_have_text("1")
    after = seeded.dashboard.api("GET", f"/v0/actions/{job['id']}").json()
    assert after["status"] == "sent"
    detail = page.locator(f'tr.detail[data-detail-for="{job["id"]}"]')
    expect(detail.locator("button[data-retry]")).to_have_count(0)
    # Both attempts, numbered as made: the dead one and the retry (both were once numbered 1).
    expect(detail.locator(".attempts-table tbody tr td:first-child")).to_have_text(["1", "2"])
    expect(detail.locator("h3", has_text="Attempts")).to_have_text("Attempts (2)")
    assert [item["attempt"] for item in after["attempt_log"]] == [1, 2]


def test_a_json_body_is_shown_as_json_not_as_a_string_in_json(seeded_page: Page, seeded: Seeded) -> None:
    """The webhook's body is stored as the text that went out; the payload shows it as the JSON it is."""
    page = seeded_page
    customer = "cus_2001"
    page.goto(f"{seeded.dashboard.url}/deliveries?model=customer&id={customer}")
    [job] = [
        job
        for job in seeded.dashboard.api("GET", "/v0/actions", params={"id": customer}).json()["data"]
        if job["step"] == 1
    ]
    assert isinstance(job["rendered"]["body"], str)  # what the API keeps: the raw text sent
    page.locator(f'#deliveries-table tr.job[data-job-id="{job["id"]}"] .status-cell').click()
    shown = page.locator(f'tr.detail[data-detail-for="{job["id"]}"] pre.payload')
    expect(shown).to_have_attribute("data-body-parsed", "true")
    text = shown.inner_text()
    assert '\\"' not in text  # no escaped quotes: not a JSON string inside JSON
    assert json.loads(text)["body"] == {"id": customer, "plan": "team"}
    assert json.loads(text)["url"] == job["rendered"]["url"]


def test_filters_submitted_while_the_first_page_loads_show_only_their_rows(
    seeded_page: Page, seeded: Seeded
) -> None:
    """The unfiltered first page's answer, arriving after the filtered one's, is dropped, not added to it
    (it once made 25 + the dead rows)."""
    page = seeded_page
    dead = seeded.dashboard.api("GET", "/v0/actions", params={"status": "dead"}).json()["total"]
    assert dead > 0  # (another test of this module may have retried one)
    first_page = HeldBack(page, "**/v0/actions?*", lambda url: "status=" not in url)
    page.goto(f"{seeded.dashboard.url}/deliveries")
    first_page.wait()
    page.select_option("#delivery-filters select[name=status]", "dead")
    page.click("#delivery-filters button[type=submit]")
    rows = page.locator("#deliveries-table tr.job")
    expect(rows).to_have_count(dead)
    first_page.release()
    expect(rows).to_have_count(dead)
    expect(page.locator("#deliveries-summary")).to_contain_text(f"{dead} of {dead}")


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


def delivery_processes(data_dir: Path) -> list[int]:
    """Live `funnels worker` processes delivering from `data_dir` (the server's delivery child)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] if command else "Z"
        except OSError:
            continue
        if b"worker" in command and str(data_dir).encode() in command and state != "Z":
            found.append(int(entry.name))
    return found


def test_an_unknown_delivery_is_sent_again_with_send_again(
    page: Page, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A Slack message (at-most-once) in flight when the delivery process is killed ends `unknown`; the
    Deliveries page offers Send again, which sends it once more."""
    root = tmp_path_factory.mktemp("unknown")
    data_dir, keys = data_dir_with_keys(root)
    with HttpReceiver() as receiver:
        receiver.reply("/slack", 200, "ok", delay_s=600)  # held open: in flight when the child dies
        action = {"type": "slack", "args": {"url": f"{receiver.url}/slack", "content": "hi {{ ids[0] }}"}}
        config = {
            "models": [{"name": "customer"}],
            "network": NETWORK,  # the receiver is on loopback
            "funnels": [
                {"id": "welcome", "forModels": "customer", "steps": {"event": "hello", "actions": action}}
            ],
        }
        with serving(data_dir, write_config(root, config), keys) as dashboard:
            assert dashboard.api(
                "POST", "/api/v1/identify", json={"model": "customer", "ids": ["ada"]}
            ).is_success
            assert dashboard.api("POST", "/api/v1/events", json={"name": "hello", "ids": ["ada"]}).is_success
            receiver.wait_for(1, timeout=30)  # the delivery process may still be starting
            (child,) = delivery_processes(data_dir)
            os.kill(child, signal.SIGKILL)
            unknown = wait_until(
                lambda: dashboard.api("GET", "/v0/actions", params={"status": "unknown"}).json()["data"]
            )
            job_id = unknown[0]["id"]

            browser_sign_in(page, dashboard, dashboard.admin_key)
            page.goto(f"{dashboard.url}/deliveries?status=unknown")
            row = page.locator(f'#deliveries-table tr.job[data-job-id="{job_id}"]')
            expect(row.locator(".badge")).to_have_text("unknown")
            row.locator(".status-cell").click()
            detail = page.locator(f'tr.detail[data-detail-for="{job_id}"]')
            expect(detail.locator(".last-error")).to_contain_text("outcome unknown")
            button = detail.locator("button[data-retry]")
            expect(button).to_have_text("Send again")
            button.click()
            expect(row.locator(".badge")).to_have_text("sent")
            assert len(receiver.requests) == 2  # the cut-off send, and the one Send again made
            assert {r.headers["idempotency-key"] for r in receiver.requests} == {
                unknown[0]["idempotency_key"]
            }
            expect(detail.locator("button[data-retry]")).to_have_count(0)
