"""The cluster layout (`funnels.store.cluster`): its DDL, snapshotted and parsed by the target version, how a
store recognises it, and, on a real cluster, the whole of it.

No ClickHouse cluster can run here (chDB has no `remote_servers` and no Keeper), so without one these prove
what can be proven in-process: the DDL text (snapshot in tests/store/snapshots/cluster_ddl.sql; regenerate
with FUNNELS_UPDATE_SNAPSHOTS=1 and review the diff), that every statement parses in ClickHouse 26.9
(`EXPLAIN AST`), the engine a store reads its layout from, and the refusals. The funnel SQL on the shards
is proven on chDB by tests/analytics/test_sql_cluster.py.

`test_real_cluster` runs the layout on a real cluster when both `FUNNELS_TEST_CLICKHOUSE_URL` (a server of
the cluster, as for tests/store/test_server_events.py) and `FUNNELS_TEST_CLICKHOUSE_CLUSTER` (the cluster's
name in that server's `remote_servers`, with `shard` and `replica` macros on every node and Keeper) are
set; it is skipped, saying so, when they are not.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from funnels.analytics.funnel import run_funnel
from funnels.analytics.reference import reference_funnel
from funnels.analytics.sql import funnel_statement
from funnels.services import Services
from funnels.store.cluster import (
    CLUSTER_REPLICA,
    INSERT_SETTINGS,
    WATERMARK,
    ClusterLayoutError,
    backfill_identifies,
    cluster_ddl,
    groups_ddl,
    identifies_behind,
    layout_of,
    reload_dictionary,
    sync_replica,
    truncate_statements,
)
from funnels.store.events import (
    GROUPS_DICTIONARY,
    GROUPS_LOADS,
    GROUPS_TABLE,
    IDENTIFIES_TABLE,
    PERSONS_DICTIONARY,
    ClusterLayout,
    EventStoreError,
)
from funnels.store.groups import load_groups
from funnels.store.identity import Relationship, relate
from funnels.store.server_events import ServerEventStore
from funnels.store.state import StateStore
from tests.analytics.conftest import at, day, ev, funnel_query, step
from tests.analytics.test_aggregate_by import organizations

SNAPSHOT = Path(__file__).parent / "snapshots" / "cluster_ddl.sql"
UPDATE = os.environ.get("FUNNELS_UPDATE_SNAPSHOTS") == "1"
LAYOUT = ClusterLayout("analytics", "funnels")
SOURCE = " USER 'funnels' PASSWORD 's3cret'"

REAL_SERVER = os.environ.get("FUNNELS_TEST_CLICKHOUSE_URL")
REAL_CLUSTER = os.environ.get("FUNNELS_TEST_CLICKHOUSE_CLUSTER")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ServerEventStore]:
    opened = ServerEventStore.on_chdb(tmp_path / "server")
    yield opened
    opened.close()


def groups_reload(layout: ClusterLayout) -> list[str]:
    """What a new load of memberships runs on a cluster (`ServerEventStore.reload_dictionary`), in order."""
    return [
        sync_replica(layout, GROUPS_LOADS),
        sync_replica(layout, GROUPS_TABLE),
        reload_dictionary(layout, GROUPS_DICTIONARY),
    ]


GROUPS_RELOAD = groups_reload(LAYOUT)
STATEMENTS = [
    *cluster_ddl(LAYOUT, SOURCE),
    *truncate_statements(LAYOUT),
    reload_dictionary(LAYOUT, PERSONS_DICTIONARY),
    *GROUPS_RELOAD,
]


def test_the_layout_ddl_snapshot() -> None:
    text = ";\n\n".join(STATEMENTS)
    if UPDATE:
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text + "\n")
    assert SNAPSHOT.read_text() == text + "\n", "the cluster DDL changed; if intended, regenerate (see above)"


def test_every_statement_parses_in_the_target_version(store: ServerEventStore) -> None:
    """ClickHouse's own parser (`formatQuery`) reads every statement, and writes its head (up to `ON
    CLUSTER`) back as we wrote it: the clause is where 26.9 expects it, not moved or dropped."""
    on_cluster = "ON CLUSTER analytics"
    for statement in STATEMENTS:
        row = store.query(
            "SELECT formatQuerySingleLine({statement:String})", {"statement": statement}
        ).first()
        assert row is not None, statement
        ours = " ".join(statement.replace("'analytics'", "analytics").split())
        head = ours[: ours.index(on_cluster) + len(on_cluster)]
        assert row[0].startswith(head), (row[0], head)


def test_the_layout_shards_by_the_user_key_and_replicates_the_links_everywhere() -> None:
    by_name = {statement.split(" ON CLUSTER")[0].split()[-1]: statement for statement in cluster_ddl(LAYOUT)}
    assert (
        "Distributed('analytics', 'funnels', 'events_local', sipHash64(user_key))"
        in by_name["funnels.events"]
    )
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/" in by_name["funnels.events_local"]
    assert "ORDER BY (user_key, ts, event_id)" in by_name["funnels.events_local"]
    for table in ("funnels.identity_links", "funnels.identity_keys_by_user"):
        assert "'/clickhouse/tables/all/{database}/{table}', '{shard}-{replica}'" in by_name[table]
    assert "FROM funnels.events_local" in by_name["funnels.identity_links_mv"]
    # the identify events as the events: each shard's own (fed from its events_local), a Distributed table over them
    assert (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/"
        in by_name["funnels.identify_events_local"]
    )
    assert (
        "TO funnels.identify_events_local AS SELECT user_key, ts, event_id, properties FROM funnels.events_local "
        "WHERE type = 'identify'" in by_name["funnels.identify_events_mv"]
    )
    assert (
        "Distributed('analytics', 'funnels', 'identify_events_local', sipHash64(user_key))"
        in by_name["funnels.identify_events"]
    )


def test_the_memberships_are_on_every_node() -> None:
    """`aggregate_by`'s tables replicated across the whole cluster (as the links), the dictionary on every
    node, named by its database, reading its node's copies, and checking them for changes as a backstop."""
    by_name = {statement.split(" ON CLUSTER")[0].split()[-1]: statement for statement in cluster_ddl(LAYOUT)}
    for table in ("funnels.identity_groups", "funnels.identity_groups_loads"):
        assert f"ENGINE = ReplicatedMergeTree({CLUSTER_REPLICA})" in by_name[table]
    dictionary = by_name["funnels.identity_groups_members"]
    assert "funnels.identity_groups_members ON CLUSTER 'analytics'" in dictionary
    assert (
        "FROM funnels.identity_groups WHERE" in dictionary
        and "FROM funnels.identity_groups_loads" in dictionary
    )
    assert "LIFETIME(MIN 30 MAX 60)" in dictionary and " INVALIDATE_QUERY 'SELECT " in dictionary
    assert cluster_ddl(LAYOUT, SOURCE)[-3:] == groups_ddl(LAYOUT, SOURCE)
    assert SOURCE in groups_ddl(LAYOUT, SOURCE)[-1]


def test_the_groups_reload_syncs_fetches_then_reloads_everywhere(store: ServerEventStore) -> None:
    """26.9 reads the statements back unchanged: `LIGHTWEIGHT` kept (wait for fetches only), the loads table
    synced before the memberships, the dictionary by its database."""
    for statement in GROUPS_RELOAD:
        row = store.query(
            "SELECT formatQuerySingleLine({statement:String})", {"statement": statement}
        ).first()
        assert row is not None and row[0] == statement.replace("'analytics'", "analytics")
    assert GROUPS_RELOAD[0].endswith("funnels.identity_groups_loads LIGHTWEIGHT")
    assert GROUPS_RELOAD[1].endswith("funnels.identity_groups LIGHTWEIGHT")
    assert GROUPS_RELOAD[2].endswith("funnels.identity_groups_members")


def on_one_server(statement: str, layout: ClusterLayout) -> str:
    """A statement of the layout as chDB can run it: no `ON CLUSTER`, no replication (no Keeper)."""
    local = statement.replace(f" {layout.on_cluster}", "")
    local = local.replace(f"ReplicatedMergeTree({CLUSTER_REPLICA})", "MergeTree")
    assert "CLUSTER" not in local and "Replicated" not in local, local
    return local


def test_load_groups_on_a_cluster(
    store: ServerEventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`load_groups` on a store whose `events` is a cluster's (simulated: the statements it sends ON CLUSTER
    are recorded, and run here without the clause; `SYNC REPLICA` has no replica to wait for here): a layout
    without the groups objects is refused, naming the command that adds them; then a new load is inserted,
    every node's replicas synced (the loads table first), the dictionary reloaded on every node, and only
    then the older loads deleted; another process (a fresh store object) reloads at the load it has not seen,
    without loading again; nothing is sent when nothing changed. The funnel equals the oracle's."""
    layout = ClusterLayout("analytics", store.database)
    monkeypatch.setattr(store, "cluster", layout)
    sent: list[str] = []
    run = store._run

    def record(sql: str, params: Any = None) -> None:
        sent.append(sql)
        if sql.startswith("SYSTEM SYNC REPLICA"):
            return
        run(sql.replace(f" {layout.on_cluster}", ""), params)

    monkeypatch.setattr(store, "_run", record)
    state = StateStore(tmp_path / "state.sqlite3")
    try:
        org, memberships = organizations(
            cast(Services, SimpleNamespace(state=state)),
            {"acme": [], "globex": []},
            {"c1": [], "c2": [], "c3": []},
            [("acme", "c1"), ("acme", "c2"), ("globex", "c3")],
        )
        with pytest.raises(EventStoreError, match="funnels events init --cluster analytics"):
            load_groups(state, store, org)
        for statement in groups_ddl(layout):
            store.execute(on_one_server(statement, layout))
        events = [
            ev("c1", at(0, 0), "page"),
            ev("c2", at(0, 1000), "track", "connect"),
            ev("c3", at(0, 0), "page"),
        ]
        store.insert_events(events)
        # the dictionary's backstop: one row of one value (what the server compares), which a load changes
        invalidate = re.search(r"INVALIDATE_QUERY '([^']+)'", groups_ddl(layout)[-1])
        assert invalidate is not None
        before = store.query(invalidate.group(1)).rows
        assert len(before) == 1 and len(before[0]) == 1
        sent.clear()
        load_groups(state, store, org)
        assert store.query(invalidate.group(1)).rows != before
        kinds = [" ".join(sql.split()[:4]) for sql in sent]
        assert kinds == [
            "INSERT INTO identity_groups SELECT",
            "INSERT INTO identity_groups_loads VALUES",
            "SYSTEM SYNC REPLICA ON",
            "SYSTEM SYNC REPLICA ON",
            "SYSTEM RELOAD DICTIONARY ON",
            "ALTER TABLE identity_groups DELETE",
            "ALTER TABLE identity_groups_loads DELETE",
        ]
        assert sent[2:5] == groups_reload(layout)
        query = funnel_query(
            [step("event", "page"), step("track", "connect")], day(0), day(0), aggregate_by=org
        )
        assert f"'{store.database}.{GROUPS_DICTIONARY}'" in funnel_statement(query, layout)[0]
        body = run_funnel(store, query)
        assert [row["users"] for row in body["data"]] == [2, 1]  # acme (c1, then c2) and globex
        assert body["data"] == reference_funnel(query, events, memberships)["data"]
        sent.clear()
        monkeypatch.setattr(store, "groups_reloaded", {})  # another process: it has not reloaded yet
        load_groups(state, store, org)
        assert sent[-3:] == groups_reload(layout) and not any(
            sql.startswith(("INSERT", "ALTER")) for sql in sent
        )
        sent.clear()
        load_groups(state, store, org)
        assert not any(sql.startswith(("INSERT", "ALTER", "SYSTEM")) for sql in sent)
    finally:
        state.close()


@pytest.mark.parametrize(
    ("engine", "layout"),
    [
        ("ReplacingMergeTree PARTITION BY toYYYYMM(ts) ORDER BY (user_key, ts, event_id)", None),
        ("Distributed('analytics', 'funnels', 'events_local', sipHash64(user_key))", LAYOUT),
        (
            "Distributed('c-1.eu', 'funnels', 'events_local', sipHash64(user_key))",
            ClusterLayout("c-1.eu", "funnels"),
        ),
    ],
)
def test_a_store_tells_the_layout_from_the_events_engine(engine: str, layout: ClusterLayout | None) -> None:
    assert layout_of(engine, "funnels") == layout


@pytest.mark.parametrize(
    "engine",
    [
        "Distributed('analytics', 'other', 'events_local', sipHash64(user_key))",
        "Distributed('analytics', 'funnels', 'events_mine', rand())",
        "Distributed(analytics, funnels, events_local)",
    ],
)
def test_a_distributed_table_it_did_not_make_is_refused(engine: str) -> None:
    with pytest.raises(ClusterLayoutError):
        layout_of(engine, "funnels")


@pytest.mark.parametrize(("cluster", "database"), [("a'b", "funnels"), ("", "funnels"), ("c", "fun-nels")])
def test_names_that_cannot_be_written_into_sql_are_refused(cluster: str, database: str) -> None:
    with pytest.raises(ValueError):
        ClusterLayout(cluster, database)


def test_the_insert_settings_and_the_watermark_read_exist_in_the_target_version(
    store: ServerEventStore,
) -> None:
    known = store.query(
        "SELECT name FROM system.settings WHERE name IN {names:Array(String)}",
        {"names": list(INSERT_SETTINGS)},
    )
    assert sorted(row[0] for row in known.rows) == sorted(INSERT_SETTINGS)
    store.insert_events([ev("u1", at(0), "page")], [7])
    assert int(store.query(WATERMARK).rows[0][0]) == 7 == store.max_log_seq()


def test_one_server_stores_are_not_on_a_cluster(store: ServerEventStore) -> None:
    assert store.cluster is None and store.shard_count() == 1
    query = funnel_query([step("event", "page"), step("track", "connect")], identity="raw")
    assert "cluster(" not in funnel_statement(query, store.cluster)[0]


def test_init_refuses_a_database_holding_a_one_server_table(tmp_path: Path) -> None:
    ServerEventStore.on_chdb(tmp_path / "server").close()
    with pytest.raises(ClusterLayoutError, match="already holds a one-server events table"):
        ServerEventStore.on_chdb(tmp_path / "server", init_cluster="analytics")


def test_init_on_a_server_without_the_cluster_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ClusterLayoutError, match="knows no cluster analytics"):
        ServerEventStore.on_chdb(tmp_path / "server", init_cluster="analytics")


# --- a real cluster ---


def _beside(database: str) -> str:
    """The real server's URL with another database."""
    url = REAL_SERVER or ""
    return f"{url.rsplit('/', 1)[0] if url.count('/') > 2 else url}/{database}"


@pytest.fixture
def cluster_store() -> Iterator[ServerEventStore]:
    if not (REAL_SERVER and REAL_CLUSTER):
        pytest.skip(
            "no ClickHouse cluster given: set FUNNELS_TEST_CLICKHOUSE_URL=http[s]://user:password@host:port/"
            "database (a server of the cluster; a throwaway database is made beside it) and "
            "FUNNELS_TEST_CLICKHOUSE_CLUSTER=NAME (its remote_servers name) to run the layout on it"
        )
    database = f"funnels_test_{uuid.uuid4().hex[:12]}"
    opened = ServerEventStore.connect(_beside(database), init_cluster=REAL_CLUSTER)
    try:
        yield opened
    finally:
        opened.execute(f"DROP DATABASE IF EXISTS {database} ON CLUSTER '{REAL_CLUSTER}' SYNC")
        opened.close()


def test_real_cluster(cluster_store: ServerEventStore, tmp_path: Path) -> None:
    """The layout made and recognised, a retried batch stored once through the Distributed table, raw
    funnels in the two-level form and stitched ones through the Distributed table, both equal to the
    oracle, with users spread over the shards; funnels aggregated by a model, raw and stitched, equal to the
    oracle's, the memberships dictionary loaded alike on every node, before and after a relationship
    changes."""
    store = cluster_store
    assert store.cluster == ClusterLayout(REAL_CLUSTER or "", store.database)
    reopened = ServerEventStore.connect(_beside(store.database))
    try:
        assert reopened.cluster == store.cluster  # a plain open finds the layout
    finally:
        reopened.close()
    events = []
    for user in range(40):
        anonymous = f"a{user}"
        events += [
            ev(
                "",
                at(0, user * 10_000),
                "page",
                anonymous_id=anonymous,
                device=("mobile", "desktop")[user % 2],
            ),
            ev(f"u{user}", at(0, user * 10_000 + 1000), "identify", anonymous_id=anonymous),
        ]
        if user % 3:
            events.append(ev(f"u{user}", at(0, user * 10_000 + 2000 + user), "track", "connect"))
    seqs = list(range(1, len(events) + 1))
    store.insert_events(events, seqs)
    store.insert_events(events, seqs)  # retried: the same token on every shard
    assert store.count() == len(events) and store.max_log_seq() == len(events)
    assert store.shard_count() >= 1
    shards = store.query("SELECT uniqExact(_shard_num) FROM events WHERE log_seq > 0")
    assert int(shards.rows[0][0]) == store.shard_count()  # 80 keys: rows on every shard
    for table in ("events_local", "identity_links"):  # every replica has every row and link
        store.execute(f"SYSTEM SYNC REPLICA ON CLUSTER '{REAL_CLUSTER}' {store.database}.{table}")
    for identity in ("raw", "stitched"):
        query = funnel_query(
            [step("event", "page"), step("track", "connect")],
            day(0),
            day(0),
            breakdown="device",
            identity=identity,
        )
        sql, _ = funnel_statement(query, store.cluster)
        assert ("cluster(" in sql) == (identity == "raw")
        assert run_funnel(store, query)["data"] == reference_funnel(query, events)["data"]
        open_query = replace(query, funnel_type="open")
        assert run_funnel(store, open_query)["data"] == reference_funnel(open_query, events)["data"]
    state = StateStore(tmp_path / "state.sqlite3")
    try:
        _real_cluster_aggregate_by(store, state, events)
    finally:
        state.close()
    store.truncate()
    assert store.count() == 0


def _real_cluster_aggregate_by(store: ServerEventStore, state: StateStore, events: list[Any]) -> None:
    """`aggregate_by` on the real cluster: the users u0..u39 in two organizations (every fifth in none)."""
    relations = [("acme" if user % 2 else "globex", f"u{user}") for user in range(40) if user % 5]
    org, memberships = organizations(
        cast(Services, SimpleNamespace(state=state)),
        {"acme": [], "globex": []},
        {f"u{user}": [] for user in range(40)},
        relations,
    )

    def check(memberships: dict[str, set[str]]) -> None:
        loaded = store.query(
            f"SELECT count(), countIf(status = 'LOADED'), uniqExact(element_count) FROM clusterAllReplicas("
            f"'{REAL_CLUSTER}', system.dictionaries) WHERE database = {{database:String}} AND name = {{name:String}}",
            {"database": store.database, "name": GROUPS_DICTIONARY},
        ).rows[0]
        nodes = store.query(
            "SELECT count() FROM system.clusters WHERE cluster = {cluster:String}", {"cluster": REAL_CLUSTER}
        ).rows[0][0]
        assert [int(value) for value in loaded] == [int(nodes), int(nodes), 1]  # the same load everywhere
        for identity in ("raw", "stitched"):
            query = funnel_query(
                [step("event", "page"), step("track", "connect")],
                day(0),
                day(0),
                breakdown="device",
                identity=identity,
                aggregate_by=org,
            )
            assert "cluster(" not in funnel_statement(query, store.cluster)[0]
            assert run_funnel(store, query)["data"] == reference_funnel(query, events, memberships)["data"]

    load_groups(state, store, org)
    check(memberships)
    customer = org.replace("organization", "customer")
    with state.write() as connection:  # u0 joins acme: a new load, synced and reloaded on every node
        relate(connection, [Relationship(org, "acme", customer, "u0")], 1)
    load_groups(state, store, org)
    check(memberships | {"u0": {"acme"}})


def test_events_init_copies_the_identify_events_when_their_tables_are_behind(store: ServerEventStore) -> None:
    """What `events init --cluster` runs after its DDL (`identifies_behind`, then `backfill_identifies`), run on
    one server's tables of the same names: behind when identify rows are missing (a layout made before the
    identify tables), not once they are copied, and a copy repeated changes nothing after merges."""
    layout = ClusterLayout("analytics", store.database)
    store.insert_events(
        [
            ev("u1", at(0), "identify", event_id="i1", props={"plan": "free"}),
            ev("u1", at(0, 5), "track", "connect", event_id="t1"),
            ev("u2", at(1), "identify", event_id="i2"),
        ]
    )

    def behind() -> bool:
        row = store.query(identifies_behind(layout)).first()
        assert row is not None
        return bool(int(row[0]))

    assert not behind()  # the view copied them as they came
    store.execute(f"TRUNCATE TABLE {IDENTIFIES_TABLE}")
    assert behind()
    for _ in range(2):
        store.execute(backfill_identifies(layout))
        assert not behind()
    rows = store.query(f"SELECT event_id FROM {IDENTIFIES_TABLE} FINAL ORDER BY event_id").rows
    assert rows == [["i1"], ["i2"]]
