"""`funnels demo`'s sample dataset: deterministic, with a share of visitors who land anonymously and identify
when they connect, so that the demo funnel shows identity stitching. The expected numbers are computed from
the generated journeys, never pasted: stitched, the funnel must count each visitor's journey as one user, as
if every event had carried the visitor's user id from the start."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import parse_funnel_query
from funnels.demo import ANONYMOUS_SHARE, DAYS, DEMO_STEPS, persons, sample_events
from funnels.events import Event
from funnels.services import Services

TODAY = datetime(2026, 5, 1, 23, 59, 59, tzinfo=UTC)
QUERY = {
    "date_from": (TODAY - timedelta(days=DAYS)).date().isoformat(),
    "date_to": TODAY.date().isoformat(),
    "window_seconds": "1209600",
    "steps": json.dumps(DEMO_STEPS),
}


def as_generated(events: list[Event]) -> list[Event]:
    """The journeys without the ids' history: every event of a visitor under their user id (or their
    anonymous id, for a visitor who never identifies), identifies left out."""
    links = {event.anonymous_id: event.user_id for event in events if event.user_id and event.anonymous_id}
    journeys = []
    for event in events:
        if event.type != "identify":
            person = links.get(event.user_key, event.user_key)
            journeys.append(replace(event, user_key=person, user_id=person, anonymous_id=""))
    return journeys


def users(svc: Services, events: list[Event], identity: str) -> list[int]:
    svc.events.truncate()
    svc.events.insert_events(events)
    answer = run_funnel(svc.events, parse_funnel_query({**QUERY, "identity": identity}))
    return [row["users"] for row in answer["data"]]


def test_the_sample_is_the_same_on_every_run() -> None:
    assert sample_events(TODAY, users=300) == sample_events(TODAY, users=300)


def test_a_share_of_the_visitors_land_anonymously_and_identify_when_they_connect() -> None:
    events = sample_events(TODAY, users=2_000)
    assert persons(events) == 2_000
    anonymous = {event.user_key for event in events if not event.user_id}
    assert abs(len(anonymous) / 2_000 - ANONYMOUS_SHARE) < 0.05
    identified = {event.anonymous_id: event for event in events if event.type == "identify"}
    assert 0 < len(identified) < len(anonymous)  # the visitors who connected
    for event in events:
        if (
            event.anonymous_id in identified and event.user_id
        ):  # after the identify: both ids, as analytics.js
            assert event.ts_ms >= identified[event.anonymous_id].ts_ms
            assert event.user_id == identified[event.anonymous_id].user_id
        if event.type == "track" and event.event == "connect":
            assert event.user_id  # nobody connects anonymously


def test_stitched_the_demo_funnel_counts_each_visitor_once(services: Services) -> None:
    events = sample_events(TODAY, users=1_500)
    stitched, raw = users(services, events, "stitched"), users(services, events, "raw")
    assert stitched == users(services, as_generated(events), "raw")
    # Raw, an identified visitor's anonymous page views and their later events are two users: more enter,
    # fewer convert.
    assert raw[0] > stitched[0] and raw[1] < stitched[1] and raw[2] < stitched[2]
