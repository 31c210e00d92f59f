"""`compare=previous_period`: the previous period's dates, the changes on a hand-made case, the same changes
computed from the oracle's two funnels on random ones, and its parameter's problems."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnels.analytics.compare import (
    ComparedQuery,
    parse_compared_query,
    previous_period,
    run_compared,
)
from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import QueryValidationError
from funnels.analytics.reference import reference_funnel
from funnels.store.events import EventStore
from tests.analytics.conftest import at, day, ev, funnel_query, load, step
from tests.analytics.test_property import PROFILE, cases, examples, exclusive_kinds, overlapping_kinds

STEPS = [step("event", "page"), step("track", "connect")]
STEPS_JSON = '[{"type":"event","event":"page","name":"p"},{"type":"track","event":"connect","name":"c"}]'


def test_the_previous_period_is_as_many_days_just_before() -> None:
    query = funnel_query(STEPS, "2026-03-01", "2026-03-31", window_seconds=3600, breakdown="device")
    earlier = previous_period(query)
    assert (earlier.date_from, earlier.date_to) == (date(2026, 1, 29), date(2026, 2, 28))
    assert replace(earlier, date_from=query.date_from, date_to=query.date_to) == query  # nothing else moves
    one_day = previous_period(funnel_query(STEPS, "2026-03-01", "2026-03-01"))
    assert (one_day.date_from, one_day.date_to) == (date(2026, 2, 28), date(2026, 2, 28))


def test_each_steps_change_in_users_and_in_points(store: EventStore) -> None:
    # Current period: days 4–7; previous: days 0–3. Current: 4 entered, 3 connected; previous: 2 and 1.
    events = [
        *(ev(f"n{i}", at(4 + i), "page") for i in range(4)),
        *(ev(f"n{i}", at(4 + i, 60_000), "track", "connect") for i in range(3)),
        ev("p0", at(0), "page"),
        ev("p0", at(0, 60_000), "track", "connect"),
        ev("p1", at(3), "page"),
        ev("p1", at(5), "track", "connect"),  # converts after the previous period, within the window
        ev("p2", at(3), "track", "connect"),  # never entered
    ]
    load(store, events)
    query = ComparedQuery(funnel_query(STEPS, day(4), day(7), window_seconds=7 * 86_400), "previous_period")
    body = run_compared(store, query)
    assert {key: body[key] for key in ("meta", "data", "rows")} == {
        key: value
        for key, value in run_funnel(store, query.funnel).items()
        if key in ("meta", "data", "rows")
    }
    comparison = body["comparison"]
    assert (comparison["compare"], comparison["date_from"], comparison["date_to"], comparison["rows"]) == (
        "previous_period",
        day(0),
        day(3),
        2,
    )
    assert comparison["data"] == [
        {
            "step": 1,
            "event": "page::0",
            "users": 4,
            "previous_users": 2,
            "users_change": 2,
            "users_change_ratio": 1.0,
            "conversion_from_start": 1.0,
            "previous_conversion_from_start": 1.0,
            "conversion_from_start_change_points": 0.0,
        },
        {
            "step": 2,
            "event": "connect::1",
            "users": 3,
            "previous_users": 2,
            "users_change": 1,
            "users_change_ratio": 0.5,
            "conversion_from_start": 0.75,
            "previous_conversion_from_start": 1.0,
            "conversion_from_start_change_points": -25.0,
        },
    ]
    assert set(comparison["statistics"]) == {"elapsed", "rows_read", "bytes_read"}


def test_breakdown_rows_are_matched_by_value_and_a_new_value_has_no_previous(store: EventStore) -> None:
    events = [
        ev("a", at(1), "page", device="mobile"),
        ev("a", at(1, 5), "track", "connect", device="mobile"),
        ev("b", at(1), "page", device="desktop"),
        ev("c", at(0), "page", device="mobile"),
        ev("d", at(0), "page", device="mobile"),
        ev("d", at(0, 5), "track", "connect", device="mobile"),
    ]
    load(store, events)
    body = run_compared(
        store, ComparedQuery(funnel_query(STEPS, day(1), breakdown="device"), "previous_period")
    )
    changes = {(row["step"], row["breakdown"]): row for row in body["comparison"]["data"]}
    assert set(changes) == {(1, "mobile"), (2, "mobile"), (1, "desktop"), (2, "desktop")}
    mobile = changes[(2, "mobile")]
    assert (mobile["users"], mobile["previous_users"], mobile["conversion_from_start_change_points"]) == (
        1,
        1,
        50.0,  # 1 of 1 now, 1 of 2 before
    )
    desktop = changes[(1, "desktop")]
    assert desktop["users"] == 1 and desktop["previous_users"] is None
    assert desktop["users_change"] is None and desktop["conversion_from_start_change_points"] is None


def expected_changes(now: dict[str, Any], before: dict[str, Any], breakdown: bool) -> list[dict[str, Any]]:
    """The comparison rows, from two funnel answers, written out plainly."""
    rows = []
    for row in now["data"]:
        value = row.get("breakdown") if breakdown else None
        same = [r for r in before["data"] if (r.get("breakdown") if breakdown else None) == value]
        was = next((r["users"] for r in same if r["step"] == row["step"]), None)
        start = next(
            r["users"] for r in now["data"] if r["step"] == 1 and r.get("breakdown") == row.get("breakdown")
        )
        start_before = next((r["users"] for r in same if r["step"] == 1), 0)
        expected = {"step": row["step"], "event": row["event"]} | ({"breakdown": value} if breakdown else {})
        expected |= {
            "users": row["users"],
            "previous_users": was,
            "users_change": None if was is None else row["users"] - was,
            "users_change_ratio": round((row["users"] - was) / was, 4) if was else None,
            "conversion_from_start": round(row["users"] / start, 4) if start else None,
            "previous_conversion_from_start": (
                None if was is None else round(was / start_before, 4) if start_before else None
            ),
            "conversion_from_start_change_points": (
                round((row["users"] / start - was / start_before) * 100, 2)
                if was is not None and start and start_before
                else None
            ),
        }
        rows.append(expected)
    return rows


@settings(PROFILE, max_examples=examples(40))
@given(case=cases(st.one_of(exclusive_kinds(), overlapping_kinds(2, 3)), ["closed", "open", "strict"]))
def test_the_comparison_equals_the_oracles_two_periods(store: EventStore, case: Any) -> None:
    query, events, batches = case
    load(store, events, batches)
    body = run_compared(store, ComparedQuery(query, "previous_period"))
    now, before = reference_funnel(query, events), reference_funnel(previous_period(query), events)
    assert body["data"] == now["data"]
    assert body["comparison"]["data"] == expected_changes(now, before, bool(query.breakdown))


def test_without_compare_the_answer_is_the_funnels(store: EventStore) -> None:
    load(store, [ev("a", at(0), "page"), ev("a", at(0, 5), "track", "connect")])
    params = {"date_from": day(0), "date_to": day(0), "steps": STEPS_JSON}
    query = parse_compared_query(params)
    assert query == ComparedQuery(parse_compared_query(params | {"compare": ""}).funnel, None)
    plain = run_compared(store, query)
    assert "comparison" not in plain
    assert {**plain, "statistics": {}} == {**run_funnel(store, query.funnel), "statistics": {}}


@pytest.mark.parametrize(
    ("extra", "details"),
    [
        ({"compare": "previous"}, {"compare": "must be previous_period"}),
        ({"compare": "PREVIOUS_PERIOD"}, {"compare": "must be previous_period"}),
        (
            {"compare": "previous_period", "date_from": "1970-01-01", "date_to": "1970-01-01"},
            {"compare": "the previous period would start before 1970-01-01"},
        ),
        (
            {"compare": "x", "funnel_type": "y"},
            {"funnel_type": "must be closed, open or strict", "compare": "must be previous_period"},
        ),
    ],
)
def test_a_bad_compare_is_named(extra: dict[str, str], details: dict[str, str]) -> None:
    params = {"date_from": "2026-04-01", "date_to": "2026-04-30", "steps": STEPS_JSON} | extra
    with pytest.raises(QueryValidationError) as raised:
        parse_compared_query(params)
    assert raised.value.details == details


def test_the_earliest_comparable_range_is_accepted() -> None:
    query = parse_compared_query(
        {
            "date_from": "1970-01-02",
            "date_to": "1970-01-02",
            "steps": STEPS_JSON,
            "compare": "previous_period",
        }
    )
    assert previous_period(query.funnel).date_from == date(1970, 1, 1)
