"""Holding properties constant (`hold_constant`): named cases on both implementations, then property tests
of the SQL against the oracle, which tries every chain of events sharing the held values."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import hypothesis
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnels.analytics.people import PeopleQuery, run_people
from funnels.analytics.query import FunnelQuery, QueryValidationError
from funnels.analytics.reference import (
    reference_funnel,
    reference_people,
    reference_time_to_convert,
    reference_trends,
)
from funnels.analytics.time_to_convert import TimeToConvertQuery, run_time_to_convert
from funnels.analytics.trends import TrendsQuery, run_trends
from funnels.events import Event
from funnels.store.events import EventStore
from tests.analytics.conftest import at, both, column, ev, funnel_query, load, step
from tests.analytics.test_exclusions import with_exclusions
from tests.analytics.test_property import (
    PROFILE,
    cases,
    examples,
    exclusive_kinds,
    long_kinds,
    overlapping_kinds,
    with_identities,
)

# A failing example is shrunk for up to 5 minutes (Hypothesis' own limit): let it finish and report.
pytestmark = pytest.mark.timeout(900)

T = at(0, 10 * 3_600_000)
S = 1000
PAGE, CONNECT, SWAP = step("event", "page"), step("track", "connect"), step("track", "swap")


MINT_1_2 = [{"type": "track", "event": "mint", "from_step": 1, "to_step": 2}]


def held(*steps: dict[str, Any], hold: list[str], **params: Any) -> FunnelQuery:
    if "exclusions" in params:
        params["exclusions"] = orjson.dumps(params["exclusions"]).decode()
    return funnel_query(list(steps), window_seconds=60, hold_constant=orjson.dumps(hold).decode(), **params)


def event(ts: int, type_: str, name: str | None = None, chain: Any = None, **columns: str) -> Event:
    return ev("u", ts, type_, name, props={} if chain is None else {"chain": chain}, **columns)


@pytest.mark.parametrize(
    ("events", "query", "users", "from_previous"),
    [
        pytest.param(
            [event(T, "page", chain="base"), event(T + S, "track", "connect", chain="ethereum")],
            held(PAGE, CONNECT, hold=["properties.chain"]),
            [1, 0],
            [None, None],
            id="a different value breaks the conversion",
        ),
        pytest.param(
            [
                event(T, "page", chain="base"),
                event(T + S, "track", "connect", chain="ethereum"),
                event(T + 3 * S, "track", "connect", chain="base"),
            ],
            held(PAGE, CONNECT, hold=["properties.chain"]),
            [1, 1],
            [None, 3.0],
            id="a later event of the same value converts",
        ),
        pytest.param(
            [
                event(T, "page", chain="base"),
                event(T + S, "page", chain="ethereum"),
                event(T + 2 * S, "track", "connect", chain="base"),
            ],
            held(PAGE, CONNECT, hold=["properties.chain"]),
            [1, 1],
            [None, 2.0],
            id="the start of the value's chain, not the latest start overall",
        ),
        pytest.param(
            [event(T, "page"), event(T + S, "track", "connect")],
            held(PAGE, CONNECT, hold=["properties.chain"]),
            [1, 1],
            [None, 1.0],
            id="missing everywhere is one value",
        ),
        pytest.param(
            [event(T, "page", chain=1), event(T + S, "track", "connect", chain="1")],
            held(PAGE, CONNECT, hold=["properties.chain"]),
            [1, 1],
            [None, 1.0],
            id="values compare as string filters see them",
        ),
        pytest.param(
            [event(T, "page", device="mobile"), event(T + S, "track", "connect", device="desktop")],
            held(PAGE, CONNECT, hold=["device"]),
            [1, 0],
            [None, None],
            id="a standard column",
        ),
        pytest.param(
            [
                event(T, "track", "connect", chain="base"),
                event(T + S, "page", chain="base"),
                event(T + 2 * S, "page", chain="ethereum"),
            ],
            held(PAGE, CONNECT, hold=["properties.chain"], funnel_type="open"),
            [1, 1],
            [None, -1.0],
            id="open: any order, one value (base's steps; ethereum's page reaches step 1 only)",
        ),
        pytest.param(
            [event(T, "page", chain="base"), event(T + S, "track", "connect", chain="ethereum")],
            held(PAGE, CONNECT, hold=["properties.chain"], funnel_type="open"),
            [1, 0],
            [None, None],
            id="open: a different value breaks it too",
        ),
        # strict: consecutive events of the user, every step's of the start's value
        pytest.param(
            [event(T, "page", chain="base"), event(T + S, "track", "connect", chain="base")],
            held(PAGE, CONNECT, hold=["properties.chain"], funnel_type="strict"),
            [1, 1],
            [None, 1.0],
            id="strict: the very next event, of the same value",
        ),
        pytest.param(
            [
                event(T, "page", chain="base"),
                event(T + S, "track", "connect", chain="ethereum"),
                event(T + 2 * S, "track", "connect", chain="base"),
            ],
            held(PAGE, CONNECT, hold=["properties.chain"], funnel_type="strict"),
            [1, 0],
            [None, None],
            id="strict: another value's event in between breaks the chain",
        ),
        pytest.param(
            [
                event(T, "page", chain="base"),
                event(T + S, "track", "mint", chain="base"),
                event(T + 2 * S, "track", "connect", chain="base"),
            ],
            held(PAGE, CONNECT, hold=["properties.chain"], funnel_type="strict"),
            [1, 0],
            [None, None],
            id="strict: any other event breaks it, as without hold_constant",
        ),
        pytest.param(
            [
                event(T, "page", chain="base"),
                event(T + S, "page", chain="ethereum"),
                event(T + 2 * S, "track", "connect", chain="ethereum"),
            ],
            held(PAGE, CONNECT, hold=["properties.chain"], funnel_type="strict"),
            [1, 1],
            [None, 1.0],
            id="strict: a later start of another value converts",
        ),
        pytest.param(
            [
                event(T, "page", chain="base"),
                event(T + S, "track", "connect", chain="ethereum"),
                event(T + S, "track", "connect", chain="base"),
            ],
            held(PAGE, CONNECT, hold=["properties.chain"], funnel_type="strict"),
            [1, 0],
            [None, None],
            id="strict: another value's event in a step's millisecond sorts first",
        ),
        # exclusions: any value's exclusion event disqualifies
        pytest.param(
            [
                event(T, "page", chain="base"),
                event(T + S, "track", "mint"),
                event(T + 2 * S, "track", "connect", chain="base"),
            ],
            held(PAGE, CONNECT, hold=["properties.chain"], exclusions=MINT_1_2),
            [1, 0],
            [None, None],
            id="exclusions: an exclusion event without the value disqualifies",
        ),
        pytest.param(
            [
                event(T, "page", chain="base"),
                event(T + S, "track", "mint", chain="ethereum"),
                event(T + 2 * S, "track", "connect", chain="base"),
            ],
            held(PAGE, CONNECT, hold=["properties.chain"], exclusions=MINT_1_2),
            [1, 0],
            [None, None],
            id="exclusions: one of another value too",
        ),
        pytest.param(
            [
                event(T, "page", chain="base"),
                event(T + S, "track", "mint"),
                event(T + 2 * S, "page", chain="ethereum"),
                event(T + 3 * S, "track", "connect", chain="base"),
                event(T + 4 * S, "track", "connect", chain="ethereum"),
            ],
            held(PAGE, CONNECT, hold=["properties.chain"], exclusions=MINT_1_2),
            [1, 1],
            [None, 2.0],
            id="exclusions: a later start of another value re-arms",
        ),
        pytest.param(
            [
                event(T, "page", chain="base"),
                event(T + S, "track", "connect", chain="ethereum"),
                event(T + 2 * S, "track", "mint"),
                event(T + 3 * S, "track", "connect", chain="base"),
            ],
            held(PAGE, CONNECT, hold=["properties.chain"], exclusions=MINT_1_2),
            [1, 0],
            [None, None],
            id="exclusions: another value's step does not convert, the exclusion still counts",
        ),
    ],
)
def test_hold_constant_case(
    store: EventStore,
    events: list[Event],
    query: FunnelQuery,
    users: list[int],
    from_previous: list[float | None],
) -> None:
    load(store, events)
    sql, reference = both(store, query, events)
    for label, response in (("reference", reference), ("sql", sql)):
        assert column(response, "users") == users, label
        assert column(response, "median_seconds_from_previous") == from_previous, label
    assert sql["data"] == reference["data"]


@pytest.mark.parametrize(
    ("value", "params", "param"),
    [
        ("[", {}, "hold_constant"),
        ("[]", {}, "hold_constant"),
        ('["properties.a","properties.b","properties.c","device"]', {}, "hold_constant"),
        ('["chain"]', {}, "hold_constant.0"),
        ('["properties."]', {}, "hold_constant.0"),
        ("[1]", {}, "hold_constant.0"),
        # exclusions are still refused with a strict funnel, held values or not
        (
            '["device"]',
            {"funnel_type": "strict", "exclusions": orjson.dumps(MINT_1_2).decode()},
            "exclusions",
        ),
    ],
)
def test_bad_hold_constant_is_named(value: str, params: dict[str, str], param: str) -> None:
    with pytest.raises(QueryValidationError) as error:
        funnel_query([PAGE, CONNECT], hold_constant=value, **params)
    assert param in error.value.details, error.value.details


@pytest.mark.parametrize(
    "params",
    [{"funnel_type": "strict"}, {"exclusions": orjson.dumps(MINT_1_2).decode()}],
    ids=["strict", "exclusions"],
)
def test_hold_constant_with_strict_or_exclusions_is_accepted(params: dict[str, str]) -> None:
    query = funnel_query([PAGE, CONNECT], hold_constant='["device"]', **params)
    assert query.hold_constant == ("device",)


HELD = [["properties.chain"], ["device"], ["utm_source", "properties.chain"], ["properties.flag"]]


@st.composite
def holding(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> Any:
    query, events, batches = draw(base)
    return replace(query, hold_constant=tuple(draw(st.sampled_from(HELD)))), events, batches


def check(store: EventStore, case: Any) -> None:
    query, events, batches = case
    load(store, events, batches)
    sql, reference = both(store, query, events)
    assert sql["data"] == reference["data"]
    plain = reference_funnel(replace(query, hold_constant=()), events)
    hypothesis.event(f"holding changes the answer: {plain['data'] != reference['data']}")


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(120))
@given(
    case=holding(
        st.one_of(
            cases(exclusive_kinds(2, 4), ["closed", "open"], filter_counts=(0, 0, 1)),
            cases(overlapping_kinds(2, 4), ["closed", "open"], filter_counts=(0, 0, 1)),
            cases(long_kinds(), ["closed"], max_events=10, walk=True, filter_counts=(0,) * 15 + (1,)),
        )
    )
)
def test_hold_constant_equals_reference(store: EventStore, case: Any) -> None:
    check(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(120))
@given(
    case=holding(
        st.one_of(
            cases(
                st.one_of(exclusive_kinds(2, 4), overlapping_kinds(2, 3)), ["strict"], filter_counts=(0, 0, 1)
            ),
            cases(long_kinds(), ["strict"], max_events=10, walk=True, filter_counts=(0,) * 15 + (1,)),
        )
    )
)
def test_strict_hold_constant_equals_reference(store: EventStore, case: Any) -> None:
    """Strict: every event of the user stands between steps, whatever its value; each step's event has the
    start's values (another value's event in a step's millisecond sorts first, as one matching no step)."""
    check(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(120))
@given(
    case=holding(
        with_exclusions(
            st.one_of(
                cases(exclusive_kinds(2, 4), ["closed"], filter_counts=(0, 0, 0, 1)),
                cases(exclusive_kinds(2, 4), ["closed"], walk=True, filter_counts=(0, 0, 0, 1)),
                cases(overlapping_kinds(2, 4), ["closed"], filter_counts=(0, 0, 0, 1)),
            )
        )
    )
)
def test_exclusions_hold_constant_equals_reference(store: EventStore, case: Any) -> None:
    """Exclusions: an exclusion event of any value (or none) disqualifies the chains of every value."""
    check(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(100))
@given(
    case=holding(
        st.one_of(
            cases(
                st.one_of(exclusive_kinds(2, 3), overlapping_kinds(2, 3)),
                ["closed", "open", "strict"],
                attributions=True,
            ),
            with_exclusions(
                cases(
                    st.one_of(exclusive_kinds(2, 3), overlapping_kinds(2, 3)), ["closed"], attributions=True
                )
            ),
        )
    )
)
def test_hold_constant_with_any_breakdown_equals_reference(store: EventStore, case: Any) -> None:
    """A breakdown by a column or an event property: by first or last touch the user's value over all
    their groups, with step:K the value on the winning group's own path."""
    check(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(60))
@given(
    case=holding(
        st.one_of(
            with_identities(
                cases(st.one_of(exclusive_kinds(2, 4), overlapping_kinds(2, 3)), ["closed", "open", "strict"])
            ),
            with_exclusions(
                with_identities(cases(exclusive_kinds(2, 4), ["closed"], filter_counts=(0, 0, 1)))
            ),
        )
    )
)
def test_hold_constant_stitched_and_raw_equal_reference(store: EventStore, case: Any) -> None:
    check(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(45))
@given(
    case=holding(
        st.one_of(
            cases(
                st.one_of(exclusive_kinds(2, 4), overlapping_kinds(2, 3)),
                ["closed", "open", "strict"],
                attributions=True,
            ),
            with_exclusions(
                cases(
                    st.one_of(exclusive_kinds(2, 4), overlapping_kinds(2, 3)), ["closed"], attributions=True
                )
            ),
        )
    ),
    which=st.integers(0, 2),
)
def test_hold_constant_in_the_analyses_equals_reference(store: EventStore, case: Any, which: int) -> None:
    """Time to convert, trends and people share the funnel's per-user SQL, held values included."""
    query, events, batches = case
    load(store, events, batches)
    if which == 0:
        ttc = TimeToConvertQuery(query, 1, len(query.steps))
        assert {**run_time_to_convert(store, ttc), "statistics": {}} == reference_time_to_convert(ttc, events)
    elif which == 1:
        trends = TrendsQuery(query, "day")
        now = at(30)
        assert {**run_trends(store, trends, now), "statistics": {}} == reference_trends(trends, events, now)
    else:
        people = PeopleQuery(query, 1, "reached", 100)
        assert {**run_people(store, people), "statistics": {}} == reference_people(people, events)
