"""`aggregate_by=<model>`: funnels that count a model's instances (organizations) instead of users.

The memberships are real: instances, ids and relationships in the state store (`funnels.store.identity`),
brought to the event store by `funnels.store.groups.load_groups`. Each case and each example uses models of
its own name, so the state store needs no emptying between them. The SQL path is compared with the oracle
(`reference_funnel` and friends, given the same memberships) on a table of cases and on random data.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import hypothesis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnels.analytics.funnel import run_funnel
from funnels.analytics.people import PeopleQuery, run_people
from funnels.analytics.query import FunnelQuery
from funnels.analytics.reference import (
    reference_funnel,
    reference_people,
    reference_time_to_convert,
    reference_trends,
)
from funnels.analytics.time_to_convert import TimeToConvertQuery, run_time_to_convert
from funnels.analytics.trends import TrendsQuery, run_trends
from funnels.events import Event
from funnels.services import Services
from funnels.store import groups as groups_store
from funnels.store import identity
from funnels.store.events import EventStore
from funnels.store.groups import load_groups
from tests.analytics.conftest import at, ev, funnel_query, load, step, users
from tests.analytics.test_property import (
    PROFILE,
    cases,
    examples,
    exclusive_kinds,
    overlapping_kinds,
    with_identities,
)

_models = itertools.count()
FUNNEL = [step("event", "page"), step("track", "signup"), step("track", "api_call")]


def organizations(
    services: Services,
    groups: dict[str, Sequence[str]],
    members: dict[str, Sequence[str]],
    relations: Sequence[tuple[str, str]],
) -> tuple[str, dict[str, set[str]]]:
    """Instances of a new organization model (`groups`: primary id → its other ids) and of a new customer
    model (`members`, likewise), and relationships (an id of an organization, an id of a customer: either
    may name no instance). Returns the organization model's name and the memberships the rule gives (every
    id of a related customer, and each organization's own ids → the organization's primary id)."""
    number = next(_models)
    org, customer = f"organization{number}", f"customer{number}"
    with services.state.write() as connection:
        for model, instances in ((org, groups), (customer, members)):
            for primary, more in instances.items():
                key = identity.create_instance(connection, model, primary, None, "{}", 1)
                identity.claim_ids(connection, model, [primary, *more], key, 0)
        identity.relate(connection, [identity.Relationship(org, g, customer, c) for g, c in relations], 1)
    owner = {i: p for p, more in groups.items() for i in (p, *more)}
    member_of = {i: p for p, more in members.items() for i in (p, *more)}
    expected: dict[str, set[str]] = defaultdict(set)
    for primary, more in groups.items():
        for id_ in (primary, *more):
            expected[id_].add(primary)
    for g, c in relations:
        if g in owner and c in member_of:
            for id_ in (member_of[c], *members[member_of[c]]):
                expected[id_].add(owner[g])
    return org, dict(expected)


def run(services: Services, query: FunnelQuery) -> dict[str, Any]:
    assert query.aggregate_by is not None
    load_groups(services.state, services.events, query.aggregate_by)
    return run_funnel(services.events, query)


def test_memberships_follow_relationships_both_ways_and_skip_missing_instances(services: Services) -> None:
    org, expected = organizations(
        services,
        {"acme": ["acme-inc"], "globex": []},
        {"c1": ["c1-email"], "c2": [], "c3": []},
        [("acme", "c1"), ("acme-inc", "c2"), ("globex", "c2"), ("ghost", "c3"), ("globex", "nobody")],
    )
    with services.state.read() as connection:
        found = identity.memberships(connection, org)
    assert found == sorted((m, g) for m, gs in expected.items() for g in gs)
    assert ("c1-email", "acme") in found and ("c2", "globex") in found and ("c2", "acme") in found
    assert not any(member in ("c3", "nobody", "ghost") for member, _ in found)


def test_an_organization_counts_once_for_all_its_members(services: Services, store: EventStore) -> None:
    org, _ = organizations(
        services,
        {"acme": [], "globex": []},
        {"c1": [], "c2": [], "c3": [], "c4": []},
        [("acme", "c1"), ("acme", "c2"), ("globex", "c3")],
    )
    events = [
        ev("c1", at(0, 0), "page"),
        ev("c2", at(0, 1000), "track", "signup"),  # another member of acme continues acme's funnel
        ev("c1", at(0, 2000), "track", "api_call"),
        ev("c3", at(0, 0), "page"),
        ev("c4", at(0, 0), "page"),  # in no organization: not counted
        ev("c4", at(0, 1), "track", "signup"),
    ]
    load(store, events)
    query = funnel_query(FUNNEL, aggregate_by=org)
    assert users(run(services, query)) == [2, 1, 1]
    assert users(run_funnel(store, funnel_query(FUNNEL))) == [3, 1, 0]  # users, as before


def test_memberships_load_in_slices(
    services: Services, store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More memberships than one INSERT takes (one array parameter holds at most 1,000,000 elements; here
    the slice is made 2): every slice is loaded, so every member counts."""
    monkeypatch.setattr(groups_store, "INSERT_SLICE", 2)
    org, expected = organizations(
        services,
        {"acme": [], "globex": []},
        {f"c{i}": [] for i in range(5)},
        [*(("acme", f"c{i}") for i in range(4)), ("globex", "c4")],
    )
    assert len(expected) > 2 * groups_store.INSERT_SLICE
    load(store, [ev(f"c{i}", at(0, i), "page") for i in range(5)])
    assert users(run(services, funnel_query(FUNNEL, aggregate_by=org)))[0] == 2
    people = run_people(store, PeopleQuery(funnel_query(FUNNEL, aggregate_by=org)))
    assert sorted(row["user_key"] for row in people["data"]) == ["acme", "globex"]


@st.composite
def grouped(draw: st.DrawFn, base: st.SearchStrategy[tuple[FunnelQuery, list[Event], int]]) -> Any:
    """A case and random memberships: organizations g0..g2 (g0 also named `g0-alt`), customers for some of
    the events' user ids (some with a second id `<id>-alt` that some of their events carry instead), each
    related to none, one or two organizations (by any of their ids), and pairs naming missing instances."""
    query, events, batches = draw(base)
    user_ids = sorted({event.user_id for event in events if event.user_id} | {"u9"})
    customers = {user: [f"{user}-alt"] if draw(st.booleans()) else [] for user in user_ids}
    customers = {user: more for user, more in customers.items() if draw(st.integers(0, 5))}
    group_ids = ["g0", "g0-alt", "g1", "g2", "ghost"]
    relations = []
    for user, more in customers.items():
        count = draw(st.sampled_from([0, 1, 1, 1, 2]))
        for group in draw(st.lists(st.sampled_from(group_ids), min_size=count, max_size=count, unique=True)):
            relations.append((group, draw(st.sampled_from([user, *more]))))
    relations += [(draw(st.sampled_from(group_ids)), "nobody")] if draw(st.booleans()) else []
    moved = []
    for event in events:  # some events under the customer's other id (sent by Segment, say)
        more = customers.get(event.user_id, [])
        if more and event.user_key == event.user_id and draw(st.integers(0, 3)) == 0:
            event = replace(event, user_id=more[0], user_key=more[0])
        moved.append(event)
    return query, moved, batches, customers, relations


def check_grouped(services: Services, case: Any) -> None:
    query, events, batches, customers, relations = case
    org, memberships = organizations(services, {"g0": ["g0-alt"], "g1": [], "g2": []}, customers, relations)
    query = replace(query, aggregate_by=org)
    load(services.events, events, batches)
    sql = run(services, query)
    assert sql["data"] == reference_funnel(query, events, memberships)["data"]
    hypothesis.event(f"groups entered: {max((row['total'] for row in sql['data']), default=0)}")


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(60))
@given(
    case=grouped(
        st.one_of(
            cases(exclusive_kinds(), ["closed", "open", "strict"]),
            cases(overlapping_kinds(2, 3), ["closed"]),
            with_identities(cases(exclusive_kinds(2, 3), ["closed", "open", "strict"], attributions=True)),
        )
    )
)
def test_aggregated_funnels_equal_reference(services: Services, case: Any) -> None:
    """Random memberships (a customer in two organizations, in none, related by another of its ids, pairs
    naming nobody), raw and stitched ids, breakdowns with every attribution, every funnel type."""
    check_grouped(services, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(30))
@given(
    case=grouped(
        st.one_of(
            cases(exclusive_kinds(2, 3), ["closed", "open", "strict"]),
            with_identities(cases(exclusive_kinds(2, 3), ["closed", "open"], attributions=True)),
        )
    ),
    outcome=st.sampled_from(["reached", "converted", "dropped"]),
)
def test_aggregated_people_trends_and_time_to_convert_equal_reference(
    services: Services, case: Any, outcome: str
) -> None:
    """The analyses on the funnel's per-user SQL count groups too: people lists the groups' primary ids
    (ordered by their hash, paged), trends and time to convert count groups per period and per value."""
    query, events, batches, customers, relations = case
    org, memberships = organizations(services, {"g0": ["g0-alt"], "g1": [], "g2": []}, customers, relations)
    query = replace(query, aggregate_by=org)
    load(services.events, events, batches)
    load_groups(services.state, services.events, org)
    store = services.events
    n = len(query.steps)
    people = PeopleQuery(query, step=2 if outcome == "dropped" else 1, outcome=outcome, limit=2)  # type: ignore[arg-type]
    sql_people, reference = run_people(store, people), reference_people(people, events, memberships)
    assert sql_people | {"statistics": {}} == reference
    trends = TrendsQuery(query, "day")
    sql_trends = run_trends(store, trends, at(30))
    assert sql_trends["data"] == reference_trends(trends, events, at(30), memberships)["data"]
    ttc = TimeToConvertQuery(query, from_step=1, to_step=n)
    assert (
        run_time_to_convert(store, ttc)["data"] == reference_time_to_convert(ttc, events, memberships)["data"]
    )


def test_people_lists_the_groups_primary_ids(services: Services, store: EventStore) -> None:
    org, _ = organizations(
        services,
        {"acme": ["acme-inc"], "globex": []},
        {"c1": [], "c2": []},
        [("acme-inc", "c1"), ("globex", "c2")],
    )
    load(store, [ev("c1", at(0), "page"), ev("c2", at(0, 5), "page"), ev("c2", at(0, 9), "track", "signup")])
    query = funnel_query(FUNNEL, aggregate_by=org)
    load_groups(services.state, store, org)
    body = run_people(store, PeopleQuery(query))
    assert sorted(row["user_key"] for row in body["data"]) == ["acme", "globex"]
    dropped = run_people(store, PeopleQuery(query, step=2, outcome="dropped"))
    assert [row["user_key"] for row in dropped["data"]] == ["acme"]


def test_exclusions_hold_constant_and_strict_fold_the_groups_events_together(
    services: Services, store: EventStore
) -> None:
    """One stream per group, whichever member sent each event: another member's exclusion event disqualifies
    the group's conversion, another member's event breaks a strict chain, held values compare across
    members. Each answer equals the oracle's and differs from the same funnel counting users."""
    org, memberships = organizations(
        services,
        {"acme": [], "globex": []},
        {"c1": [], "c2": [], "c3": [], "c4": []},
        [("acme", "c1"), ("acme", "c2"), ("globex", "c3"), ("globex", "c4")],
    )
    events = [
        ev("c1", at(0, 0), "page", props={"plan": "pro"}),
        ev("c2", at(0, 1000), "track", "refund"),  # acme: between c1's page and signup
        ev("c1", at(0, 2000), "track", "signup", props={"plan": "pro"}),
        ev("c1", at(0, 3000), "track", "api_call", props={"plan": "pro"}),
        ev("c3", at(0, 0), "page", props={"plan": "free"}),
        ev("c4", at(0, 1000), "track", "signup", props={"plan": "pro"}),  # globex: the plan changes
        ev("c3", at(0, 2000), "track", "api_call", props={"plan": "free"}),
    ]
    load(store, events)
    load_groups(services.state, store, org)
    excluded = '[{"type":"track","event":"refund","from_step":1,"to_step":2}]'
    plain = funnel_query(FUNNEL, aggregate_by=org)
    assert users(run_funnel(store, plain)) == [2, 2, 2]  # both organizations convert, one member or several
    for params in (
        {"exclusions": excluded},
        {"hold_constant": '["properties.plan"]'},
        {"funnel_type": "strict"},
    ):
        query = funnel_query(FUNNEL, aggregate_by=org, **params)
        body = run_funnel(store, query)
        assert users(body) == [2, 1, 1], params  # acme (excluded, strict) or globex (the plan) stops at 1
        assert body["data"] == reference_funnel(query, events, memberships)["data"]
    for params in (  # held together: acme's refund carries no plan, but stands between (strict) or excludes
        {"exclusions": excluded, "hold_constant": '["properties.plan"]'},
        {"funnel_type": "strict", "hold_constant": '["properties.plan"]'},
    ):
        query = funnel_query(FUNNEL, aggregate_by=org, **params)
        body = run_funnel(store, query)
        assert users(body) == [2, 0, 0], params
        assert body["data"] == reference_funnel(query, events, memberships)["data"]


def test_the_snapshotted_aggregate_by_sql_runs(services: Services, store: EventStore) -> None:
    """The SQL snapshotted in test_sql_snapshot.py (model `organization`) runs once the memberships are
    loaded, and its funnel equals the oracle's."""
    from tests.analytics.test_sql_snapshot import AGGREGATE_CASES, CASES

    with services.state.write() as connection:  # once per state store: the model's name is fixed here
        if not identity.memberships(connection, "organization"):
            for model, primary in [("organization", "acme"), ("customer", "u1"), ("customer", "u3")]:
                key = identity.create_instance(connection, model, primary, None, "{}", 1)
                identity.claim_ids(connection, model, [primary], key, 0)
            pairs = [identity.Relationship("organization", "acme", "customer", c) for c in ("u1", "u3")]
            identity.relate(connection, pairs, 1)
    t = at(0, 10 * 3_600_000)
    events = [
        ev("u1", t, "page"),
        ev("u3", t + 1000, "track", "connect"),
        ev("u1", t + 2000, "track", "swap", props={"chain": "ethereum"}),
        ev("u2", t, "page"),
    ]
    load(store, events)
    load_groups(services.state, store, "organization")
    memberships = {"acme": {"acme"}, "u1": {"acme"}, "u3": {"acme"}}
    query = replace(CASES["closed_exclusive"], aggregate_by="organization")
    body = run_funnel(store, query)
    assert users(body) == [1, 1, 1]  # acme, through u1 and u3; u2 in no organization
    assert body["data"] == reference_funnel(query, events, memberships)["data"]
    for name, (sql, params) in AGGREGATE_CASES.items():
        assert store.query(sql, params, persons=True).rows, name
