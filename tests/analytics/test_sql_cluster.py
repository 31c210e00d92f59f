"""The cluster layout's funnel (issue 13, 4(b)), simulated on chDB: no ClickHouse cluster can run here.

How the simulation works: the example's events are stored in the store's `events` table as usual, then
split over K tables (K = 2..4) `sim_events_0..K-1` by the Distributed table's own sharding expression,
`sipHash64(user_key) % K` (`funnels.store.cluster.SHARDING_KEY`; the Distributed engine picks shard
`key % K` when the K shards weigh the same). The SQL a cluster runs (`cluster_funnel_sql`) is
`... FROM cluster('NAME', view(S))`: here `cluster('NAME', view(S))` is replaced by
`(SELECT * FROM view(S_0) UNION ALL ... )`, where S_i is S with `events_local` swapped for shard i's
table, so every shard runs the per-shard text and the initiator's merge is the very text the cluster
runs. Its answer must equal the one-table `funnel_sql` answer and the plain-Python oracle: closed
(exclusive and overlapping steps), open, breakdowns with top N and Others, raw identity.

Stitched funnels on a cluster read the Distributed table as on one server (a person's keys may hash to
different shards): simulated with a Merge table over the same K tables (the union a Distributed read gives)
in place of `events`, they too equal the one-table answer and the oracle; so do funnels aggregated by a
model (tests/analytics/test_aggregate_by_cluster.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import hypothesis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnels.analytics.funnel import buckets_from_rows, build_response, run_funnel
from funnels.analytics.people import PeopleQuery, people_sql
from funnels.analytics.query import FunnelQuery
from funnels.analytics.reference import reference_funnel
from funnels.analytics.sql import (
    cluster_funnel_sql,
    cluster_tables,
    funnel_sql,
    funnel_statement,
    merged_funnel_sql,
    shard_funnel_sql,
)
from funnels.analytics.time_to_convert import TimeToConvertQuery, time_to_convert_sql
from funnels.analytics.trends import TrendsQuery, trends_sql
from funnels.events import Event
from funnels.store.cluster import SHARDING_KEY
from funnels.store.events import (
    EVENTS_DDL,
    GROUPS_DICTIONARY,
    IDENTIFIES_TABLE,
    PERSONS_DICTIONARY,
    SHARD_EVENTS,
    SHARD_IDENTIFIES,
    ClusterLayout,
    EventStore,
)
from tests.analytics.conftest import day, ev, funnel_query, load, step
from tests.analytics.test_exclusions import with_exclusions
from tests.analytics.test_hold_constant import holding
from tests.analytics.test_property import (
    PROFILE,
    cases,
    examples,
    exclusive_kinds,
    overlapping_kinds,
    with_identities,
)

pytestmark = pytest.mark.timeout(900)

LAYOUT = ClusterLayout("sim", "funnels")
MAX_SHARDS = 4
SIMULATED = "sim_events"  # the Merge table over the shards: what the Distributed `events` reads
SIMULATED_IDENTIFIES = "sim_identifies"  # and over the shards' identify events: `identify_events`


def shard_table(i: int) -> str:
    return f"{SIMULATED}_{i}"


def identifies_table(i: int) -> str:
    return f"{SIMULATED_IDENTIFIES}_{i}"


def split(store: EventStore, shards: int, key: str = SHARDING_KEY) -> list[int]:
    """Copy the stored events to `shards` tables by `key % shards` (the Distributed table's sharding
    expression unless told otherwise), and the identify events' table to `shards` more by the same key (as
    each shard's view fills its own); the rows each shard got. The Merge tables over each set are what the
    Distributed `events` and `identify_events` read."""
    for i in range(MAX_SHARDS):
        ddl = EVENTS_DDL.replace("TABLE IF NOT EXISTS events (", f"TABLE IF NOT EXISTS {shard_table(i)} (")
        store.execute(ddl)
        store.execute(f"CREATE TABLE IF NOT EXISTS {identifies_table(i)} AS {IDENTIFIES_TABLE}")
        for table in (shard_table(i), identifies_table(i)):
            store.execute(f"TRUNCATE TABLE {table}")
    for i in range(shards):
        store.execute(f"INSERT INTO {shard_table(i)} SELECT * FROM events WHERE {key} % {shards} = {i}")
        store.execute(
            f"INSERT INTO {identifies_table(i)} SELECT * FROM {IDENTIFIES_TABLE} WHERE {key} % {shards} = {i}"
        )
    counts = [int(store.query(f"SELECT count() FROM {shard_table(i)}").rows[0][0]) for i in range(shards)]
    assert sum(counts) == store.count()  # every row on exactly one shard
    for merged, source in ((SIMULATED, "events"), (SIMULATED_IDENTIFIES, IDENTIFIES_TABLE)):
        store.execute(
            f"CREATE TABLE IF NOT EXISTS {merged} AS {source} ENGINE = Merge(currentDatabase(), '^{merged}_[0-9]+$')"
        )
    return counts


def distributed(sql: str) -> str:
    """A query that reads the Distributed tables (`events`, `identify_events`) over the Merge tables of the
    shards' tables instead (after `split`)."""
    sql = sql.replace(f" FROM {IDENTIFIES_TABLE} WHERE ", f" FROM {SIMULATED_IDENTIFIES} WHERE ")
    return sql.replace(" FROM events WHERE ", f" FROM {SIMULATED} WHERE ")


def simulated_sql(query: FunnelQuery, shards: int) -> tuple[str, dict[str, Any]]:
    """The cluster's SQL with `cluster('sim', view(S))` replaced by the shards' S over their own tables."""
    sql, params = cluster_funnel_sql(query, LAYOUT)
    shard = shard_funnel_sql(query, {}, cluster_tables(LAYOUT))
    table_function = f"cluster('{LAYOUT.cluster}', view({shard}))"
    assert sql.count(table_function) == 1
    assert sql.count(LAYOUT.shard_events) == shard.count(LAYOUT.shard_events)  # only in the shards' SQL
    identifies = f" FROM {LAYOUT.database}.{SHARD_IDENTIFIES} "
    union = " UNION ALL ".join(
        "SELECT * FROM view("
        + shard.replace(f" FROM {LAYOUT.shard_events} ", f" FROM {shard_table(i)} ").replace(
            identifies, f" FROM {identifies_table(i)} "
        )
        + ")"
        for i in range(shards)
    )
    return sql.replace(table_function, f"({union})"), params


def simulated(store: EventStore, query: FunnelQuery, shards: int) -> list[dict[str, Any]]:
    sql, params = simulated_sql(query, shards)
    rows = store.query(sql, params).rows
    data: list[dict[str, Any]] = build_response(query, buckets_from_rows(query, rows), {})["data"]
    return data


def check(store: EventStore, case: tuple[FunnelQuery, list[Event], int], shards: int) -> None:
    query, events, batches = case
    query = replace(query, identity="raw")
    load(store, events, batches)
    counts = split(store, shards)
    hypothesis.event(f"shards holding rows: {sum(1 for count in counts if count)} of {shards}")
    one_table, reference = run_funnel(store, query), reference_funnel(query, events)
    assert simulated(store, query, shards) == one_table["data"] == reference["data"]


SHARDS = st.integers(2, MAX_SHARDS)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(40))
@given(
    case=st.one_of(
        cases(exclusive_kinds(), ["closed", "open"]),
        cases(overlapping_kinds(2, 4), ["closed"]),
        cases(
            st.one_of(exclusive_kinds(2, 3), overlapping_kinds(2, 3)),
            ["closed", "open", "strict"],
            bucket_names=True,
        ),
        cases(st.one_of(exclusive_kinds(), overlapping_kinds(2, 4)), ["strict"]),
    ),
    shards=SHARDS,
)
def test_the_two_level_funnel_on_shards_equals_one_table(store: EventStore, case: Any, shards: int) -> None:
    """Closed (exclusive, overlapping), strict and open funnels, breakdowns with top N, Others and values spelled
    like the buckets: the shards' partial rows, merged, give the one-table answer."""
    check(store, case, shards)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(30))
@given(
    case=holding(
        st.one_of(
            cases(st.one_of(exclusive_kinds(2, 3), overlapping_kinds(2, 3)), ["closed", "open", "strict"]),
            with_exclusions(cases(st.one_of(exclusive_kinds(2, 3), overlapping_kinds(2, 3)), ["closed"])),
        )
    ),
    shards=SHARDS,
)
def test_held_funnels_on_shards_equal_one_table(store: EventStore, case: Any, shards: int) -> None:
    """`hold_constant` in every funnel type and with exclusions: per user and value (strict and exclusions:
    each user's events once, folded per value) on each shard, merged."""
    check(store, case, shards)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(30))
@given(
    case=with_identities(
        st.one_of(
            cases(exclusive_kinds(), ["closed", "open", "strict"]),
            cases(overlapping_kinds(2, 4), ["closed", "strict"]),
        )
    ),
    shards=SHARDS,
)
def test_raw_identity_with_anonymous_keys_on_shards_equals_one_table(
    store: EventStore, case: Any, shards: int
) -> None:
    """Anonymous, identified and aliased rows, grouped raw: each user key is whole on its shard."""
    check(store, case, shards)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(25))
@given(case=with_identities(cases(exclusive_kinds(), ["closed", "open", "strict"])), shards=SHARDS)
def test_a_stitched_funnel_over_the_shards_equals_one_table(
    store: EventStore, case: Any, shards: int
) -> None:
    """A stitched funnel on a cluster reads the Distributed table, as on one server (`funnel_statement`);
    over a Merge table of the shards it gives the one-table answer, even where a person's keys went to
    different shards."""
    query, events, batches = case
    query = replace(query, identity="stitched")
    load(store, events, batches)
    split(store, shards)
    row = store.query("SELECT currentDatabase()").first()
    assert row is not None
    layout = ClusterLayout("sim", str(row[0]))  # the dictionary by its database, as the shards name it
    sql, params = funnel_statement(query, layout)
    one_server, one_server_params = funnel_sql(query)
    persons = f"'{PERSONS_DICTIONARY}'"
    assert (sql, params) == (
        one_server.replace(persons, f"'{row[0]}.{PERSONS_DICTIONARY}'"),
        one_server_params,
    )
    rows = store.query(distributed(sql), params, persons=True).rows
    data = build_response(query, buckets_from_rows(query, rows), {})["data"]
    assert data == run_funnel(store, query)["data"] == reference_funnel(query, events)["data"]


@settings(PROFILE, max_examples=examples(20))
@given(
    case=with_identities(
        cases(st.one_of(exclusive_kinds(), overlapping_kinds(2, 3)), ["closed", "open", "strict"])
    ),
    shards=SHARDS,
    analysis=st.sampled_from(["time_to_convert", "trends", "people"]),
)
def test_time_to_convert_and_trends_over_the_shards_equal_one_table(
    store: EventStore, case: Any, shards: int, analysis: str
) -> None:
    """Time to convert, trends and people on a cluster fold users on the initiator over the Distributed
    table, raw or stitched (`initiator_tables`): over a Merge table of the shards their rows are the
    one-table rows."""
    query, events, batches = case
    load(store, events, batches)
    split(store, shards)
    row = store.query("SELECT currentDatabase()").first()
    assert row is not None
    layout = ClusterLayout("sim", str(row[0]))
    n = len(query.steps)
    if analysis == "trends":
        on_cluster, one_table = (
            trends_sql(TrendsQuery(query, "day"), layout),
            trends_sql(TrendsQuery(query, "day")),
        )
    elif analysis == "people":
        listed = PeopleQuery(query, 1, "reached", limit=3)
        on_cluster, one_table = people_sql(listed, layout), people_sql(listed)
    else:
        measured = TimeToConvertQuery(query, 1, n, bins=3)
        on_cluster, one_table = time_to_convert_sql(measured, layout), time_to_convert_sql(measured)
    sql, params = on_cluster
    assert " FROM events WHERE " in sql and params == one_table[1]
    merged = distributed(sql)
    assert store.query(merged, params, persons=True).rows == store.query(*one_table, persons=True).rows


def by_database(sql: str, layout: ClusterLayout) -> str:
    """One server's SQL with the dictionaries named by the layout's database."""
    for name in (PERSONS_DICTIONARY, GROUPS_DICTIONARY):
        sql = sql.replace(f"'{name}'", f"'{layout.database}.{name}'")
    return sql


def test_only_raw_funnels_take_the_two_level_form() -> None:
    query = funnel_query(
        [step("event", "page"), step("track", "connect")], day(0), day(6), breakdown="device"
    )
    raw, _ = funnel_statement(replace(query, identity="raw"), LAYOUT)
    assert raw.count("cluster('sim', view(") == 1 and f"FROM funnels.{SHARD_EVENTS} WHERE" in raw
    assert funnel_statement(replace(query, identity="raw"), None) == funnel_sql(
        replace(query, identity="raw")
    )
    stitched = replace(query, identity="stitched")
    sql, params = funnel_statement(stitched, LAYOUT)
    assert "cluster(" not in sql and " FROM events WHERE " in sql and params == funnel_sql(stitched)[1]
    assert f"dictGetOrDefault('funnels.{PERSONS_DICTIONARY}'" in sql
    for identity in ("raw", "stitched"):  # aggregated by a model: a group's members may be on any shard
        grouped_query = replace(query, identity=identity, aggregate_by="organization")
        sql, params = funnel_statement(grouped_query, LAYOUT)
        assert "cluster(" not in sql and " FROM events WHERE " in sql
        assert (sql, params) == (
            by_database(funnel_sql(grouped_query)[0], LAYOUT),
            funnel_sql(grouped_query)[1],
        )
        assert f"dictGetOrDefault('funnels.{GROUPS_DICTIONARY}'" in sql


def test_only_rows_per_breakdown_value_leave_a_shard(store: EventStore) -> None:
    """A shard sends one row per breakdown value however many users it folds: 200 users, 3 devices."""
    events = [
        ev(f"u{i}", 1_775_001_600_000 + i, "page", device=("mobile", "desktop", "")[i % 3])
        for i in range(200)
    ]
    load(store, events)
    query = funnel_query(
        [step("event", "page"), step("track", "connect")], day(0), day(0), breakdown="device", identity="raw"
    )
    params: dict[str, Any] = {}
    shard = shard_funnel_sql(query, params)
    rows = store.query(shard, params).rows
    assert sorted((row[0], int(row[1])) for row in rows) == [("(none)", 66), ("desktop", 67), ("mobile", 67)]
    merged = merged_funnel_sql(query, f"view({shard})", params)  # one shard: the whole table
    answer = build_response(query, buckets_from_rows(query, store.query(merged, params).rows), {})
    assert answer["data"] == run_funnel(store, query)["data"]


def test_shards_holding_parts_of_a_user_would_undercount(store: EventStore) -> None:
    """Why the sharding key is a hash of the user key: sharded by event id instead, a user's page and
    connect land on different shards, neither shard sees the whole chain, and the merged answer loses the
    user at step 2. The simulation tells the two apart."""
    t = 1_775_001_600_000 + 3_600_000
    events = [ev("u1", t, "page", event_id="e-1"), ev("u1", t + 1000, "track", "connect", event_id="e-4")]
    events += [ev("u2", t, "page", event_id="e-3"), ev("u2", t + 1000, "track", "connect", event_id="e-5")]
    load(store, events)
    query = funnel_query([step("event", "page"), step("track", "connect")], day(0), day(0), identity="raw")
    assert split(store, 2, key="sipHash64(event_id)") == [2, 2]
    by_event = [row["users"] for row in simulated(store, query, 2)]
    split(store, 2)
    by_user = [row["users"] for row in simulated(store, query, 2)]
    assert by_user == [2, 2] == [row["users"] for row in run_funnel(store, query)["data"]]
    assert by_event != by_user


@pytest.mark.parametrize("funnel_type", ["closed", "open", "strict"])
@pytest.mark.parametrize("breakdown", [None, "utm_source"])
def test_the_cluster_sql_parses_in_the_target_version(
    store: EventStore, funnel_type: str, breakdown: str | None
) -> None:
    """`cluster(NAME, view(S))` cannot run on chDB (no cluster), but ClickHouse 26.9's parser reads it, with
    the shards' SELECT as the view's argument."""
    query = funnel_query(
        [step("event", "page"), step("track", "connect"), step("event", "page")],
        day(0),
        day(6),
        funnel_type=funnel_type,
        breakdown=breakdown,
        identity="raw",
    )
    sql, _ = cluster_funnel_sql(query, LAYOUT)
    row = store.query("SELECT formatQuerySingleLine({sql:String})", {"sql": sql}).first()
    assert row is not None and "FROM cluster('sim', view(SELECT " in row[0]
    assert "FROM funnels.events_local WHERE" in row[0]
