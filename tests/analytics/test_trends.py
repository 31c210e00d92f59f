"""`GET /v0/funnel/trends`' analytics: the SQL (`run_trends` on chDB) against the oracle (`reference_trends`)
on hand-made cases and on the property tests' random funnels; periods; parameters; and the sums over
periods equal to `/v0/funnel`'s step-1 and last-step users."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import QueryValidationError
from funnels.analytics.reference import reference_trends
from funnels.analytics.trends import Interval, TrendsQuery, parse_trends_query, periods, run_trends
from funnels.events import Event
from funnels.store.events import EventStore
from tests.analytics.conftest import DAY_MS, at, day, ev, funnel_query, load, step
from tests.analytics.test_property import (
    PROFILE,
    cases,
    examples,
    exclusive_kinds,
    overlapping_kinds,
    with_identities,
)

STEPS = [step("event", "page"), step("track", "connect")]
LATER = at(400)  # long after every period's window below


def trends(interval: Interval = "day", date_to: str = day(2), **params: Any) -> TrendsQuery:
    return TrendsQuery(funnel_query(STEPS, day(0), date_to, **params), interval)


def both(store: EventStore, query: TrendsQuery, events: list[Event], now_ms: int = LATER) -> dict[str, Any]:
    load(store, events)
    sql, reference = run_trends(store, query, now_ms), reference_trends(query, events, now_ms)
    assert {**sql, "statistics": {}} == reference
    return sql


def test_per_day_entered_converted_and_rate(store: EventStore) -> None:
    events = [
        ev("a", at(0, 1000), "page"),
        ev("a", at(0, 2000), "track", "connect"),
        ev("b", at(0, 5000), "page"),
        ev("c", at(2, 0), "page", utm_source="x"),
        ev("c", at(3, 0), "track", "connect"),  # after date_to, within the window: converts
    ]
    body = both(store, trends(window_seconds=86_400 * 2), events)
    rows = [
        (r["period"], r["entered"], r["converted"], r["conversion"], r["window_closed"]) for r in body["data"]
    ]
    assert rows == [(day(0), 2, 1, 0.5, True), (day(1), 0, 0, None, True), (day(2), 1, 1, 1.0, True)]
    assert body["interval"] == "day"


def test_windows_still_open_are_marked(store: EventStore) -> None:
    events = [ev("a", at(0, 1000), "page")]
    now = at(2, 1000)  # day 0 ended 1 day + 1 s ago: its 1-day window has closed, day 1's has not
    body = both(store, trends(window_seconds=86_400), events, now_ms=now)
    assert [r["window_closed"] for r in body["data"]] == [True, False, False]


def test_a_user_counts_once_in_the_period_of_the_path_the_funnel_measures(store: EventStore) -> None:
    events = [
        ev("a", at(0, 0), "page"),  # entered on day 0 without converting
        ev("a", at(2, 0), "page"),  # entered again on day 2 and converted from there: day 2
        ev("a", at(2, 1000), "track", "connect"),
    ]
    body = both(store, trends(window_seconds=60), events)
    assert [(r["entered"], r["converted"]) for r in body["data"]] == [(0, 0), (0, 0), (1, 1)]


def test_weeks_and_months_clip_to_the_range(store: EventStore) -> None:
    # 2026-04-01 is a Wednesday
    query = trends("week", date_to=day(12))
    body = both(store, query, [ev("a", at(5, 0), "page"), ev("a", at(5, 10), "track", "connect")])
    assert [(r["period"], r["date_from"], r["date_to"]) for r in body["data"]] == [
        ("2026-03-30", "2026-04-01", "2026-04-05"),
        ("2026-04-06", "2026-04-06", "2026-04-12"),
        ("2026-04-13", "2026-04-13", "2026-04-13"),
    ]
    assert [r["converted"] for r in body["data"]] == [0, 1, 0]
    months = both(store, trends("month", date_to=day(40)), [ev("a", at(35, 0), "page")])
    assert [(r["period"], r["date_to"], r["entered"]) for r in months["data"]] == [
        ("2026-04-01", "2026-04-30", 0),
        ("2026-05-01", "2026-05-11", 1),
    ]


def test_periods_at_the_ends_of_the_calendar() -> None:
    first = periods("week", date(1970, 1, 1), date(1970, 1, 5))
    assert [(p.start, p.date_from, p.date_to) for p in first] == [
        (date(1969, 12, 29), date(1970, 1, 1), date(1970, 1, 4)),
        (date(1970, 1, 5), date(1970, 1, 5), date(1970, 1, 5)),
    ]
    last = periods("month", date(2199, 11, 30), date(2199, 12, 31))
    assert [p.start for p in last] == [date(2199, 11, 1), date(2199, 12, 1)]


def test_breakdown_ranks_values_as_the_funnel_and_sums_to_it(store: EventStore) -> None:
    events = [
        ev("a", at(0, 0), "page", device="mobile"),
        ev("a", at(0, 10), "track", "connect"),
        ev("b", at(1, 0), "page", device="mobile"),
        ev("c", at(1, 0), "page", device="desktop"),
        ev("c", at(1, 10), "track", "connect"),
        ev("d", at(2, 0), "page", device="tablet"),
        ev("e", at(2, 0), "page"),
    ]
    query = trends(breakdown="device", breakdown_top_n=2)
    body = both(store, query, events)
    assert [r["breakdown"] for r in body["data"][:3]] == ["mobile", "(none)", "Others"]
    assert body["rows"] == 9  # 3 days × 3 buckets, zeros included
    funnel = run_funnel(store, query.funnel)
    for row in funnel["data"]:
        period_rows = [r for r in body["data"] if r["breakdown"] == row["breakdown"]]
        field = "entered" if row["step"] == 1 else "converted"
        assert sum(r[field] for r in period_rows) == row["users"]


def test_nobody_entered(store: EventStore) -> None:
    body = both(store, trends(), [])
    assert [(r["entered"], r["conversion"]) for r in body["data"]] == [(0, None)] * 3
    assert both(store, trends(breakdown="device"), [])["data"] == []


BASE = {
    "date_from": day(0),
    "date_to": day(6),
    "steps": [{**s, "name": f"s{i}"} for i, s in enumerate(STEPS)],
}


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"interval": "hour"}, {"interval": "must be day, week or month"}),
        ({"interval": "week", "date_to": "x"}, {"date_to": "must be a date as YYYY-MM-DD"}),
        ({"date_from": "1970-01-01", "date_to": "1980-12-31"}, {"interval": "at most 3,660 periods between date_from and date_to; use a longer one"}),
    ],
)  # fmt: skip
def test_parameter_errors_name_each_parameter(params: dict[str, str], errors: dict[str, str]) -> None:
    with pytest.raises(QueryValidationError) as raised:
        parse_trends_query(BASE | params)
    assert raised.value.details == errors


def test_parameters_parse() -> None:
    assert parse_trends_query(BASE).interval == "day"
    month = parse_trends_query(
        BASE | {"interval": "month", "date_from": "1970-01-01", "date_to": "2199-12-31"}
    )
    assert month.interval == "month"


@st.composite
def trends_cases(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> tuple[TrendsQuery, list[Event], int, int]:
    """A case moved by 0–4 days back, so its range may hold a Monday and a month's first day (the cases'
    own range starts on Wednesday 2026-04-01)."""
    funnel, events, batches = draw(base)
    shift = timedelta(days=draw(st.sampled_from([0, -1, -2, -3, -4])))
    funnel = replace(funnel, date_from=funnel.date_from + shift, date_to=funnel.date_to + shift)
    moved = shift.days * DAY_MS
    events = [
        replace(event, ts_ms=event.ts_ms + moved, received_ms=event.received_ms + moved) for event in events
    ]
    interval = draw(st.sampled_from(["day", "week", "month"]))
    now = at(draw(st.sampled_from([-1, 0, 1, 2, 3, 20])), draw(st.sampled_from([0, 1, DAY_MS - 1]))) + moved
    return TrendsQuery(funnel, interval), events, batches, now


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(60))
@given(
    case=trends_cases(
        st.one_of(
            cases(st.one_of(exclusive_kinds(), overlapping_kinds(2, 4)), ["closed", "open", "strict"]),
            cases(exclusive_kinds(2, 3), ["closed", "open"], bucket_names=True),
            with_identities(cases(exclusive_kinds(), ["closed", "open", "strict"])),
        )
    )
)
def test_trends_equal_reference(store: EventStore, case: Any) -> None:
    query, events, batches, now = case
    load(store, events, batches)
    sql, reference = run_trends(store, query, now), reference_trends(query, events, now)
    assert {**sql, "statistics": {}} == reference


def test_the_documented_example(store: EventStore) -> None:
    """docs/semantics.md, "Conversion over time"."""
    hour = 3_600_000
    events = [
        ev("A", at(0, 10 * hour), "page"),
        ev("A", at(0, 10 * hour + 300_000), "track", "connect"),
        ev("B", at(0, 12 * hour), "page"),
        ev("C", at(0, 9 * hour), "page"),
        ev("C", at(2, 9 * hour), "page"),
        ev("C", at(2, 9 * hour + 60_000), "track", "connect"),
        ev("D", at(2, 23 * hour), "page"),
        ev("D", at(3, 8 * hour), "track", "connect"),
    ]
    body = both(store, trends(window_seconds=86_400), events, now_ms=at(3, 12 * hour))
    rows = [
        (r["period"], r["entered"], r["converted"], r["conversion"], r["window_closed"]) for r in body["data"]
    ]
    assert rows == [(day(0), 2, 1, 0.5, True), (day(1), 0, 0, None, True), (day(2), 2, 2, 1.0, False)]
