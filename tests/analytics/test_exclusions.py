"""Exclusion steps (`exclusions`): named cases run on both implementations, then property tests of the SQL
against the oracle, which tries every chain (docs/semantics.md, "Exclusion steps")."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import hypothesis
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnels.analytics.people import parse_people_query, run_people
from funnels.analytics.query import FunnelQuery, QueryValidationError
from funnels.analytics.reference import (
    reference_funnel,
    reference_people,
    reference_time_to_convert,
    reference_trends,
)
from funnels.analytics.time_to_convert import parse_time_to_convert_query, run_time_to_convert
from funnels.analytics.trends import parse_trends_query, run_trends
from funnels.events import Event
from funnels.store.events import EventStore
from tests.analytics.conftest import at, both, column, ev, funnel_query, load, step
from tests.analytics.test_property import (
    PROFILE,
    cases,
    examples,
    exclusive_kinds,
    filters,
    overlapping_kinds,
    stored_kinds,
    with_identities,
)

T = at(0, 10 * 3_600_000)  # 2026-04-01T10:00:00Z
S = 1000
PAGE, CONNECT, SWAP = step("event", "page"), step("track", "connect"), step("track", "swap")


def exclude(
    type_: str, event: str, from_step: int, to_step: int, *filters: tuple[str, str, str]
) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": type_, "event": event, "from_step": from_step, "to_step": to_step}
    if filters:
        spec["filters"] = [{"operand": o, "operator": op, "value": v} for o, op, v in filters]
    return spec


def closed(*steps: dict[str, Any], exclusions: list[dict[str, Any]], **params: Any) -> FunnelQuery:
    return funnel_query(
        list(steps), window_seconds=60, exclusions=orjson.dumps(exclusions).decode(), **params
    )


def page(ts: int, user: str = "u") -> Event:
    return ev(user, ts, "page")


def track(ts: int, name: str, user: str = "u", **props: Any) -> Event:
    return ev(user, ts, "track", name, props=props)


MINT_2_3 = [exclude("track", "mint", 2, 3)]


@dataclass(frozen=True)
class Case:
    name: str
    events: list[Event]
    query: FunnelQuery
    users: list[int]
    from_previous: list[float | None] | None = None


CASES = [
    Case(
        "a later from-step re-arms: page, connect, mint, connect, swap converts through the second connect",
        [
            page(T),
            track(T + S, "connect"),
            track(T + 2 * S, "mint"),
            track(T + 3 * S, "connect"),
            track(T + 4 * S, "swap"),
        ],
        closed(PAGE, CONNECT, SWAP, exclusions=MINT_2_3),
        users=[1, 1, 1],
        from_previous=[None, 3.0, 1.0],
    ),
    Case(
        "the path takes each step at its first event after the previous one, as without exclusions",
        [page(T), track(T + S, "connect"), track(T + 2 * S, "connect"), track(T + 4 * S, "swap")],
        closed(PAGE, CONNECT, SWAP, exclusions=MINT_2_3),
        users=[1, 1, 1],
        from_previous=[None, 1.0, 3.0],
    ),
    Case(
        "without a re-arm the user stops at to_step - 1",
        [page(T), track(T + S, "connect"), track(T + 2 * S, "mint"), track(T + 4 * S, "swap")],
        closed(PAGE, CONNECT, SWAP, exclusions=MINT_2_3),
        users=[1, 1, 0],
        from_previous=[None, 1.0, None],
    ),
    Case(
        "an exclusion before the from-step does not count",
        [page(T), track(T + S, "mint"), track(T + 2 * S, "connect"), track(T + 3 * S, "swap")],
        closed(PAGE, CONNECT, SWAP, exclusions=MINT_2_3),
        users=[1, 1, 1],
    ),
    Case(
        "an exclusion after the to-step does not count",
        [page(T), track(T + S, "connect"), track(T + 2 * S, "swap"), track(T + 3 * S, "mint")],
        closed(PAGE, CONNECT, SWAP, exclusions=MINT_2_3),
        users=[1, 1, 1],
    ),
    Case(
        "in the from-step's millisecond the exclusion counts as before it: no effect",
        [page(T), track(T + S, "mint"), track(T + S, "connect"), track(T + 3 * S, "swap")],
        closed(PAGE, CONNECT, SWAP, exclusions=MINT_2_3),
        users=[1, 1, 1],
    ),
    Case(
        "in the to-step's millisecond the exclusion counts as before it: disqualifies",
        [page(T), track(T + S, "connect"), track(T + 3 * S, "swap"), track(T + 3 * S, "mint")],
        closed(PAGE, CONNECT, SWAP, exclusions=MINT_2_3),
        users=[1, 1, 0],
    ),
    Case(
        "an exclusion from step 1 to 3 caps the user at step 2; a new page re-arms",
        [page(T), track(T + S, "mint"), track(T + 2 * S, "connect"), track(T + 3 * S, "swap")],
        closed(PAGE, CONNECT, SWAP, exclusions=[exclude("track", "mint", 1, 3)]),
        users=[1, 1, 0],
    ),
    Case(
        "… a new page after the exclusion starts a chain that converts",
        [
            page(T),
            track(T + S, "mint"),
            page(T + 2 * S),
            track(T + 3 * S, "connect"),
            track(T + 5 * S, "swap"),
        ],
        closed(PAGE, CONNECT, SWAP, exclusions=[exclude("track", "mint", 1, 3)]),
        users=[1, 1, 1],
        from_previous=[None, 1.0, 2.0],
    ),
    Case(
        "an exclusion matching the from-step: a repeated page re-arms",
        [page(T), page(T + 2 * S), track(T + 3 * S, "connect")],
        closed(PAGE, CONNECT, exclusions=[exclude("event", "page", 1, 2)]),
        users=[1, 1],
        from_previous=[None, 1.0],
    ),
    Case(
        "an exclusion matching the to-step's own event disqualifies it",
        [page(T), track(T + S, "connect")],
        closed(PAGE, CONNECT, exclusions=[exclude("track", "connect", 1, 2)]),
        users=[1, 0],
    ),
    Case(
        "an exclusion's filters narrow it",
        [page(T), track(T + S, "mint", chain="ethereum"), track(T + 2 * S, "connect")],
        closed(PAGE, CONNECT, exclusions=[exclude("track", "mint", 1, 2, ("chain", "equals", "base"))]),
        users=[1, 1],
    ),
    Case(
        "two exclusions, each with its own steps",
        [
            page(T),
            track(T + S, "connect"),
            track(T + 2 * S, "swap"),
            track(T + 3 * S, "mint"),
            track(T + 4 * S, "approve"),
        ],
        closed(
            PAGE,
            CONNECT,
            SWAP,
            step("track", "approve"),
            exclusions=[exclude("track", "mint", 1, 2), exclude("track", "mint", 3, 4)],
        ),
        users=[1, 1, 1, 0],
    ),
    Case(
        "overlapping steps page → connect → page: a page between 1 and 2 re-arms, the last page is step 3",
        [page(T), page(T + S), track(T + 2 * S, "connect"), page(T + 3 * S)],
        closed(PAGE, CONNECT, PAGE, exclusions=[exclude("event", "page", 1, 2)]),
        users=[1, 1, 1],
        from_previous=[None, 1.0, 1.0],
    ),
    Case(
        "a user whose every attempt is disqualified still entered",
        [page(T), page(T + 5 * S), track(T + 6 * S, "mint"), track(T + 7 * S, "connect")],
        closed(PAGE, CONNECT, exclusions=[exclude("track", "mint", 1, 2)]),
        users=[1, 0],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_exclusion_case(store: EventStore, case: Case) -> None:
    load(store, case.events)
    sql, reference = both(store, case.query, case.events)
    for label, response in (("reference", reference), ("sql", sql)):
        assert column(response, "users") == case.users, label
        if case.from_previous is not None:
            assert column(response, "median_seconds_from_previous") == case.from_previous, label
    assert sql["data"] == reference["data"]


def test_no_exclusions_is_the_closed_funnel(store: EventStore) -> None:
    """An empty list is no exclusion: the same query as without the parameter."""
    assert closed(PAGE, CONNECT, exclusions=[]) == funnel_query([PAGE, CONNECT], window_seconds=60)


@pytest.mark.parametrize(
    ("exclusions", "params", "param"),
    [
        ("[{", {}, "exclusions"),
        ('{"type":"track"}', {}, "exclusions"),
        (orjson.dumps([exclude("track", "mint", 1, 2)] * 11).decode(), {}, "exclusions"),
        ('["x"]', {}, "exclusions.0"),
        (orjson.dumps([exclude("", "mint", 1, 2)]).decode(), {}, "exclusions.0.type"),
        (orjson.dumps([exclude("track", "mint", 0, 2)]).decode(), {}, "exclusions.0.from_step"),
        (orjson.dumps([exclude("track", "mint", 1, 3)]).decode(), {}, "exclusions.0.to_step"),
        (orjson.dumps([exclude("track", "mint", 2, 2)]).decode(), {}, "exclusions.0.to_step"),
        ('[{"type":"track","event":"mint","from_step":"1","to_step":2}]', {}, "exclusions.0.from_step"),
        ('[{"type":"track","event":"mint","from_step":1,"to_step":true}]', {}, "exclusions.0.to_step"),
        (
            orjson.dumps([exclude("track", "mint", 1, 2, ("price", "gt", "abc"))]).decode(),
            {},
            "exclusions.0.filters.0.value",
        ),
        (orjson.dumps(MINT_2_3[:1]).decode(), {"funnel_type": "open"}, "exclusions"),
        (orjson.dumps([exclude("track", "mint", 1, 2)]).decode(), {"funnel_type": "strict"}, "exclusions"),
    ],
)
def test_bad_exclusions_are_named(exclusions: str, params: dict[str, str], param: str) -> None:
    with pytest.raises(QueryValidationError) as error:
        funnel_query([PAGE, CONNECT], exclusions=exclusions, **params)
    assert param in error.value.details, error.value.details


# --- property tests: the SQL equals the oracle, which enumerates every chain ---

EXCLUSION_KINDS = [("track", "mint"), ("event", "page"), ("track", "connect"), ("event", "track")]
EXCLUSION_KINDS += [("transaction", "approve"), ("page", "home")]


@st.composite
def with_exclusions(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> Any:
    """A closed case with 1–3 exclusions, each between two of its steps, some matching its steps' events;
    after half the events an exclusion event (at the same time or just after, so ties are common), and
    after half of those the same event again (a step taken again after the exclusion: a re-arm)."""
    query, events, batches = draw(base)
    n = len(query.steps)
    specs = []
    for _ in range(draw(st.integers(1, 3))):
        type_, event = draw(st.sampled_from(EXCLUSION_KINDS))
        from_step = draw(st.integers(1, n - 1))
        spec: dict[str, Any] = {
            "type": type_,
            "event": event,
            "from_step": from_step,
            "to_step": draw(st.integers(from_step + 1, n)),
        }
        if draw(st.integers(0, 4)) == 0:
            spec["filters"] = [draw(filters())]
        specs.append(spec)
    extra = []
    for index, event in enumerate(events):
        if draw(st.booleans()):
            spec = draw(st.sampled_from(specs))
            type_, name = draw(st.sampled_from(stored_kinds(spec["type"], spec["event"])))
            ts = event.ts_ms + draw(st.sampled_from([0, 0, 1, -1, 500, 1000]))
            props = {"chain": draw(st.sampled_from(["ethereum", "base", ""]))}
            extra.append(
                replace(event, event_id=f"x{index:04d}", type=type_, event=name, ts_ms=ts, properties=props)
            )
            if draw(st.booleans()):  # the same step again just after the exclusion: a re-arm
                extra.append(
                    replace(event, event_id=f"y{index:04d}", ts_ms=ts + draw(st.sampled_from([0, 1, 999])))
                )
    steps = [
        {"type": s.type, "event": s.event, "name": s.name} | ({"filters": _filters(s)} if s.filters else {})
        for s in query.steps
    ]
    params = {
        "window_seconds": query.window_seconds,
        "breakdown": query.breakdown,
        "breakdown_top_n": query.breakdown_top_n if query.breakdown else None,
        "breakdown_attribution": query.breakdown_attribution if query.breakdown else None,
        "identity": query.identity,
    }
    rebuilt = funnel_query(
        steps,
        date_from=query.date_from.isoformat(),
        date_to=query.date_to.isoformat(),
        exclusions=orjson.dumps(specs).decode(),
        **params,
    )
    return rebuilt, draw(st.permutations(events + extra)), batches


def _filters(step: Any) -> list[dict[str, str]]:
    return [{"operand": f.operand, "operator": f.operator, "value": f.value} for f in step.filters]


def check(store: EventStore, case: Any) -> None:
    query, events, batches = case
    load(store, events, batches)
    sql, reference = both(store, query, events)
    assert sql["data"] == reference["data"]
    plain = reference_funnel(replace(query, exclusions=()), events)
    hypothesis.event(f"exclusions change the answer: {plain['data'] != reference['data']}")


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(150))
@given(
    case=with_exclusions(
        st.one_of(
            cases(exclusive_kinds(2, 4), ["closed"], filter_counts=(0, 0, 0, 1)),
            cases(exclusive_kinds(2, 4), ["closed"], walk=True, filter_counts=(0, 0, 0, 1)),
        )
    )
)
def test_exclusions_equal_reference(store: EventStore, case: Any) -> None:
    check(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(100))
@given(
    case=with_exclusions(
        st.one_of(
            cases(exclusive_kinds(2, 3), ["closed"], attributions=True),
            cases(overlapping_kinds(2, 3), ["closed"], attributions=True),
        )
    )
)
def test_exclusions_with_any_breakdown_and_attribution_equal_reference(store: EventStore, case: Any) -> None:
    """A breakdown by a column or an event property, attributed by first touch, last touch or step:K, on
    the path exclusions leave (step:K's value is the step-K event of that path)."""
    check(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(100))
@given(case=with_exclusions(cases(overlapping_kinds(2, 4), ["closed"], filter_counts=(0, 0, 0, 1))))
def test_exclusions_with_overlapping_steps_equal_reference(store: EventStore, case: Any) -> None:
    """page → connect → page and friends: one event may match several steps (and the exclusion)."""
    check(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(40))
@given(
    case=with_exclusions(
        cases(exclusive_kinds(5, 8), ["closed"], max_events=10, walk=True, filter_counts=(0,) * 15 + (1,))
    )
)
def test_exclusions_in_long_funnels_equal_reference(store: EventStore, case: Any) -> None:
    check(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(60))
@given(
    case=with_exclusions(with_identities(cases(exclusive_kinds(2, 4), ["closed"], filter_counts=(0, 0, 1))))
)
def test_exclusions_stitched_and_raw_equal_reference(store: EventStore, case: Any) -> None:
    check(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(60))
@given(
    case=with_exclusions(cases(st.one_of(exclusive_kinds(2, 4), overlapping_kinds(2, 3)), ["closed"])),
    which=st.integers(0, 2),
)
def test_exclusions_in_the_analyses_equal_reference(store: EventStore, case: Any, which: int) -> None:
    """Time to convert, trends and people share the funnel's per-user fold, exclusions included."""
    query, events, batches = case
    load(store, events, batches)
    raw = {
        "date_from": query.date_from.isoformat(),
        "date_to": query.date_to.isoformat(),
        "steps": orjson.dumps(
            [{"type": s.type, "event": s.event, "name": s.name, "filters": _filters(s)} for s in query.steps]
        ).decode(),
        "window_seconds": str(query.window_seconds),
        "identity": query.identity,
        "exclusions": orjson.dumps(
            [
                {"type": x.step.type, "event": x.step.event, "filters": _filters(x.step)}
                | {"from_step": x.from_step, "to_step": x.to_step}
                for x in query.exclusions
            ]
        ).decode(),
    } | (
        {"breakdown": query.breakdown, "breakdown_top_n": str(query.breakdown_top_n)}
        if query.breakdown
        else {}
    )
    if which == 0:
        ttc = parse_time_to_convert_query(raw)
        assert {**run_time_to_convert(store, ttc), "statistics": {}} == reference_time_to_convert(ttc, events)
    elif which == 1:
        trends = parse_trends_query(raw)
        now = at(30)
        assert {**run_trends(store, trends, now), "statistics": {}} == reference_trends(trends, events, now)
    else:
        people = parse_people_query(raw | {"step": "1", "outcome": "reached"})
        assert {**run_people(store, people), "statistics": {}} == reference_people(people, events)
