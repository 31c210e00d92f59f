"""`aggregate_by=<model>` on a ClickHouse cluster (issue 14), simulated on chDB as
tests/analytics/test_sql_cluster.py simulates the cluster: the events split over K tables by the
Distributed table's sharding expression, and a Merge table over them in place of the Distributed `events`.

A funnel aggregated by a model reads the Distributed table as on one server (a group's members, a person's
keys and a group's own identifies may sit on different shards), the shards looking each row's user up in
the memberships dictionary the layout makes on every node (`funnels.store.cluster.groups_ddl`; made here
without `ON CLUSTER` and replication, which chDB has not), named by the store's database as the shards
name it. Over the shards, funnels (raw and stitched, every type, breakdowns with attributions, held
values, exclusions, `breakdown=person.<key>`) and their analyses equal the one-table answer and the
plain-Python oracle given the same memberships (tests/analytics/test_aggregate_by.py's random ones).
How a load reaches every node is tested in tests/store/test_cluster.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import hypothesis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnels.analytics.funnel import buckets_from_rows, build_response, run_funnel
from funnels.analytics.people import PeopleQuery, people_sql, run_people
from funnels.analytics.reference import (
    reference_funnel,
    reference_people,
    reference_time_to_convert,
    reference_trends,
)
from funnels.analytics.sql import funnel_sql, funnel_statement
from funnels.analytics.time_to_convert import TimeToConvertQuery, run_time_to_convert, time_to_convert_sql
from funnels.analytics.trends import TrendsQuery, run_trends, trends_sql
from funnels.services import Services
from funnels.store.cluster import CLUSTER_REPLICA, groups_ddl
from funnels.store.events import GROUPS_DICTIONARY, ClusterLayout, EventStore
from funnels.store.groups import load_groups
from tests.analytics.conftest import at, load
from tests.analytics.test_aggregate_by import grouped, organizations
from tests.analytics.test_aggregate_by_person import with_group_plans
from tests.analytics.test_exclusions import with_exclusions
from tests.analytics.test_hold_constant import holding
from tests.analytics.test_person_breakdown import with_plans
from tests.analytics.test_property import (
    PROFILE,
    cases,
    examples,
    exclusive_kinds,
    overlapping_kinds,
    with_identities,
)
from tests.analytics.test_sql_cluster import SHARDS, by_database, distributed, split

pytestmark = pytest.mark.timeout(900)


def cluster_groups(store: EventStore) -> ClusterLayout:
    """The layout's memberships tables and dictionary (`groups_ddl`) made on this one server, without `ON
    CLUSTER` and replication (chDB has neither), in the store's database, which the returned layout names;
    `load_groups` then keeps them (a store makes its own only once, so it is told they are made)."""
    row = store.query("SELECT currentDatabase()").first()
    assert row is not None
    layout = ClusterLayout("sim", str(row[0]))
    for statement in groups_ddl(layout):
        local = statement.replace(f" {layout.on_cluster}", "")
        local = local.replace(f"ReplicatedMergeTree({CLUSTER_REPLICA})", "MergeTree")
        assert "CLUSTER" not in local and "Replicated" not in local, local
        store.execute(local)
    store.groups_created = True
    return layout


def pretend_cluster(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> ClusterLayout:
    """Make `store` say it is on a cluster whose database is its own, so the API, the CLI and `load_groups`
    take a cluster's path (`store.cluster`): the layout's memberships objects made (`cluster_groups`), and
    what it sends `ON CLUSTER` run here without the clause (`SYNC REPLICA`: no replica to wait for here).
    The funnel SQL then names the dictionaries by the database, over the one `events` table."""
    layout = cluster_groups(store)
    run = store._run

    def without_cluster(sql: str, params: Any = None) -> None:
        if not sql.startswith("SYSTEM SYNC REPLICA"):
            run(sql.replace(f" {layout.on_cluster}", ""), params)

    monkeypatch.setattr(store, "_run", without_cluster)
    monkeypatch.setattr(store, "cluster", layout)
    return layout


def on_cluster(store: EventStore, sql: str) -> str:
    """A query that reads the Distributed `events` and `identify_events` over the Merge tables of the
    shards' instead (`split` made them)."""
    assert sql.count(" FROM events") == sql.count(" FROM events WHERE ") > 0
    return distributed(sql)


def grouped_on_shards(services: Services, case: Any, identity: str, shards: int) -> tuple[Any, ...]:
    """A grouped case's memberships loaded into the layout's dictionary, its events split over the shards;
    (the query aggregated by the case's model with `identity`, the events, the memberships, the layout)."""
    store = services.events
    layout = cluster_groups(store)
    query, events, batches, customers, relations = case
    org, memberships = organizations(services, {"g0": ["g0-alt"], "g1": [], "g2": []}, customers, relations)
    query = replace(query, aggregate_by=org, identity=identity)
    load(store, events, batches)
    counts = split(store, shards)
    hypothesis.event(f"shards holding rows: {sum(1 for count in counts if count)} of {shards}")
    load_groups(services.state, store, org)
    return query, events, memberships, layout


GROUPED = st.one_of(
    grouped(
        st.one_of(
            cases(exclusive_kinds(), ["closed", "open", "strict"]),
            cases(overlapping_kinds(2, 3), ["closed"]),
            with_identities(cases(exclusive_kinds(2, 3), ["closed", "open", "strict"], attributions=True)),
            holding(with_identities(cases(exclusive_kinds(2, 3), ["closed"]))),
            with_exclusions(cases(st.one_of(exclusive_kinds(2, 3), overlapping_kinds(2, 3)), ["closed"])),
        )
    ),
    with_group_plans(  # breakdown=person.<key>: each group's own identifies
        grouped(with_plans(with_identities(cases(exclusive_kinds(2, 3), ["closed", "open", "strict"]))))
    ),
)
IDENTITIES = st.sampled_from(["raw", "stitched"])


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(40))
@given(case=GROUPED, identity=IDENTITIES, shards=SHARDS)
def test_aggregated_funnels_over_the_shards_equal_one_table_and_the_oracle(
    services: Services, case: Any, identity: str, shards: int
) -> None:
    """`aggregate_by` on a cluster reads the Distributed table as on one server (`funnel_statement`): the
    one-server SQL with both dictionaries named by their database; over a Merge table of the shards (a
    group's members, a person's keys, a group's own identifies on different shards) it gives the one-table
    answer and the oracle's: raw and stitched, every funnel type, breakdowns with attributions, held
    values, exclusions, `breakdown=person.<key>`."""
    query, events, memberships, layout = grouped_on_shards(services, case, identity, shards)
    store = services.events
    sql, params = funnel_statement(query, layout)
    one_server, one_server_params = funnel_sql(query)
    assert (sql, params) == (by_database(one_server, layout), one_server_params)
    assert "cluster(" not in sql and f"'{layout.database}.{GROUPS_DICTIONARY}'" in sql
    rows = store.query(on_cluster(store, sql), params, persons=True).rows
    data = build_response(query, buckets_from_rows(query, rows), {})["data"]
    assert data == run_funnel(store, query)["data"] == reference_funnel(query, events, memberships)["data"]
    hypothesis.event(f"groups entered: {max((row['total'] for row in data), default=0)}")


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(25))
@given(
    case=GROUPED,
    identity=IDENTITIES,
    shards=SHARDS,
    analysis=st.sampled_from(["time_to_convert", "trends", "people"]),
)
def test_aggregated_analyses_over_the_shards_equal_one_table_and_the_oracle(
    services: Services, case: Any, identity: str, shards: int, analysis: str
) -> None:
    """Time to convert, trends and people aggregated by a model on a cluster (`initiator_tables`): over a
    Merge table of the shards their rows are the one-table rows, and their answers the oracle's (people:
    the groups' primary ids, read from the memberships table on the node queried)."""
    query, events, memberships, layout = grouped_on_shards(services, case, identity, shards)
    store = services.events
    n = len(query.steps)
    if analysis == "trends":
        trends = TrendsQuery(query, "day")
        on_shards, one_table = trends_sql(trends, layout), trends_sql(trends)
        answer, expected = (
            run_trends(store, trends, at(30)),
            reference_trends(trends, events, at(30), memberships),
        )
    elif analysis == "people":
        people = PeopleQuery(query, 1, "reached", limit=3)
        on_shards, one_table = people_sql(people, layout), people_sql(people)
        answer = {**run_people(store, people), "statistics": {}}
        expected = reference_people(people, events, memberships)
    else:
        ttc = TimeToConvertQuery(query, 1, n, bins=3)
        on_shards, one_table = time_to_convert_sql(ttc, layout), time_to_convert_sql(ttc)
        answer, expected = (
            run_time_to_convert(store, ttc),
            reference_time_to_convert(ttc, events, memberships),
        )
    sql, params = on_shards
    assert (sql, params) == (by_database(one_table[0], layout), one_table[1])
    rows = store.query(on_cluster(store, sql), params, persons=True).rows
    assert rows == store.query(*one_table, persons=True).rows
    assert answer["data"] == expected["data"]
