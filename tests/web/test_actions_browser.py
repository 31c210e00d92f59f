"""The Deliveries page's "By action" and "Holdouts and lift" cards (actions.js) in real headless Chromium
against a `funnels serve` subprocess: a welcome webhook with a 50% holdout, measured on the next step; the
cards show /v0/actions/summary's counts and /v0/lift's groups and difference, and stay hidden without jobs
or holdouts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Page, expect

from funnels.automation.deliveries import STATUSES
from tests.receivers import NETWORK, HttpReceiver, SmtpReceiver
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
        f"{treated['rate'] * 100:.1f}% {treated['converted']} of {treated['jobs']}, +{treated['pending']} pending"
    )
    expect(shown.locator(".held-out")).to_have_text(
        f"{held['rate'] * 100:.1f}% {held['converted']} of {held['jobs']}, +{held['pending']} pending"
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


# A second history whose outcomes are all known, with a real difference between the groups: every number
# of the lift card is compared with /v0/lift's, and the By action card shows capped and suppressed jobs.
DECIDED_CUSTOMERS = 40
GOAL_WINDOW_S = 4


@pytest.fixture(scope="module")
def decided(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """A welcome webhook with a 50% holdout measured on `development_api_call` within 4 s; a second webhook
    at sign-up that `limits` (one webhook a day) caps wherever the welcome went; an email that one customer
    (c0) unsubscribed from before signing up. Two thirds of the treated and a third of the held out call the
    API a second after their welcome was due (the events' own timestamps), and the test waits until every
    goal window has closed."""
    root = tmp_path_factory.mktemp("lift-decided")
    data_dir, keys = data_dir_with_keys(root)
    with HttpReceiver() as receiver, SmtpReceiver() as smtp:
        welcome = {
            "type": "webhook",
            "args": {"url": f"{receiver.url}/welcome"},
            "holdout": "50%",
            "goal": {"event": "development_api_call", "within": f"{GOAL_WINDOW_S}s"},
        }
        ping = {"type": "webhook", "args": {"url": f"{receiver.url}/ping"}}
        hello = {
            "type": "email",
            "args": {"to": "{{ modelProperties.email }}", "subject": "Hello", "text": "Welcome aboard."},
        }
        config = {
            "models": [{"name": "customer"}],
            "network": NETWORK,
            "email": {"host": smtp.host, "port": smtp.port, "security": "none", "from": "team@example.com"},
            "limits": [{"channel": "webhook", "max": 1, "per": "1d"}],
            "funnels": [
                {
                    "id": "onboarding",
                    "forModels": "customer",
                    "steps": [
                        {"event": "sign_up", "actions": [welcome, ping, hello]},
                        {"event": "development_api_call"},
                    ],
                }
            ],
        }
        with serving(data_dir, write_config(root, config), keys) as dashboard:
            people = [
                {"model": "customer", "ids": [f"c{n}"], "properties": {"email": f"c{n}@example.com"}}
                for n in range(DECIDED_CUSTOMERS)
            ]
            assert dashboard.api("POST", "/api/v1/identify", json=people).status_code == 200
            change = {"topic": "email", "subscribed": False}
            put = dashboard.api("PUT", "/v0/models/customer/c0/subscriptions", json=change)
            assert put.status_code == 200, put.text
            signed_up = [{"name": "sign_up", "ids": [f"c{n}"]} for n in range(DECIDED_CUSTOMERS)]
            assert dashboard.api("POST", "/api/v1/events", json=signed_up).status_code == 200
            deadline = time.monotonic() + 60
            while any(
                dashboard.api("GET", "/v0/actions", params={"status": status, "size": 1}).json()["total"]
                for status in ("scheduled", "sending")
            ):
                assert time.monotonic() < deadline, "the sign-up jobs were not all due and decided"
                time.sleep(0.2)
            jobs = dashboard.api("GET", "/v0/actions", params={"size": 200}).json()["data"]
            welcomes = [job for job in jobs if (job["step"], job["action"]) == (1, 1)]
            assert len(welcomes) == DECIDED_CUSTOMERS
            called = []
            for status, calling in (("held_out", 1), ("sent", 2)):  # of every three, ordered by id
                group = sorted(
                    (job for job in welcomes if job["status"] == status), key=lambda j: j["instance"]["id"]
                )
                for index, job in enumerate(group):
                    if index % 3 < calling:
                        at = datetime.fromisoformat(job["due_at"]) + timedelta(seconds=1)
                        called.append(
                            {
                                "name": "development_api_call",
                                "ids": [job["instance"]["id"]],
                                "timestamp": at.isoformat(),
                            }
                        )
            assert dashboard.api("POST", "/api/v1/events", json=called).status_code == 200
            last_due = max(datetime.fromisoformat(job["due_at"]) for job in welcomes)
            while True:
                (row,) = dashboard.api("GET", "/v0/lift").json()["data"]
                decided_all = row["treated"]["pending"] + row["holdout"]["pending"] == 0
                converted = row["treated"]["converted"] + row["holdout"]["converted"]
                window_closed = datetime.now(UTC) > last_due + timedelta(seconds=GOAL_WINDOW_S + 1)
                if decided_all and converted == len(called) and window_closed:
                    break
                assert time.monotonic() < deadline + 30, row
                time.sleep(0.3)
            yield dashboard


def _signed(ratio: float, unit: str) -> str:
    return f"{'+' if ratio >= 0 else '−'}{abs(ratio * 100):.1f}{unit}"


def test_the_lift_cards_numbers_are_the_apis(page: Page, decided: Dashboard) -> None:
    (row,) = decided.api("GET", "/v0/lift").json()["data"]
    treated, held, lift = row["treated"], row["holdout"], row["lift"]
    assert treated["jobs"] + held["jobs"] == DECIDED_CUSTOMERS and treated["pending"] == held["pending"] == 0
    assert treated["rate"] > held["rate"]  # two thirds against a third: a lift to show
    browser_sign_in(page, decided, decided.admin_key)
    page.goto(f"{decided.url}/deliveries")
    shown = page.locator('#lift-table tbody tr[data-funnel="onboarding"][data-step="1"][data-action="1"]')
    expect(shown.locator("td").nth(1)).to_have_text(f"development_api_call within {GOAL_WINDOW_S} s")
    for cell, counts in ((".treated", treated), (".held-out", held)):
        expect(shown.locator(cell)).to_have_text(
            f"{counts['rate'] * 100:.1f}% {counts['converted']} of {counts['jobs']}"
        )
    low, high = lift["absolute_ci"]
    expect(shown.locator(".lift")).to_have_text(
        f"{_signed(lift['absolute'], ' pp')} {_signed(low, '')} to {_signed(high, ' pp')}"
    )
    low, high = lift["relative_ci"]
    expect(shown.locator(".relative")).to_have_text(
        f"{_signed(lift['relative'], '%')} {_signed(low, '')} to {_signed(high, '%')}"
    )
    expect(shown.locator(".p-value")).to_have_text(f"{lift['p_value']:.3f}")
    if lift["significant"]:
        expect(shown.locator(".verdict")).to_have_text("Helps")
    else:
        needed = lift["needed_per_group"]
        expect(shown.locator(".verdict")).to_have_text(
            f"Inconclusive: needs ~{needed['treated']:,} treated and {needed['holdout']:,} held out"
        )
    # By action: each action's sent, held out, capped and suppressed, as /v0/actions/summary counts them.
    summary = {
        (s["step"], s["action"]): s["statuses"]
        for s in decided.api("GET", "/v0/actions/summary").json()["data"]
    }
    assert summary[(1, 1)]["held_out"] == held["jobs"] and summary[(1, 1)]["sent"] == treated["jobs"]
    assert summary[(1, 2)]["capped"] == treated["jobs"]  # the welcome went first: one webhook a day
    assert summary[(1, 2)]["sent"] == held["jobs"]
    assert summary[(1, 3)]["suppressed"] == 1 and summary[(1, 3)]["sent"] == DECIDED_CUSTOMERS - 1
    for (step, action), statuses in summary.items():
        counts = page.locator(
            f'#by-action-table tbody tr[data-funnel="onboarding"][data-step="{step}"][data-action="{action}"]'
        )
        for status, cell in (
            ("sent", ".sent"),
            ("held_out", ".held-out"),
            ("capped", ".capped"),
            ("suppressed", ".suppressed"),
        ):
            expect(counts.locator(cell)).to_have_text(f"{statuses[status]:,}")
    # The log's status filter offers the statuses that are never sent, and filters by them.
    options = page.locator("#delivery-filters select[name=status] option").evaluate_all(
        "options => options.map(option => option.value)"
    )
    assert options == ["", *STATUSES]
    for status, total in (("held_out", held["jobs"]), ("capped", treated["jobs"]), ("suppressed", 1)):
        page.select_option("#delivery-filters select[name=status]", status)
        page.click("#delivery-filters button[type=submit]")
        shown = min(total, 25)  # the log's first page
        noun = "delivery" if total == 1 else "deliveries"
        expect(page.locator("#deliveries-summary")).to_contain_text(f"{shown} of {total} {noun}")
        expect(page.locator("#deliveries-table tr.job")).to_have_count(shown)
        badges = page.locator(f'#deliveries-table tr.job .badge[data-status="{status}"]')
        expect(badges).to_have_count(shown)
