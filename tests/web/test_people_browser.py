"""The People page in real headless Chromium against a `funnels serve` subprocess with automation traffic:
a person found by any id shows what `GET /v0/models/{model}/{id}` says (ids, properties, parents, progress,
timeline), the timeline pages with the API's cursor, people link to each other, and an unknown id is a
friendly message."""

from __future__ import annotations

import time
from urllib.parse import quote

from playwright.sync_api import Page, expect

from tests.web.conftest import REFUSED, SEEDED_CUSTOMERS, HeldBack, Seeded


def test_find_a_person_by_any_id_shows_what_the_api_says(seeded_page: Page, seeded: Seeded) -> None:
    page = seeded_page
    customer = REFUSED[0]
    person = seeded.dashboard.api("GET", f"/v0/models/customer/{customer}", params={"limit": 25}).json()
    page.goto(f"{seeded.dashboard.url}/people")
    page.select_option("#person-search select[name=model]", "customer")
    page.fill("#person-search input[name=id]", person["properties"]["email"])  # any id finds it
    page.click("#person-search button[type=submit]")

    expect(page.locator("#person-name")).to_have_text(person["displayName"])
    assert "model=customer" in page.url and quote(person["properties"]["email"]) in page.url.replace(
        "@", "%40"
    )
    expect(page.locator("#person-ids [data-id]")).to_have_text(person["ids"])
    rows = page.locator("#person-properties tbody tr")
    expect(rows).to_have_count(len(person["properties"]))
    for name, value in person["properties"].items():
        expect(page.locator(f'#person-properties tr[data-property="{name}"] td.value')).to_have_text(
            str(value)
        )
    expect(page.locator("#person-parents a")).to_have_text(["organizationorg-acme"])

    (funnel,) = person["funnels"]
    steps = page.locator(f'#person-funnels [data-funnel="{funnel["id"]}"] li')
    expect(steps).to_have_count(len(funnel["steps"]))
    for index, step in enumerate(funnel["steps"]):
        expect(steps.nth(index)).to_have_attribute("class", "done" if step["satisfied_at"] else "pending")
        expect(steps.nth(index).locator(".step-name")).to_have_text(step["event"])

    items = person["timeline"]["items"]
    shown = page.locator("#timeline li.timeline-item")
    expect(shown).to_have_count(len(items))
    for index, item in enumerate(items):
        expect(shown.nth(index)).to_have_attribute("data-kind", item["kind"])
        expect(shown.nth(index)).to_have_attribute("data-id", str(item["id"]))
    dead = page.locator('#timeline li[data-kind="action"] .badge[data-status="dead"]')
    expect(dead).to_have_count(1)  # the refused CRM webhook


def test_the_timeline_pages_with_the_cursor(seeded_page: Page, seeded: Seeded) -> None:
    page = seeded_page
    everything = seeded.dashboard.api("GET", "/v0/models/organization/org-acme", params={"limit": 200}).json()
    page.goto(f"{seeded.dashboard.url}/people?model=organization&id=acme.test")
    expect(page.locator("#person-name")).to_have_text("Acme Rockets")
    children = page.locator("#person-children a")
    expect(children).to_have_count(len(everything["children"]))
    children.first.click()  # people link to each other
    expect(page.locator("#person-parents a")).to_have_text(["organizationorg-acme"])
    page.go_back()
    expect(page.locator("#person-name")).to_have_text("Acme Rockets")
    customer = seeded.dashboard.api("GET", f"/v0/models/customer/{REFUSED[1]}", params={"limit": 200}).json()
    total = len(customer["timeline"]["items"])
    assert total > 3
    page.goto(f"{seeded.dashboard.url}/people?model=customer&id={REFUSED[1]}")
    items = page.locator("#timeline li.timeline-item")
    expect(items).to_have_count(total)  # one page of 25 holds them all
    assert [items.nth(i).get_attribute("data-id") for i in range(total)] == [
        str(item["id"]) for item in customer["timeline"]["items"]
    ]
    expect(page.locator("#timeline-more")).to_be_hidden()


def test_load_more_follows_the_cursor(seeded_page: Page, seeded: Seeded) -> None:
    page = seeded_page
    customer = REFUSED[0]
    everything = seeded.dashboard.api("GET", f"/v0/models/customer/{customer}", params={"limit": 200}).json()
    expected = [str(item["id"]) for item in everything["timeline"]["items"]]
    assert len(expected) > 4
    page.goto(f"{seeded.dashboard.url}/people?model=customer&id={customer}&limit=2")
    items = page.locator("#timeline li.timeline-item")
    expect(items).to_have_count(2)
    more = page.locator("#timeline-more")
    while len(expected) > items.count():
        shown = items.count()
        more.click()
        expect(items).to_have_count(min(shown + 2, len(expected)))
    if more.is_visible():  # a full last page still carries a cursor; the next one is empty and has none
        more.click()
    expect(more).to_be_hidden()
    expect(items).to_have_count(len(expected))
    assert [items.nth(i).get_attribute("data-id") for i in range(len(expected))] == expected


def test_an_unknown_id_is_a_friendly_message(seeded_page: Page, seeded: Seeded) -> None:
    page = seeded_page
    page.goto(f"{seeded.dashboard.url}/people?model=customer&id=nobody-here")
    expect(page.locator("#person-missing")).to_be_visible()
    expect(page.locator("#person-missing-text")).to_contain_text("nobody-here")
    expect(page.locator("#person")).to_be_hidden()
    expect(page.locator("[data-flash]")).to_be_hidden()


def test_an_anonymous_id_identified_as_a_customer_finds_them(seeded_page: Page, seeded: Seeded) -> None:
    """Identity stitching: a visitor browsed anonymously, then analytics.js identified them as a customer;
    typing the anonymous id opens that customer, its linked ids shown apart from its own ids."""
    page = seeded_page
    customer = REFUSED[1]
    batch = [
        {"type": "page", "anonymousId": "anon-visitor", "name": "Pricing", "messageId": "anon-page"},
        {"type": "identify", "userId": customer, "anonymousId": "anon-visitor", "messageId": "anon-identify"},
    ]
    assert seeded.dashboard.api("POST", "/v1/batch", json={"batch": batch}).status_code == 200
    deadline = time.monotonic() + 30
    while (found := seeded.dashboard.api("GET", "/v0/models/customer/anon-visitor")).status_code == 404:
        assert time.monotonic() < deadline, "the events were never shipped"  # shipping is asynchronous
        time.sleep(0.1)
    person = found.json()
    assert person["linked_ids"] == ["anon-visitor"] and "anon-visitor" not in person["ids"]
    page.goto(f"{seeded.dashboard.url}/people")
    page.select_option("#person-search select[name=model]", "customer")
    page.fill("#person-search input[name=id]", "anon-visitor")
    page.click("#person-search button[type=submit]")
    expect(page.locator("#person-name")).to_have_text(person["displayName"] or person["id"])
    expect(page.locator("#person-ids [data-id]")).to_have_text(person["ids"])
    expect(page.locator("#person-ids [data-linked-id]")).to_have_text(["anon-visitor"])
    expect(page.locator('#timeline li[data-id="anon-page"]')).to_have_count(1)  # the anonymous page view


def test_a_person_opened_while_another_loads_stays_shown(seeded_page: Page, seeded: Seeded) -> None:
    """The first person's answer, arriving after the second one's, is dropped: the page shows whom it
    was last asked for."""
    page = seeded_page
    first, second = REFUSED[0], REFUSED[1]
    wanted = seeded.dashboard.api("GET", f"/v0/models/customer/{second}").json()
    first_person = HeldBack(page, "**/v0/models/**", lambda url: f"/v0/models/customer/{first}?" in url)
    page.goto(f"{seeded.dashboard.url}/people?model=customer&id={first}")
    first_person.wait()
    page.fill("#person-search input[name=id]", second)
    page.click("#person-search button[type=submit]")
    expect(page.locator("#person-name")).to_have_text(wanted["displayName"])
    first_person.release()
    expect(page.locator("#person-name")).to_have_text(wanted["displayName"])
    expect(page.locator("#person-ids [data-id]")).to_have_text(wanted["ids"])


def test_the_list_pages_with_the_cursor_and_searches_any_id_or_name(
    seeded_page: Page, seeded: Seeded
) -> None:
    """Without an id the page lists the model's instances (newest first, 25 at a time, Load more with the
    API's cursor); a search narrows it to ids or names containing the text, and a row opens its person."""
    page = seeded_page
    everyone = seeded.dashboard.api("GET", "/v0/models/customer", params={"limit": 200}).json()["data"]
    assert len(everyone) == SEEDED_CUSTOMERS
    page.goto(f"{seeded.dashboard.url}/people")
    rows = page.locator("#people-table tbody tr[data-id]")
    expect(rows).to_have_count(25)
    expect(page.locator("#person-search select[name=model]")).to_have_value("customer")
    page.click("#people-more")
    expect(rows).to_have_count(SEEDED_CUSTOMERS)
    expect(page.locator("#people-more")).to_be_hidden()
    assert [rows.nth(i).get_attribute("data-id") for i in range(SEEDED_CUSTOMERS)] == [
        item["id"] for item in everyone
    ]

    page.fill("#people-filter input[name=q]", "PERSON2@")  # an email, any case: one person
    page.click("#people-filter button[type=submit]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", "cus_2002")
    assert "q=PERSON2%40" in page.url
    page.reload()  # the search is in the URL
    expect(page.locator("#people-filter input[name=q]")).to_have_value("PERSON2@")
    expect(rows).to_have_count(1)
    rows.first.locator("a.person-link").click()
    expect(page.locator("#person-name")).to_have_text("Person 2")
    page.go_back()
    expect(rows).to_have_count(1)

    page.fill("#people-filter input[name=q]", "Person 1")  # names: Person 1, Person 10 … 19
    page.click("#people-filter button[type=submit]")
    expect(rows).to_have_count(11)
    page.select_option("#person-search select[name=model]", "organization")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Acme Rockets")
    page.fill("#people-filter input[name=q]", "nobody")
    page.click("#people-filter button[type=submit]")
    expect(page.locator("#people-table tbody tr.empty")).to_contain_text("nobody")


def test_unsubscribe_and_subscribe_again_from_the_person(seeded_page: Page, seeded: Seeded) -> None:
    page = seeded_page
    page.goto(f"{seeded.dashboard.url}/people?model=customer&id=cus_2002")
    expect(page.locator("#person-opt-outs li")).to_have_text(["Nothing: its emails and SMS go out."])
    page.fill('#opt-out-form [name="topic"]', "email:tips")
    page.click('#opt-out-form button[type="submit"]')
    expect(page.locator('#person-opt-outs li[data-topic="email:tips"]')).to_contain_text("(api)")
    shown = seeded.dashboard.api("GET", "/v0/models/customer/cus_2002").json()["unsubscribed"]
    assert [(out["topic"], out["source"]) for out in shown] == [("email:tips", "api")]
    page.click('#person-opt-outs li[data-topic="email:tips"] button')
    expect(page.locator("#person-opt-outs li")).to_have_text(["Nothing: its emails and SMS go out."])
    assert seeded.dashboard.api("GET", "/v0/models/customer/cus_2002").json()["unsubscribed"] == []
