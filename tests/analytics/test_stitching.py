"""Identity stitching (docs/semantics.md, "Users and persons"), one test per rule, through the real event
store; each case also runs on the plain-Python reference, which must agree.

Ids: `a…` anonymous ids, `u…` user ids. Times are seconds after 10:00 on 2026-04-01.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import FunnelQuery
from funnels.analytics.reference import reference_funnel
from funnels.events import Event
from funnels.store.events import EventStore
from tests.analytics.conftest import at, column, day, ev, funnel_query, load, step, users

T = at(0, 10 * 3_600_000)

# The funnel: landing page → Signed Up → Purchased.
SIGNUP = funnel_query(
    [step("event", "page"), step("track", "Signed Up"), step("track", "Purchased")], day(0), day(0)
)
PURCHASE = funnel_query([step("event", "page"), step("track", "Purchased")], day(0), day(0))


def s(seconds: float) -> int:
    return T + int(seconds * 1000)


def alias(user: str, previous: str, seconds: float) -> Event:
    """An alias as Segment ingestion stores it: the new user id, `previousId` as a property."""
    return ev(user, s(seconds), "alias", props={"previousId": previous})


def answers(store: EventStore, query: FunnelQuery, events: list[Event]) -> tuple[list[int], list[int]]:
    """(stitched users per step, raw users per step) from SQL, each checked against the reference."""
    result = []
    for identity in ("stitched", "raw"):
        variant = replace(query, identity=identity)
        sql = run_funnel(store, variant)
        assert sql["data"] == reference_funnel(variant, events)["data"], identity
        result.append(users(sql))
    return result[0], result[1]


def test_an_anonymous_visitor_who_signs_up_converts(store: EventStore) -> None:
    """The issue's example: the landing page is anonymous, identify joins it to the user."""
    events = [
        ev("", s(0), "page", anonymous_id="a1"),
        ev("u1", s(1), "identify", anonymous_id="a1"),
        ev("u1", s(2), "track", "Signed Up", anonymous_id="a1"),
        ev("u1", s(3), "track", "Purchased"),  # a server-side event: the user id alone
    ]
    load(store, events)
    assert answers(store, SIGNUP, events) == ([1, 1, 1], [1, 0, 0])


def test_any_event_with_both_ids_links_them(store: EventStore) -> None:
    """No identify needed: a track carrying both ids is a link too, and counts for the user."""
    events = [
        ev("", s(0), "page", anonymous_id="a1"),
        ev("u1", s(2), "track", "Signed Up", anonymous_id="a1"),
        ev("u1", s(3), "track", "Purchased"),
    ]
    load(store, events)
    assert answers(store, SIGNUP, events) == ([1, 1, 1], [1, 0, 0])


def test_anonymous_events_stored_after_the_identify_join_retroactively(store: EventStore) -> None:
    """The identify arrives first; the anonymous page view (earlier in time) is imported later."""
    identified = [
        ev("u1", s(1), "identify", anonymous_id="a1"),
        ev("u1", s(2), "track", "Signed Up"),
        ev("u1", s(3), "track", "Purchased"),
    ]
    load(store, identified)
    assert answers(store, SIGNUP, identified) == ([0, 0, 0], [0, 0, 0])
    landing = [ev("", s(0), "page", anonymous_id="a1")]
    store.insert_events(landing)  # no link in this insert: the dictionary needs no reload
    assert answers(store, SIGNUP, identified + landing) == ([1, 1, 1], [1, 0, 0])


def test_a_link_stored_after_a_query_is_seen_by_the_next_query(store: EventStore) -> None:
    """The dictionary's freshness: an insert that may carry a link makes the next stitched query reload it."""
    before = [
        ev("", s(0), "page", anonymous_id="a1"),
        ev("u1", s(2), "track", "Signed Up"),
        ev("u1", s(3), "track", "Purchased"),
    ]
    load(store, before)
    assert answers(store, SIGNUP, before) == ([1, 0, 0], [1, 0, 0])
    link = [ev("u1", s(1), "identify", anonymous_id="a1")]
    store.insert_events(link)
    assert answers(store, SIGNUP, before + link) == ([1, 1, 1], [1, 0, 0])


def test_a_second_user_claiming_an_anonymous_id_does_not_take_it(store: EventStore) -> None:
    """a1 joins u1, whose claim is earliest, whichever arrived first; u2's identify still counts as u2's."""
    anonymous = [ev("", s(0), "page", anonymous_id="a1")]
    second = [
        ev("u2", s(5), "identify", anonymous_id="a1"),
        ev("u2", s(6), "page"),
        ev("u2", s(7), "track", "Purchased"),
    ]
    load(store, anonymous + second)
    # Alone, u2's claim is the earliest: a1 is u2's, and u2 enters once with two page views.
    assert answers(store, PURCHASE, anonymous + second) == ([1, 1], [2, 1])
    first = [ev("u1", s(1), "identify", anonymous_id="a1")]  # an earlier claim, imported late
    store.insert_events(first)
    # Now a1 is u1's (who never purchased); u2 keeps its own events.
    assert answers(store, PURCHASE, anonymous + second + first) == ([2, 1], [2, 1])
    identify_then_purchase = funnel_query([step("event", "identify"), step("track", "Purchased")], day(0))
    stitched, raw = answers(store, identify_then_purchase, anonymous + second + first)
    assert stitched == raw == [2, 1]  # u1's identify and u2's: the second claimant's event is u2's


def test_alias_merges_a_user_into_a_user(store: EventStore) -> None:
    events = [
        ev("u1", s(0), "page"),
        alias("u2", "u1", 1),
        ev("u2", s(2), "track", "Purchased"),
    ]
    load(store, events)
    assert answers(store, PURCHASE, events) == ([1, 1], [1, 0])


def test_an_anonymous_id_follows_its_user_through_an_alias(store: EventStore) -> None:
    """Two links: anonymous → user (identify) → user (alias)."""
    events = [
        ev("", s(0), "page", anonymous_id="a1"),
        ev("u1", s(1), "identify", anonymous_id="a1"),
        alias("u2", "u1", 2),
        ev("u2", s(3), "track", "Purchased"),
    ]
    load(store, events)
    assert answers(store, PURCHASE, events) == ([1, 1], [1, 0])


def test_a_chain_longer_than_two_links_is_cut(store: EventStore) -> None:
    """a1 → u1 → u2 → u3: a1's events are u2's (two links), u1's and u2's are u3's."""
    events = [
        ev("", s(0), "page", anonymous_id="a1"),
        ev("u1", s(1), "identify", anonymous_id="a1"),
        ev("u1", s(1.5), "page"),
        alias("u2", "u1", 2),
        alias("u3", "u2", 3),
        ev("u3", s(4), "track", "Purchased"),
    ]
    load(store, events)
    # Persons u2 (a1's page) and u3 (u1's page, the purchase): two enter, u3 converts.
    assert answers(store, PURCHASE, events) == ([2, 1], [2, 0])


def test_an_alias_cycle_merges_nothing(store: EventStore) -> None:
    one_way = [ev("u1", s(0), "page"), alias("u2", "u1", 1), ev("u2", s(3), "track", "Purchased")]
    load(store, one_way)
    assert answers(store, PURCHASE, one_way) == ([1, 1], [1, 0])
    back = [alias("u1", "u2", 2)]  # u2 → u1 as well: each follows its link twice and is itself again
    store.insert_events(back)
    assert answers(store, PURCHASE, one_way + back) == ([1, 0], [1, 0])


def test_links_ignore_empty_own_and_non_string_ids(store: EventStore) -> None:
    events = [
        ev("", s(0), "page", anonymous_id="a1"),
        ev("u1", s(1), "identify", anonymous_id="u1"),  # its own id: no link
        ev("u1", s(1), "alias", props={"previousId": 7}),  # not a string
        ev("u1", s(1), "alias", props={"previousId": ""}),
        ev("", s(1), "identify", anonymous_id="a1"),  # no user id: no link
        ev("u1", s(2), "track", "Purchased"),
        ev("7", s(0), "page"),
    ]
    load(store, events)
    assert answers(store, PURCHASE, events) == ([2, 0], [2, 0])


def test_a_stitched_person_is_broken_down_by_their_first_touch_anonymous_or_not(store: EventStore) -> None:
    events = [
        ev("", s(0), "page", anonymous_id="a1", utm_source="google"),
        ev("u1", s(1), "identify", anonymous_id="a1"),
        ev("u1", s(2), "page", utm_source="twitter"),
        ev("u1", s(3), "track", "Purchased"),
    ]
    load(store, events)
    query = replace(PURCHASE, breakdown="utm_source")
    stitched = run_funnel(store, query)
    assert stitched["data"] == reference_funnel(query, events)["data"]
    assert list(zip(column(stitched, "breakdown"), users(stitched), strict=True)) == [
        ("google", 1),
        ("google", 1),
    ]
    raw_query = replace(query, identity="raw")
    raw = run_funnel(store, raw_query)
    assert raw["data"] == reference_funnel(raw_query, events)["data"]
    assert list(zip(column(raw, "breakdown"), users(raw), strict=True)) == [
        ("google", 1),
        ("twitter", 1),
        ("google", 0),
        ("twitter", 1),
    ]


def test_a_person_enters_once_in_an_open_funnel(store: EventStore) -> None:
    events = [
        ev("", s(0), "page", anonymous_id="a1"),
        ev("u1", s(1), "page", anonymous_id="a1"),
        ev("u1", s(2), "track", "Purchased"),
        ev("", s(3), "page", anonymous_id="a2"),
    ]
    load(store, events)
    open_query = replace(PURCHASE, funnel_type="open")
    assert answers(store, open_query, events) == ([2, 1], [3, 1])


def test_a_stored_event_twice_changes_no_link(store: EventStore) -> None:
    """A re-import writes the same rows again: the links (the least of the same claims) are unchanged."""
    events: list[Any] = [
        ev("", s(0), "page", anonymous_id="a1"),
        ev("u1", s(1), "identify", anonymous_id="a1", event_id="same"),
        ev("u1", s(3), "track", "Purchased"),
    ]
    load(store, events)
    store.insert_events(events[1:2])
    links = store.query("SELECT key, min(claim).3 FROM identity_links GROUP BY key").rows
    assert links == [["a1", "u1"]]
    assert users(run_funnel(store, PURCHASE)) == [1, 1]


def test_the_dictionary_reloads_only_after_a_batch_that_may_change_a_link(store: EventStore) -> None:
    """analytics.js sends both ids on every event once a visitor has identified: a batch repeating known
    links must not cost the next stitched query a reload; a new key, or an earlier claim by another user,
    must. After every batch the stitched and raw answers equal the oracle's."""
    load(store, [])
    batches = [
        # (the batch, whether it marks the dictionary behind, stitched users per step afterwards)
        (
            [ev("", s(0), "page", anonymous_id="a1"), ev("u1", s(2), "identify", anonymous_id="a1")],
            True,
            [1, 0, 0],
        ),
        ([ev("u1", s(3), "track", "Signed Up", anonymous_id="a1")], False, [1, 1, 0]),  # the known link again
        ([ev("u1", s(1), "identify", anonymous_id="a1")], False, [1, 1, 0]),  # u1 again, earlier: still u1's
        ([ev("", s(4), "page", anonymous_id="a1"), ev("u2", s(4), "page")], False, [2, 1, 0]),  # no claim
        ([ev("u2", s(5), "identify", anonymous_id="a1")], False, [2, 1, 0]),  # u2, later than u1: cannot win
        ([ev("u1", s(6), "track", "Purchased", anonymous_id="a1")], False, [2, 1, 1]),
        ([ev("u2", s(0.5), "identify", anonymous_id="a1")], True, [1, 0, 0]),  # u2, earlier: a1 is u2's now
        ([ev("u3", s(7), "identify", anonymous_id="a3")], True, [1, 0, 0]),  # a new key
        ([alias("u2", "u1", 8)], True, [1, 1, 1]),  # an alias (its key is a property) is not told apart
    ]
    stored: list[Event] = []
    for batch, reloads, expected in batches:
        before = store.links_generation
        store.insert_events(batch)
        stored += batch
        assert (store.links_generation != before) is reloads, batch
        assert answers(store, SIGNUP, stored)[0] == expected, batch
