"""The Deliveries page's "By action" and "Holdouts and lift" cards (actions.js) in real headless Chromium
against a `funnels serve` subprocess: a welcome webhook with a 50% holdout, measured on the next step; the
cards show /v0/actions/summary's counts and /v0/lift's groups and difference, and stay hidden without jobs
or holdouts."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.receivers import NETWORK, HttpReceiver
from tests.web.conftest import Dashboard, browser_sign_in, data_dir_with_keys, serving, write_config

CUSTOMERS = 30


@pytest.fixture(scope="module")
def with_holdout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    root = tmp_path_factory.mktemp("lift")
    data_dir, keys = data_dir_with_keys(root)
    with HttpReceiver() as receiver:
        welcome = {"type": "webhook", "args": {"url": f"{receiver.url}/welcome"}, "holdout": "50%"}
        config = {
            "models": [{"name": "customer"}],
            "network": NETWORK,
            "funnels": [
                {
                    "id": "onboarding",
                    "forModels": "customer",
                    "steps": [{"event": "sign_up", "actions": welcome}, {"event": "development_api_call"}],
                }
            ],
        }
        with serving(data_dir, write_config(root, config), keys) as dashboard:
            people = [{"model": "customer", "ids": [f"c{n}"]} for n in range(CUSTOMERS)]
            assert dashboard.api("POST", "/api/v1/identify", json=people).status_code == 200
            signed_up = [{"name": "sign_up", "ids": [f"c{n}"]} for n in range(CUSTOMERS)]
            assert dashboard.api("POST", "/api/v1/events", json=signed_up).status_code == 200
            deadline = time.monotonic() + 60
            while any(
                dashboard.api("GET", "/v0/actions", params={"status": status, "size": 1}).json()["total"]
                for status in ("scheduled", "sending")
            ):
                assert time.monotonic() < deadline, "the welcome jobs were not all due and decided"
                time.sleep(0.2)
            called = [{"name": "development_api_call", "ids": [f"c{n}"]} for n in range(0, CUSTOMERS, 3)]
            assert dashboard.api("POST", "/api/v1/events", json=called).status_code == 200
            yield dashboard


def test_the_card_shows_each_actions_groups_and_lift(page: Page, with_holdout: Dashboard) -> None:
    (row,) = with_holdout.api("GET", "/v0/lift").json()["data"]
    treated, held = row["treated"], row["holdout"]
    assert treated["converted"] + held["converted"] == len(range(0, CUSTOMERS, 3))
    assert treated["converted"] + treated["pending"] + held["converted"] + held["pending"] == CUSTOMERS
    browser_sign_in(page, with_holdout, with_holdout.admin_key)
    page.goto(f"{with_holdout.url}/deliveries")
    card = page.locator("#lift-card")
    expect(card).to_be_visible()
    shown = page.locator('#lift-table tbody tr[data-funnel="onboarding"][data-step="1"][data-action="1"]')
    expect(shown.locator("td").first).to_contain_text("onboarding · 1 sign_up · webhook #1 (50% held out)")
    expect(shown.locator("td").nth(1)).to_have_text("development_api_call within 14 d")
    # Within the 14-day window only the converted are decided: 100% of them, the rest pending.
    expect(shown.locator(".treated")).to_have_text(
        f"{treated['rate'] * 100:.1f}% of {treated['jobs']} +{treated['pending']} pending"
    )
    expect(shown.locator(".held-out")).to_have_text(
        f"{held['rate'] * 100:.1f}% of {held['jobs']} +{held['pending']} pending"
    )
    expect(shown.locator(".lift")).to_contain_text("+0.0 pp")  # both groups' decided jobs all converted
    expect(shown.locator(".verdict")).to_have_text("No difference so far")
    # By action: the welcome webhook's jobs by status, as /v0/actions/summary counts them.
    (summary,) = with_holdout.api("GET", "/v0/actions/summary").json()["data"]
    assert summary["statuses"]["sent"] + summary["statuses"]["held_out"] == CUSTOMERS == summary["total"]
    counts = page.locator(
        '#by-action-table tbody tr[data-funnel="onboarding"][data-step="1"][data-action="1"]'
    )
    expect(counts.locator(".sent")).to_have_text(str(summary["statuses"]["sent"]))
    expect(counts.locator(".held-out")).to_have_text(str(summary["statuses"]["held_out"]))
    expect(counts.locator(".capped")).to_have_text("0")
    # People: a customer's group in the action's holdout, as the API draws it.
    (progress,) = with_holdout.api("GET", "/v0/models/customer/c0").json()["funnels"]
    (drawn,) = progress["holdouts"]
    page.goto(f"{with_holdout.url}/people?model=customer&id=c0")
    group = page.locator('.funnel-progress[data-funnel="onboarding"] .holdout-groups li[data-step="1"]')
    expect(group).to_have_attribute("data-group", drawn["group"])
    expect(group).to_contain_text("held out" if drawn["group"] == "held_out" else "treated")


def test_without_a_holdout_there_is_no_card(page: Page, tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("no-lift")
    data_dir, keys = data_dir_with_keys(root)
    config = {
        "models": [{"name": "customer"}],
        "funnels": [
            {
                "id": "f",
                "forModels": "customer",
                "steps": {"event": "e", "actions": {"type": "webhook", "args": {"url": "https://x.test"}}},
            }
        ],
    }
    with serving(data_dir, write_config(root, config), keys) as dashboard:
        assert dashboard.api("GET", "/v0/lift").json() == {"data": []}
        browser_sign_in(page, dashboard, dashboard.admin_key)
        page.goto(f"{dashboard.url}/deliveries")
        expect(page.locator("#deliveries-summary")).not_to_have_text("Loading…")
        expect(page.locator("#lift-card")).to_be_hidden()
        expect(page.locator("#by-action-card")).to_be_hidden()  # no job yet
