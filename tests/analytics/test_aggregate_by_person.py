"""`aggregate_by=<model>` with `breakdown=person.<key>`: groups broken down by their own property, the value
of `<key>` on the latest identify of the group's instance itself (stored under its primary id) up to the
scan's end, `(none)` without one; a member's identify is not the group's.

The example of docs/semantics.md ("Counting a model's instances"), then random cases: the aggregate_by
property tests' memberships (tests/analytics/test_aggregate_by.py) with the person breakdown tests' identify
events for the members (tests/analytics/test_person_breakdown.py) and more under the groups' ids (the
primary ids, another id of a group, a missing group), compared with the oracle, in the funnel and in the
analyses.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import hypothesis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnels.analytics.funnel import run_funnel
from funnels.analytics.people import PeopleQuery, run_people
from funnels.analytics.query import QueryValidationError
from funnels.analytics.reference import (
    reference_funnel,
    reference_people,
    reference_time_to_convert,
    reference_trends,
)
from funnels.analytics.sql import funnel_sql
from funnels.analytics.time_to_convert import TimeToConvertQuery, run_time_to_convert
from funnels.analytics.trends import TrendsQuery, run_trends
from funnels.services import Services
from funnels.store.groups import load_groups
from tests.analytics.conftest import at, ev, funnel_query, load, step
from tests.analytics.test_aggregate_by import grouped, organizations
from tests.analytics.test_exclusions import with_exclusions
from tests.analytics.test_hold_constant import holding
from tests.analytics.test_person_breakdown import PLANS, identify, with_plans
from tests.analytics.test_property import (
    PROFILE,
    cases,
    examples,
    exclusive_kinds,
    overlapping_kinds,
    with_identities,
)

pytestmark = pytest.mark.timeout(900)

SIGN_UP = [step("track", "sign_up"), step("track", "api_call")]


def by_value(body: dict[str, Any]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for row in body["data"]:
        out.setdefault(row["breakdown"], []).append(row["users"])
    return out


def test_the_semantics_example(services: Services) -> None:
    """docs/semantics.md's table: acme's plan is its own latest identify's (however early; one without a
    plan changes nothing), a member's plan is not the organization's, globex has none."""
    org, memberships = organizations(
        services,
        {"acme": [], "globex": []},
        {"c1": ["c1@acme.test"], "c2": [], "c3": [], "c4": []},
        [("acme", "c1"), ("acme", "c2"), ("globex", "c3")],
    )
    events = [
        ev("c1@acme.test", at(0, 0), "track", "sign_up"),
        ev("c2", at(0, 60_000), "track", "api_call"),
        ev("c3", at(0, 0), "track", "sign_up"),
        ev("c4", at(0, 0), "track", "sign_up"),
        ev("c4", at(0, 5_000), "track", "api_call"),
        identify("acme", at(-86), plan="free"),
        identify("acme", at(-31), plan="pro"),
        identify("acme", at(0, 30_000), seats=5),
        identify("c1", at(0, 10_000), plan="team"),
        identify("c3", at(0, 5_000), plan="team"),
        identify("c4", at(0, 1_000), plan="team"),
    ]
    load(services.events, events)
    query = funnel_query(SIGN_UP, aggregate_by=org, breakdown="person.plan")
    load_groups(services.state, services.events, org)
    body = run_funnel(services.events, query)
    assert by_value(body) == {"(none)": [1, 0], "pro": [1, 1]}
    assert body["data"] == reference_funnel(query, events, memberships)["data"]
    by_user = run_funnel(services.events, funnel_query(SIGN_UP, breakdown="person.plan"))
    assert by_value(by_user) == {"(none)": [1, 0], "team": [2, 1]}  # c1@acme.test has no identify of its own
    people = run_people(services.events, PeopleQuery(query, breakdown_value="pro"))
    assert [(row["user_key"], row["breakdown"]) for row in people["data"]] == [("acme", "pro")]


def test_ties_and_the_scan_s_end_as_for_persons(services: Services) -> None:
    """The latest identify with a value up to the end of the scan (one after it does not count; ties in one
    millisecond: the largest value), stitched or raw alike; an identify under another id of the group is not
    stored under its primary id and does not count."""
    org, memberships = organizations(
        services, {"acme": ["acme-inc"], "globex": [], "initech": []}, {"c1": []}, [("acme", "c1")]
    )
    events = [
        ev("c1", at(0, 0), "track", "sign_up"),
        ev("globex", at(0, 0), "track", "sign_up"),
        ev("initech", at(0, 0), "track", "sign_up"),
        identify("acme", at(0, 7), plan="basic"),
        identify("acme", at(0, 7), plan="pro"),
        identify("acme-inc", at(0, 9), plan="team"),
        identify("globex", at(1, 60_000), plan="late"),
    ]
    load(services.events, events)
    load_groups(services.state, services.events, org)
    for identity in ("stitched", "raw"):
        query = funnel_query(
            SIGN_UP, aggregate_by=org, breakdown="person.plan", identity=identity, window_seconds=60
        )
        body = run_funnel(services.events, query)
        assert by_value(body) == {"(none)": [2, 0], "pro": [1, 0]}, identity
        assert body["data"] == reference_funnel(query, events, memberships)["data"]


def test_a_primary_id_that_is_also_another_group_s_member(services: Services) -> None:
    """`acme` is an organization and also a customer of globex (one id, two models): its identifies are
    acme's own (stored under acme's primary id), not globex's, though acme's events count for both."""
    org, memberships = organizations(
        services, {"acme": [], "globex": []}, {"acme": [], "c1": []}, [("globex", "acme"), ("acme", "c1")]
    )
    events = [
        ev("c1", at(0, 0), "track", "sign_up"),
        ev("acme", at(0, 0), "track", "sign_up"),
        identify("acme", at(0, 1), plan="pro"),
    ]
    load(services.events, events)
    load_groups(services.state, services.events, org)
    query = funnel_query(SIGN_UP, aggregate_by=org, breakdown="person.plan")
    body = run_funnel(services.events, query)
    assert by_value(body) == {"(none)": [1, 0], "pro": [1, 0]}
    assert body["data"] == reference_funnel(query, events, memberships)["data"]


def test_attribution_stays_refused() -> None:
    with pytest.raises(QueryValidationError) as error:
        funnel_query(
            SIGN_UP, aggregate_by="organization", breakdown="person.plan", breakdown_attribution="last_touch"
        )
    assert list(error.value.details) == ["breakdown_attribution"]


def test_only_the_combination_reads_identifies_by_the_key_s_hash() -> None:
    """The group's identifies are joined by the hash of their user key, not looked up as persons (the
    memberships dictionary only keeps the rows to the groups' primary ids); the same breakdown without
    aggregate_by, and aggregate_by without it, are as before."""
    sql, _ = funnel_sql(funnel_query(SIGN_UP, aggregate_by="organization", breakdown="person.plan"))
    identified = sql[sql.index("LEFT JOIN") :]
    assert "sipHash64(user_key) AS person" in identified and "identity_persons" not in identified
    assert "identity_groups_members" in identified and "arrayJoin" not in identified
    assert "identify" not in funnel_sql(funnel_query(SIGN_UP, aggregate_by="organization"))[0]


GROUP_KEYS = ["g0", "g0", "g0-alt", "g1", "g1", "g2", "ghost"]
GROUP_PLANS = st.sampled_from(["free", "pro", "pro", "team", "", "Others", 7, True, None])


@st.composite
def with_group_plans(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> Any:
    """A grouped case broken down by `person.plan` or `person.chain` (`with_plans`: identifies for the
    members), and 0–6 identify events under the groups' ids (the primary ids mostly, also another id of g0
    and a missing group; sometimes with an anonymous id): at the events' times (ties), long before, at and
    past the scan's end."""
    query, events, batches, customers, relations = draw(base)
    times = sorted({event.ts_ms for event in events}) or [at(0)]
    extra = []
    for index in range(draw(st.sampled_from([0, 2, 3, 4, 6]))):
        when = draw(
            st.one_of(
                st.sampled_from(times).map(lambda t: t + draw(st.sampled_from([0, 0, 1]))),
                st.sampled_from([at(-365), query.scan_end_ms, query.scan_end_ms + 1]),
            )
        )
        traits = {"plan": draw(GROUP_PLANS)} | ({"chain": draw(PLANS)} if draw(st.booleans()) else {})
        anonymous = draw(st.sampled_from(["", "", "a-g"]))
        group = draw(st.sampled_from(GROUP_KEYS))
        extra.append(replace(identify(group, when, anonymous, **traits), event_id=f"g{index:04d}"))
    hypothesis.event(f"group identifies: {len(extra)}")
    query = replace(query, breakdown=draw(st.sampled_from(["person.plan", "person.plan", "person.chain"])))
    return query, draw(st.permutations(events + extra)), batches, customers, relations


def setup(services: Services, case: Any) -> tuple[Any, list[Any], dict[str, set[str]]]:
    query, events, batches, customers, relations = case
    org, memberships = organizations(services, {"g0": ["g0-alt"], "g1": [], "g2": []}, customers, relations)
    query = replace(query, aggregate_by=org)
    load(services.events, events, batches)
    load_groups(services.state, services.events, org)
    return query, events, memberships


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(60))
@given(
    case=with_group_plans(
        grouped(
            with_plans(
                st.one_of(
                    cases(exclusive_kinds(2, 3), ["closed", "open", "strict"]),
                    cases(overlapping_kinds(2, 3), ["closed"]),
                    with_identities(cases(exclusive_kinds(2, 3), ["closed", "open", "strict"])),
                    holding(with_identities(cases(exclusive_kinds(2, 3), ["closed"]))),
                    with_exclusions(
                        cases(st.one_of(exclusive_kinds(2, 3), overlapping_kinds(2, 3)), ["closed"])
                    ),
                )
            )
        )
    )
)
def test_grouped_person_breakdowns_equal_reference(services: Services, case: Any) -> None:
    query, events, memberships = setup(services, case)
    sql = run_funnel(services.events, query)
    assert sql["data"] == reference_funnel(query, events, memberships)["data"]
    valued = {row["breakdown"] for row in sql["data"]} - {"(none)", "Others"}
    hypothesis.event(f"groups' values: {min(len(valued), 2)}")


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(30))
@given(
    case=with_group_plans(
        grouped(with_plans(with_identities(cases(exclusive_kinds(2, 3), ["closed", "open", "strict"]))))
    ),
    which=st.integers(0, 2),
    value=st.sampled_from([None, "pro", "(none)", "Others", "free"]),
)
def test_grouped_person_breakdowns_in_the_analyses_equal_reference(
    services: Services, case: Any, which: int, value: str | None
) -> None:
    """Time to convert, trends and people (one value's groups too) take the same groups and values."""
    query, events, memberships = setup(services, case)
    store = services.events
    if which == 0:
        ttc = TimeToConvertQuery(query, 1, len(query.steps))
        expected = reference_time_to_convert(ttc, events, memberships)
        assert run_time_to_convert(store, ttc)["data"] == expected["data"]
    elif which == 1:
        trends = TrendsQuery(query, "day")
        now = at(30)
        assert (
            run_trends(store, trends, now)["data"]
            == reference_trends(trends, events, now, memberships)["data"]
        )
    else:
        people = PeopleQuery(query, 1, "reached", 100, breakdown_value=value)
        assert {**run_people(store, people), "statistics": {}} == reference_people(
            people, events, memberships
        )
