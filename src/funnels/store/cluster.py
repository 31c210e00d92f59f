"""The event store's cluster layout (`funnels events init --cluster NAME`): its DDL, and how a store tells it is
on one.

The layout, in one database on every node of a ClickHouse cluster (every statement `ON CLUSTER`):

- `events_local` on every shard: the events table as on one server (same columns, sort key, projection),
  `ReplicatedReplacingMergeTree`, replicated within its shard (Keeper path by `{shard}`).
- `events`, a `Distributed` table over the shards' `events_local`, sharded by `sipHash64(user_key)`
  (`SHARDING_KEY`): every row of one user key lands on one shard, so a raw funnel's per-user fold runs
  whole on each shard (`funnels.analytics.sql.cluster_funnel_sql`). sipHash64 because it is the hash the
  persons dictionary already keys ids by, and its values are fixed by its definition (the same on every
  server version and platform), so the shard of a key never moves while the shard list stays the same.
- The identity links (`identity_links`, `identity_keys_by_user`, their views, the persons source view and
  dictionary) on every node, the links tables replicated across the whole cluster (one Keeper path for
  all shards): a key's claim is made on the claiming user's shard, while the key's own anonymous rows
  sit on the key's shard, so every node needs every link. Each shard's view on `events_local` feeds its
  node's `identity_links`, which replication copies everywhere; every node loads the dictionary from its
  own copy. A writer whose insert may have changed a link says so in `identity_links_changes` (replicated
  the same way), which a stitched query checks before it runs, reloading the dictionary on every node when
  it moved; since that row and the links it announces replicate independently, the dictionary also
  reloads by itself every 30–60 s (`PERSONS_LIFETIME`), which bounds how late a link is seen.
- The identify events' own table (`identify_events`, `funnels.store.events`) as the events are: each
  shard's `identify_events_local`, fed by a view on its `events_local`, and a Distributed
  `identify_events` over them, sharded by the same key.
- `aggregate_by`'s memberships (`funnels.store.groups`: `identity_groups`, `identity_groups_loads`, the
  dictionary `identity_groups_members`) on every node too, the tables replicated across the whole cluster
  in the same way (`groups_ddl`): a funnel aggregated by a model reads the Distributed `events` and the
  shards look each row's user up, so every node needs every membership. A load is inserted on one node;
  every node's replicas are synced before the dictionary reloads on every node (`sync_replica`, then
  `reload_dictionary`), and each node's dictionary checks every 30–60 s whether its copy changed
  (`GROUPS_LIFETIME`), so a node that missed a reload catches up by itself.

Writes go through `events` (the Distributed table) with `distributed_foreground_insert = 1`
(`INSERT_SETTINGS`): the insert returns once every shard has stored its rows, so the shipper's watermark
(`max(log_seq)` read through `events`) does not fall behind what an acknowledged insert stored, and a
retried batch carries its deduplication token to each shard's insert, where the replicated table drops the
repeat (the rows of a batch split over the shards the same way every time). Inserts and the watermark's
read go to each shard's first available replica (`load_balancing = 'in_order'`), so the read does not
land on a replica that has not fetched the last insert yet, unless that first replica is down. A store opening a
database tells the layout from the `events` table's engine (`layout_of`).

The cluster name and the database are checked to be plain names (`funnels.store.events.ClusterLayout`), so
they can be written into the SQL text.
"""

from __future__ import annotations

import re

from funnels.store.events import (
    CLAIM_TYPE,
    EVENT_COLUMNS_DDL,
    GROUPS_COLUMNS,
    GROUPS_DICTIONARY,
    GROUPS_LOADS,
    GROUPS_ORDER,
    GROUPS_TABLE,
    IDENTIFIES_COLUMNS,
    IDENTIFIES_KEY,
    IDENTIFIES_TABLE,
    IDENTIFIES_VIEW,
    KEYS_BY_USER,
    KEYS_BY_USER_VIEW,
    LINKS_CHANGES,
    LINKS_TABLE,
    LINKS_VIEW,
    LOADS_COLUMNS,
    LOADS_ORDER,
    NAMES_PROJECTION,
    NAMES_PROJECTION_QUERY,
    PERSONS_DICTIONARY,
    PERSONS_SOURCE,
    PROJECTION_MODE,
    SHARD_EVENTS,
    SHARD_IDENTIFIES,
    ClusterLayout,
    groups_dictionary_ddl,
    identifies_select,
    links_select,
    persons_ddl,
    persons_source_ddl,
)

SHARDING_KEY = "sipHash64(user_key)"  # the Distributed table's: a user key's rows on one shard
# Keeper paths: the events replicated within a shard, the links across the whole cluster (replica names
# must then differ across shards too).
SHARD_REPLICA = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"
CLUSTER_REPLICA = "'/clickhouse/tables/all/{database}/{table}', '{shard}-{replica}'"
DEDUPLICATION_WINDOW = 1_000  # inserts whose tokens each shard's events table remembers
# Each insert through the Distributed table: stored on every shard before it returns, on each shard's
# first available replica (in `remote_servers` order), where the watermark is read back too (`WATERMARK`).
INSERT_SETTINGS = {"distributed_foreground_insert": 1, "load_balancing": "in_order"}
WATERMARK = "SELECT max(log_seq) FROM events SETTINGS load_balancing = 'in_order'"
# The persons dictionary also reloads by itself every 30–60 s: a link announced in `identity_links_changes`
# may replicate to a node after that node reloaded for it (two tables replicate independently).
PERSONS_LIFETIME = "MIN 30 MAX 60"
# The groups dictionary checks as often whether its node's copy of the memberships changed, and reloads
# only then (`funnels.store.events.groups_dictionary_ddl`): a node that missed a reload catches up by itself.
GROUPS_LIFETIME = PERSONS_LIFETIME

_DISTRIBUTED = re.compile(r"Distributed\('([^']+)', '([^']+)', '([^']+)'")


class ClusterLayoutError(ValueError):
    """A database that does not hold the cluster layout as this version makes it."""


def cluster_ddl(layout: ClusterLayout, source: str = "") -> list[str]:
    """Every statement of the layout, in order; each idempotent, so a second run changes nothing but the
    persons dictionary's source settings (`source`: its user and password, as `persons_ddl` takes)."""
    db, on = layout.database, layout.on_cluster
    events_local = (
        f"CREATE TABLE IF NOT EXISTS {db}.{SHARD_EVENTS} {on} (\n{EVENT_COLUMNS_DDL}"
        f",\n    PROJECTION {NAMES_PROJECTION} ({NAMES_PROJECTION_QUERY})"
        f"\n) ENGINE = ReplicatedReplacingMergeTree({SHARD_REPLICA})"
        "\nPARTITION BY toYYYYMM(ts)\nORDER BY (user_key, ts, event_id)"
        f"\nSETTINGS {PROJECTION_MODE}, replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
    )
    events = (
        f"CREATE TABLE IF NOT EXISTS {db}.events {on} (\n{EVENT_COLUMNS_DDL}\n) "
        f"ENGINE = Distributed('{layout.cluster}', '{db}', '{SHARD_EVENTS}', {SHARDING_KEY})"
    )
    links = (
        f"CREATE TABLE IF NOT EXISTS {db}.{LINKS_TABLE} {on} (\n    key String,\n"
        f"    claim SimpleAggregateFunction(min, {CLAIM_TYPE})\n"
        f") ENGINE = ReplicatedAggregatingMergeTree({CLUSTER_REPLICA})\nORDER BY key"
    )
    keys_by_user = (
        f"CREATE TABLE IF NOT EXISTS {db}.{KEYS_BY_USER} {on} (user String, key String) "
        f"ENGINE = ReplicatedReplacingMergeTree({CLUSTER_REPLICA}) ORDER BY (user, key)"
    )
    keys_view = (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{KEYS_BY_USER_VIEW} {on} TO {db}.{KEYS_BY_USER} AS "
        f"SELECT claim.3 AS user, key FROM {db}.{LINKS_TABLE}"
    )
    links_view = (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{LINKS_VIEW} {on} TO {db}.{LINKS_TABLE} AS "
        + links_select(table=layout.shard_events)
    )
    changes = (
        f"CREATE TABLE IF NOT EXISTS {db}.{LINKS_CHANGES} {on} (writer String, generation UInt64) "
        f"ENGINE = ReplicatedReplacingMergeTree({CLUSTER_REPLICA}, generation) ORDER BY writer"
    )
    source_view = persons_source_ddl(f"{db}.{PERSONS_SOURCE} {on}", f"{db}.{LINKS_TABLE}")
    dictionary = persons_ddl(db, source, name=f"{db}.{PERSONS_DICTIONARY} {on}", lifetime=PERSONS_LIFETIME)
    return [
        f"CREATE DATABASE IF NOT EXISTS {db} {on}",
        events_local,
        events,
        links,
        keys_by_user,
        keys_view,
        links_view,
        changes,
        source_view,
        dictionary,
        *identifies_ddl(layout),
        *groups_ddl(layout, source),
    ]


def identifies_ddl(layout: ClusterLayout) -> list[str]:
    """The identify events' own tables (`funnels.store.events`, `identified_sql`): each shard's, fed by a view
    on its `events_local`, so a shard's identify rows are the user keys it holds (a raw funnel's person
    breakdown runs whole on each shard), and a Distributed `identify_events` over them, sharded as `events`
    (what a stitched funnel's initiator reads)."""
    db, on = layout.database, layout.on_cluster
    return [
        f"CREATE TABLE IF NOT EXISTS {db}.{SHARD_IDENTIFIES} {on} {IDENTIFIES_COLUMNS} "
        f"ENGINE = ReplicatedReplacingMergeTree({SHARD_REPLICA}) {IDENTIFIES_KEY}",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{IDENTIFIES_VIEW} {on} TO {db}.{SHARD_IDENTIFIES} AS "
        + identifies_select(layout.shard_events),
        f"CREATE TABLE IF NOT EXISTS {db}.{IDENTIFIES_TABLE} {on} {IDENTIFIES_COLUMNS} "
        f"ENGINE = Distributed('{layout.cluster}', '{db}', '{SHARD_IDENTIFIES}', {SHARDING_KEY})",
    ]


def identifies_behind(layout: ClusterLayout) -> str:
    """One row: whether the identify tables hold fewer identify events than the events do (a layout made
    before them, or an `events init` that stopped before its copy), each row counted once (`FINAL`).
    `funnels events init --cluster` then copies them (`backfill_identifies`)."""
    db = layout.database
    return (
        f"SELECT (SELECT count() FROM {db}.{IDENTIFIES_TABLE} FINAL) < "
        f"(SELECT count() FROM {db}.events FINAL WHERE type = 'identify')"
    )


def backfill_identifies(layout: ClusterLayout) -> str:
    """Copy the identify rows of the events into the identify tables: through the Distributed tables, so
    each row lands on its user key's shard, stored on every shard before the statement returns. The
    tables collapse a row copied twice (by the view too, meanwhile)."""
    db = layout.database
    return (
        f"INSERT INTO {db}.{IDENTIFIES_TABLE} {identifies_select(f'{db}.events')} "
        "SETTINGS distributed_foreground_insert = 1"
    )


def groups_ddl(layout: ClusterLayout, source: str = "") -> list[str]:
    """`aggregate_by`'s memberships on every node (`funnels.store.groups`): both tables replicated across
    the whole cluster, as the links are (every shard looks members up), and the dictionary, named by its
    database, reading its node's own copy."""
    db, on = layout.database, layout.on_cluster
    engine = f"ENGINE = ReplicatedMergeTree({CLUSTER_REPLICA})"
    return [
        f"CREATE TABLE IF NOT EXISTS {db}.{GROUPS_TABLE} {on} {GROUPS_COLUMNS} {engine} {GROUPS_ORDER}",
        f"CREATE TABLE IF NOT EXISTS {db}.{GROUPS_LOADS} {on} {LOADS_COLUMNS} {engine} {LOADS_ORDER}",
        groups_dictionary_ddl(db, source, name=f"{db}.{GROUPS_DICTIONARY} {on}", lifetime=GROUPS_LIFETIME),
    ]


def truncate_statements(layout: ClusterLayout) -> list[str]:
    """Empty the layout's tables on every node (tests start over with it)."""
    return [
        f"TRUNCATE TABLE IF EXISTS {layout.database}.{table} {layout.on_cluster}"
        for table in (SHARD_EVENTS, LINKS_TABLE, KEYS_BY_USER, SHARD_IDENTIFIES)
    ]


def reload_dictionary(layout: ClusterLayout, name: str) -> str:
    """Reload a dictionary of the layout on every node: the funnel SQL looks it up on the shards."""
    return f"SYSTEM RELOAD DICTIONARY {layout.on_cluster} {layout.database}.{name}"


def sync_replica(layout: ClusterLayout, table: str) -> str:
    """Wait until every node's replica of a table replicated across the cluster has fetched the parts
    inserted anywhere before (`LIGHTWEIGHT`: fetches only, not merges or mutations still running)."""
    return f"SYSTEM SYNC REPLICA {layout.on_cluster} {layout.database}.{table} LIGHTWEIGHT"


def layout_of(engine_full: str, database: str) -> ClusterLayout | None:
    """The layout a database's `events` table belongs to, from its engine (`system.tables.engine_full`):
    None for a table that is not Distributed (one server); `ClusterLayoutError` for a Distributed table
    this version did not make (over another table or database)."""
    if not engine_full.startswith("Distributed("):
        return None
    found = _DISTRIBUTED.match(engine_full)
    if found is None or found.group(2) != database or found.group(3) != SHARD_EVENTS:
        raise ClusterLayoutError(
            f"the events table in {database} is {engine_full}, not a Distributed table over "
            f"{database}.{SHARD_EVENTS} as `funnels events init --cluster` makes"
        )
    return ClusterLayout(found.group(1), database)
