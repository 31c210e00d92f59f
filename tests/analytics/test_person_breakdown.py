"""`breakdown=person.<key>`: users grouped by a property of the identified model, the value of `<key>` on
their latest identify event (up to the end of the scan, however early; ties: the largest value).

Hand-made cases against the SQL and the oracle with the groups spelled out; then the property tests'
random funnels (every funnel type, overlapping steps, exclusions, hold_constant, stitched and raw) with
identify events added that set the key at random times, before `date_from` too, several per user with
different values and same-millisecond ties, compared with the oracle; the analyses (time to convert,
trends, people) and the cluster's two-level form the same way; the parameters' validation.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import hypothesis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnels.analytics.funnel import buckets_from_rows, build_response, run_funnel
from funnels.analytics.people import PeopleQuery, run_people
from funnels.analytics.query import FunnelQuery, QueryValidationError
from funnels.analytics.reference import (
    reference_funnel,
    reference_people,
    reference_time_to_convert,
    reference_trends,
)
from funnels.analytics.sql import funnel_sql
from funnels.analytics.time_to_convert import TimeToConvertQuery, run_time_to_convert
from funnels.analytics.trends import TrendsQuery, run_trends
from funnels.events import Event
from funnels.store.events import IDENTIFIES_TABLE, EventStore
from tests.analytics.conftest import DAY_MS, at, day, ev, funnel_query, load, step
from tests.analytics.test_exclusions import with_exclusions
from tests.analytics.test_hold_constant import holding
from tests.analytics.test_property import (
    ANONYMOUS_IDS,
    PROFILE,
    cases,
    examples,
    exclusive_kinds,
    overlapping_kinds,
    with_identities,
)
from tests.analytics.test_sql_cluster import MAX_SHARDS, simulated_sql, split

pytestmark = pytest.mark.timeout(900)

STEPS = [step("event", "page"), step("track", "connect")]


def grouped(response: dict[str, Any]) -> dict[str, list[int]]:
    """Each group's users per step."""
    groups: dict[str, list[int]] = {}
    for row in response["data"]:
        groups.setdefault(row["breakdown"], []).append(row["users"])
    return groups


def identify(user: str, ts: int, anonymous_id: str = "", **traits: Any) -> Event:
    return ev(user, ts, "identify", props=traits, anonymous_id=anonymous_id)


def check(store: EventStore, query: FunnelQuery, events: list[Event]) -> dict[str, list[int]]:
    load(store, events)
    sql, reference = run_funnel(store, query), reference_funnel(query, events)
    assert sql["meta"] == reference["meta"]
    assert sql["data"] == reference["data"]
    return grouped(sql)


def visits(*users: str, ts: int = at(0, 1000)) -> list[Event]:
    """A page and a connect a second later for each user: everyone converts."""
    return [e for user in users for e in (ev(user, ts, "page"), ev(user, ts + 1000, "track", "connect"))]


CASES: list[tuple[str, list[Event], dict[str, Any], dict[str, list[int]]]] = [
    (
        "identified before date_from: the value still holds",
        [*visits("a", "b"), identify("a", at(-400), plan="pro")],
        {},
        {"(none)": [1, 1], "pro": [1, 1]},
    ),
    (
        "several identifies: the latest with the key wins; one without it changes nothing",
        [
            *visits("a"),
            identify("a", at(-10), plan="free"),
            identify("a", at(0, 500), plan="pro"),
            identify("a", at(0, 5000), name="Ann"),
            identify("a", at(0, 6000), plan=""),
        ],
        {},
        {"pro": [1, 1]},
    ),
    (
        "a later identify (inside the window past date_to) counts; one after the scan's end does not",
        [
            *visits("a", "b"),
            identify("a", at(1, 5000), plan="team"),
            identify("b", at(0, 5000), plan="free"),
            identify("b", at(0) + DAY_MS + 60_000, plan="late"),
        ],
        {"window_seconds": "60"},
        {"free": [1, 1], "team": [1, 1]},
    ),
    (
        "ties in one millisecond: the largest value",
        [*visits("a"), identify("a", at(0, 7), plan="basic"), identify("a", at(0, 7), plan="pro")],
        {},
        {"pro": [1, 1]},
    ),
    (
        "integers and booleans as JSON spells them; floats, objects and null are no value",
        [
            *visits("a", "b", "c", "d"),
            identify("a", at(0), seats=5),
            identify("b", at(0), seats=True),
            identify("c", at(0), seats=2.5),
            identify("d", at(-1), seats="3"),
            identify("d", at(0), seats={"n": 3}),
        ],
        {"breakdown": "person.seats", "breakdown_top_n": "10"},
        {"(none)": [1, 1], "3": [1, 1], "5": [1, 1], "true": [1, 1]},
    ),
    (
        "not an event's value: a plan property on a track event is not the person's",
        [*visits("a"), ev("a", at(0, 5000), "track", "upgrade", props={"plan": "pro"})],
        {},
        {"(none)": [1, 1]},
    ),
    (
        "stitched: the anonymous visitor's funnel takes the user's identify",
        [
            ev("", at(0, 1000), "page", anonymous_id="anon"),
            ev("", at(0, 2000), "track", "connect", anonymous_id="anon"),
            identify("a", at(0, 3000), anonymous_id="anon", plan="pro"),
        ],
        {},
        {"pro": [1, 1]},
    ),
    (
        "raw: the anonymous key is its own user, without the identify's value",
        [
            ev("", at(0, 1000), "page", anonymous_id="anon"),
            ev("", at(0, 2000), "track", "connect", anonymous_id="anon"),
            identify("a", at(0, 3000), anonymous_id="anon", plan="pro"),
        ],
        {"identity": "raw"},
        {"(none)": [1, 1]},
    ),
    (
        "a key with dots is the whole rest of the parameter",
        [*visits("a"), identify("a", at(0), **{"billing.plan": "yearly"})],
        {"breakdown": "person.billing.plan"},
        {"yearly": [1, 1]},
    ),
    (
        "top N and Others as for any breakdown",
        [
            *visits("a", "b", "c"),
            identify("a", at(0), plan="pro"),
            identify("b", at(0), plan="pro"),
            identify("c", at(0), plan="free"),
        ],
        {"breakdown_top_n": "1"},
        {"pro": [2, 2], "Others": [1, 1]},
    ),
]


@pytest.mark.parametrize(("name", "events", "params", "groups"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("funnel_type", ["closed", "open", "strict"])
def test_person_breakdown_case(
    store: EventStore,
    name: str,
    events: list[Event],
    params: dict[str, Any],
    groups: dict[str, list[int]],
    funnel_type: str,
) -> None:
    params = {"breakdown": "person.plan"} | params
    query = funnel_query(STEPS, day(0), day(0), funnel_type=funnel_type, **params)
    assert check(store, query, events) == groups


def test_hold_constant_and_exclusions_keep_the_person_s_value(store: EventStore) -> None:
    events = [
        *visits("a", "b"),
        ev("b", at(0, 1500), "track", "refund"),
        identify("a", at(-3), plan="pro"),
        identify("b", at(-3), plan="free"),
    ]
    held = funnel_query(STEPS, breakdown="person.plan", hold_constant='["device"]')
    assert check(store, held, events) == {"free": [1, 1], "pro": [1, 1]}
    refund = '[{"type":"track","event":"refund","from_step":1,"to_step":2}]'
    excluded = funnel_query(STEPS, breakdown="person.plan", exclusions=refund)
    assert check(store, excluded, events) == {"free": [1, 0], "pro": [1, 1]}


def test_an_existing_breakdown_s_sql_has_no_identify_part() -> None:
    """Only a person breakdown reads identify events, from their own table (a column or event property
    breakdown is as before)."""
    for breakdown in ("device", "properties.plan", None):
        sql, _ = funnel_sql(funnel_query(STEPS, breakdown=breakdown))
        assert "identify" not in sql and "JOIN" not in sql
    sql, params = funnel_sql(funnel_query(STEPS, breakdown="person.plan"))
    assert sql.count(f" FROM {IDENTIFIES_TABLE} WHERE ") == 1 and "type = 'identify'" not in sql
    assert "plan" in params.values() and "plan" not in sql


@pytest.mark.parametrize(
    ("params", "param", "message"),
    [
        ({"breakdown": "person."}, "breakdown", "person.<key>"),
        ({"breakdown": "person"}, "breakdown", "person.<key>"),
        ({"breakdown": "person." + "k" * 1000}, "breakdown", "at most 1000 characters"),
        (
            {"breakdown": "person.plan", "breakdown_attribution": "last_touch"},
            "breakdown_attribution",
            "person",
        ),
        ({"breakdown": "person.plan", "breakdown_attribution": "step:2"}, "breakdown_attribution", "person"),
    ],
)
def test_bad_person_breakdowns_are_named(params: dict[str, str], param: str, message: str) -> None:
    with pytest.raises(QueryValidationError) as error:
        funnel_query(STEPS, **params)
    assert param in error.value.details and message in error.value.details[param], error.value.details


def test_first_touch_is_accepted_and_means_the_person_s_value() -> None:
    query = funnel_query(STEPS, breakdown="person.plan", breakdown_attribution="first_touch")
    assert query.breakdown_person == "plan" and query.breakdown_property is None


# --- property tests ---

PERSON_KEYS = ["person.plan", "person.plan", "person.chain", "person.price", "person.flag"]
PLANS = st.sampled_from(["free", "pro", "team", "", "Others", "(none)", 7, True, 2.5, None])


@st.composite
def with_plans(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> Any:
    """A case broken down by a person property, with 0–8 identify events that set `plan` (or other keys of
    the base's own identify events: `chain`, `price`, `flag`) for its users, anonymous ids and an unknown
    user: at the events' times (ties), a year before `date_from`, just before it, and after the scan."""
    query, events, batches = draw(base)
    users = sorted({event.user_id for event in events if event.user_id} | {"u9"})
    times = sorted({event.ts_ms for event in events})
    extra = []
    for index in range(draw(st.integers(0, 8))):
        when = draw(
            st.one_of(
                st.sampled_from(times).map(lambda t: t + draw(st.sampled_from([0, 0, 1, -1]))),
                st.sampled_from([at(-365), at(-1, DAY_MS - 1), query.scan_end_ms, query.scan_end_ms + 1]),
            )
        )
        anonymous = draw(st.sampled_from(["", *ANONYMOUS_IDS]))
        user = draw(st.sampled_from(users)) if not anonymous or draw(st.booleans()) else ""
        traits = {"plan": draw(PLANS)} | ({"chain": draw(PLANS)} if draw(st.booleans()) else {})
        extra.append(replace(identify(user, when, anonymous, **traits), event_id=f"i{index:04d}"))
    breakdown = draw(st.sampled_from(PERSON_KEYS))
    query = replace(query, breakdown=breakdown, breakdown_attribution="first_touch")
    hypothesis.event(f"identify events added: {len(extra)}")
    return query, draw(st.permutations(events + extra)), batches


def check_case(store: EventStore, case: Any) -> None:
    query, events, batches = case
    load(store, events, batches)
    sql, reference = run_funnel(store, query), reference_funnel(query, events)
    assert sql["data"] == reference["data"]
    hypothesis.event(f"groups: {min(len({row['breakdown'] for row in reference['data']}), 3)}")


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(120))
@given(
    case=with_plans(
        st.one_of(
            cases(exclusive_kinds(2, 4), ["closed", "open", "strict"]),
            cases(overlapping_kinds(2, 4), ["closed", "open", "strict"]),
        )
    )
)
def test_person_breakdowns_equal_reference(store: EventStore, case: Any) -> None:
    check_case(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(80))
@given(
    case=with_plans(
        with_identities(
            cases(st.one_of(exclusive_kinds(2, 3), overlapping_kinds(2, 3)), ["closed", "open", "strict"])
        )
    )
)
def test_person_breakdowns_stitched_and_raw_equal_reference(store: EventStore, case: Any) -> None:
    check_case(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(50))
@given(
    case=with_plans(
        st.one_of(
            with_exclusions(cases(st.one_of(exclusive_kinds(2, 3), overlapping_kinds(2, 3)), ["closed"])),
            holding(
                with_identities(cases(st.one_of(exclusive_kinds(2, 3), overlapping_kinds(2, 3)), ["closed"]))
            ),
            holding(with_identities(cases(exclusive_kinds(2, 3), ["strict"]))),
            holding(
                with_exclusions(cases(st.one_of(exclusive_kinds(2, 3), overlapping_kinds(2, 3)), ["closed"]))
            ),
        )
    )
)
def test_person_breakdowns_with_exclusions_and_hold_constant_equal_reference(
    store: EventStore, case: Any
) -> None:
    check_case(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(45))
@given(
    case=with_plans(
        with_identities(
            cases(st.one_of(exclusive_kinds(2, 3), overlapping_kinds(2, 3)), ["closed", "open", "strict"])
        )
    ),
    which=st.integers(0, 2),
    value=st.sampled_from([None, "pro", "(none)", "Others", "free"]),
)
def test_person_breakdowns_in_the_analyses_equal_reference(
    store: EventStore, case: Any, which: int, value: str | None
) -> None:
    """Time to convert, trends and people (one row's people too) take the same groups."""
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
        people = PeopleQuery(query, 1, "reached", 100, breakdown_value=value)
        assert {**run_people(store, people), "statistics": {}} == reference_people(people, events)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(30))
@given(
    case=with_plans(with_identities(cases(exclusive_kinds(2, 3), ["closed", "open", "strict"]))),
    shards=st.integers(2, MAX_SHARDS),
)
def test_person_breakdowns_on_shards_equal_one_table(store: EventStore, case: Any, shards: int) -> None:
    """Raw, on a cluster, each shard joins its users to their identifies: a user key's identify events are
    on its shard (the sharding key is its hash), so the two-level form is exact."""
    query, events, batches = case
    query = replace(query, identity="raw")
    load(store, events, batches)
    split(store, shards)
    sql, params = simulated_sql(query, shards)
    data = build_response(query, buckets_from_rows(query, store.query(sql, params).rows), {})["data"]
    assert data == run_funnel(store, query)["data"] == reference_funnel(query, events)["data"]
