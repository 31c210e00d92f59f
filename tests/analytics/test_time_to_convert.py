"""`GET /v0/funnel/time_to_convert`'s analytics: the SQL (`run_time_to_convert` on chDB) against the oracle
(`reference_time_to_convert`), on hand-made cases and on the property tests' random funnels; its
parameters' validation; and its agreement with `/v0/funnel` (the same users, the same medians)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import QueryValidationError
from funnels.analytics.reference import percentile, reference_time_to_convert
from funnels.analytics.time_to_convert import (
    TimeToConvertQuery,
    parse_time_to_convert_query,
    run_time_to_convert,
)
from funnels.events import Event
from funnels.store.events import EventStore
from tests.analytics.conftest import at, day, ev, funnel_query, load, step
from tests.analytics.test_property import (
    PROFILE,
    cases,
    examples,
    exclusive_kinds,
    overlapping_kinds,
    with_identities,
)

STEPS = [step("event", "page"), step("track", "connect"), step("track", "swap")]


def ttc(from_step: int = 1, to_step: int = 3, bins: int | None = None, **params: Any) -> TimeToConvertQuery:
    return TimeToConvertQuery(funnel_query(STEPS, **params), from_step, to_step, bins)


def journey(user: str, *gaps_ms: int, start: int = at(0, 3_600_000), **columns: str) -> list[Event]:
    """page at `start`, then connect and swap `gaps_ms` after the previous step."""
    events = [ev(user, start, "page", **columns)]
    for name, gap in zip(("connect", "swap"), gaps_ms, strict=False):
        start += gap
        events.append(ev(user, start, "track", name))
    return events


def both(store: EventStore, query: TimeToConvertQuery, events: list[Event]) -> dict[str, Any]:
    load(store, events)
    sql, reference = run_time_to_convert(store, query), reference_time_to_convert(query, events)
    assert {**sql, "statistics": {}} == reference
    return sql


def test_percentiles_mean_and_automatic_bins(store: EventStore) -> None:
    events = [
        *journey("a", 1000, 0),  # page → connect 1 s → swap at once
        *journey("b", 2000, 3000),
        *journey("c", 40_000, 20_000),
        *journey("d", 500, 3_600_000),
        *journey("e", 1000),  # never swaps
    ]
    body = both(store, ttc(), events)
    (group,) = body["data"]
    assert group["users"] == 4  # a, b, c, d reached swap; values 1 s, 5 s, 60 s, 3600.5 s
    assert (
        group["p50_seconds"] == 32.5 and group["mean_seconds"] == (1000 + 5000 + 60000 + 3600500) / 4 / 1000
    )
    assert group["p25_seconds"] == 4.0  # h = 0.25 × 3 + 1 = 1.75: 1 s + 0.75 × (5 s − 1 s)
    histogram = [(b["from_seconds"], b["to_seconds"], b["users"]) for b in group["histogram"]]
    assert histogram[0] == (1.0, 2.0, 1) and histogram[-1] == (3600.0, 7200.0, 1)
    assert (5.0, 10.0, 1) in histogram and (60.0, 120.0, 1) in histogram
    assert sum(users for *_, users in histogram) == 4
    assert [body["from_event"], body["to_event"], body["bins"]] == ["page::0", "swap::2", "auto"]


def test_between_any_two_steps_and_equal_bins(store: EventStore) -> None:
    events = [*journey("a", 1000, 0), *journey("b", 2000, 3000), *journey("c", 10_000, 1)]
    body = both(store, ttc(2, 3, bins=3), events)
    histogram = [(b["from_seconds"], b["to_seconds"], b["users"]) for b in body["data"][0]["histogram"]]
    assert histogram == [(0.0, 1.001, 2), (1.001, 2.002, 0), (2.002, 3.003, 1)]  # 0, 1 ms, 3 s: 3 × 1001 ms
    one = both(store, ttc(2, 3, bins=50), [*journey("a", 1000, 7), *journey("b", 10, 9)])
    assert [b["users"] for b in one["data"][0]["histogram"]] == [1, 0, 1]  # 3 values 7..9 ms: 3 bins


def test_nobody_converted(store: EventStore) -> None:
    body = both(store, ttc(), journey("a", 1000))
    assert body["data"] == [
        {
            "users": 0,
            "mean_seconds": None,
            **{f"{p}_seconds": None for p in ("p25", "p50", "p75", "p90", "p99")},
            "histogram": [],
        }
    ]
    assert both(store, ttc(bins=4, breakdown="device"), [])["data"] == []


def test_breakdown_groups_share_bins_and_agree_with_the_funnel(store: EventStore) -> None:
    events = [
        *journey("a", 1000, 0, device="mobile"),
        *journey("b", 2000, 3000, device="mobile"),
        *journey("c", 10_000, 100_000, device="desktop"),
        *journey("d", 3, device="tablet"),
        *journey("e", 30, 30, device=""),
    ]
    query = ttc(1, 3, breakdown="device", breakdown_top_n=2)
    body = both(store, query, events)
    assert [row["breakdown"] for row in body["data"]] == ["mobile", "(none)", "Others"]
    assert (
        len({tuple((b["from_seconds"], b["to_seconds"]) for b in r["histogram"]) for r in body["data"]}) == 1
    )
    funnel = run_funnel(store, query.funnel)
    last = [row for row in funnel["data"] if row["step"] == 3]
    assert [row["users"] for row in last] == [row["users"] for row in body["data"]]
    assert [row["median_seconds_from_start"] for row in last] == [row["p50_seconds"] for row in body["data"]]


def test_open_funnels_may_go_backwards(store: EventStore) -> None:
    events = [ev("a", at(0, 5000), "page"), ev("a", at(0, 1000), "track", "connect")]
    body = both(store, ttc(1, 2, funnel_type="open"), events)
    assert body["data"][0]["p50_seconds"] == -4.0
    assert [(b["from_seconds"], b["to_seconds"]) for b in body["data"][0]["histogram"]] == [(-5.0, -2.0)]


def test_percentile_is_the_inclusive_definition() -> None:
    """docs/semantics.md's example: 1, 2, 3 and 10 s."""
    assert [percentile([1, 2, 3, 10], p) for p in (0.25, 0.5, 0.75, 0.99)] == [1.75, 2.5, 4.75, 9.79]
    assert percentile([1, 2, 3, 10], 0.5) == 2.5
    assert percentile([1, 2, 3, 10], 0.9) == 3 + 0.7000000000000002 * 7
    assert percentile([7], 0.99) == 7.0 and percentile([], 0.5) is None


BASE = {
    "date_from": day(0),
    "date_to": day(0),
    "steps": [{**s, "name": f"s{i}"} for i, s in enumerate(STEPS)],
}


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"from_step": "2", "to_step": "2"}, {"to_step": "must be after from_step"}),
        ({"from_step": "0", "to_step": "4"}, {"from_step": "must be between 1 and 3", "to_step": "must be between 1 and 3"}),
        ({"from_step": "x", "to_step": "2", "bins": "0"}, {"from_step": "must be an integer", "bins": "must be between 1 and 100"}),
        ({"from_step": "1", "to_step": "2", "bins": "many"}, {"bins": "must be an integer"}),
        ({"from_step": "1", "to_step": "2", "steps": "[]"}, {"steps": "must be a JSON array of 2–10 step specs"}),
    ],
)  # fmt: skip
def test_parameter_errors_name_each_parameter(params: dict[str, str], errors: dict[str, str]) -> None:
    with pytest.raises(QueryValidationError) as raised:
        parse_time_to_convert_query(BASE | params)
    assert raised.value.details == errors


def test_parameters_parse() -> None:
    query = parse_time_to_convert_query(BASE | {"from_step": "1", "to_step": "3", "bins": "auto"})
    assert (query.from_step, query.to_step, query.bins) == (1, 3, None)
    assert parse_time_to_convert_query(BASE | {"from_step": "2", "to_step": "3", "bins": "100"}).bins == 100
    whole = parse_time_to_convert_query(BASE)  # neither step given: the whole funnel
    assert (whole.from_step, whole.to_step) == (1, 3)
    assert parse_time_to_convert_query(BASE | {"from_step": "2"}).to_step == 3


@st.composite
def ttc_cases(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> tuple[TimeToConvertQuery, list[Event], int]:
    funnel, events, batches = draw(base)
    n = len(funnel.steps)
    from_step = draw(st.integers(1, n - 1))
    to_step = draw(st.integers(from_step + 1, n))
    bins = draw(st.sampled_from([None, None, 1, 2, 7, 100]))
    return TimeToConvertQuery(funnel, from_step, to_step, bins), events, batches


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(60))
@given(
    case=ttc_cases(
        st.one_of(
            cases(
                st.one_of(exclusive_kinds(), overlapping_kinds(2, 4)), ["closed", "open", "strict"], walk=True
            ),
            cases(exclusive_kinds(2, 3), ["closed", "open"], bucket_names=True),
            with_identities(cases(exclusive_kinds(), ["closed", "open", "strict"])),
        )
    )
)
def test_time_to_convert_equals_reference(store: EventStore, case: Any) -> None:
    query, events, batches = case
    load(store, events, batches)
    sql, reference = run_time_to_convert(store, query), reference_time_to_convert(query, events)
    assert {**sql, "statistics": {}} == reference


def test_stitched_and_raw(store: EventStore) -> None:
    events = [
        ev("", at(0, 0), "page", anonymous_id="a1"),
        ev("u1", at(0, 500), "identify", anonymous_id="a1"),
        ev("u1", at(0, 2000), "track", "connect"),
    ]
    query = ttc(1, 2)
    assert both(store, query, events)["data"][0]["users"] == 1
    raw = replace(query, funnel=replace(query.funnel, identity="raw"))
    assert both(store, raw, events)["data"][0]["users"] == 0
