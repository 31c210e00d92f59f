"""Aggregating a funnel by a model (`aggregate_by=organization`): the memberships, brought from the state store
to the event store.

Who counts toward a group instance is written in the state store (instances, their ids and their
relationships: `funnels.store.identity.memberships`); the events are in the event store. A funnel that
aggregates by a model looks each event's user up in the `identity_groups_members` dictionary: keyed by
sipHash64(model, sipHash64(member id)), it answers the hashes of the groups' primary ids: `one`, the group of a
member of exactly one (the usual case, a plain integer), else `many`, all of them (a member of two groups is
in both), so the lookup is one in-memory probe per scanned row, as the persons dictionary's is, and an array
is read only for members of several groups (an array for every row cost about twice as much per lookup).

How it stays current: the state store gives a cheap generation of a model's memberships
(`memberships_generation`: counts and maxima). Before a query, `load_groups` compares it with the
generation of the model's latest load in the event store (`identity_groups_loads`); when they differ, it
reads the memberships and inserts them as a new load (rows tagged with a load id that sorts by time), and
deletes the model's older loads (a background mutation). The dictionary's source reads only each model's
latest load, so a load replaces the previous one in a single dictionary reload, and rows of an older load
still being deleted are never read. Each process reloads the dictionary when the latest load of the model
it queries is not the one it last reloaded at, so nodes sharing a ClickHouse server and a state store see
each other's loads; two nodes loading one generation at once store it twice, harmlessly (the newest wins).
The older loads are deleted after the reload (on a cluster, once every node has the new one).

On a ClickHouse cluster (`funnels.store.cluster`) the shards evaluate the lookups, so both tables and the
dictionary are on every node, made with the layout by `funnels events init --cluster` (not here: a
statement ON CLUSTER waits for every node, which a funnel request should not do on its first use, and
creating needs rights the serving user need not have; a layout made before them is refused, naming that
command). The tables are replicated across the whole cluster, as the identity links are; a load is
inserted on the node this process talks to, and before the reload every node's replicas of the loads
table, then of the memberships, fetch what was inserted so far (`SYSTEM SYNC REPLICA ... LIGHTWEIGHT` on
every node: a load the loads table names had its rows inserted before, so they are fetched by the second
wait); then every node reloads the dictionary from its own copy (`EventStore.reload_dictionary`). Each
node's dictionary also checks every 30–60 s whether its copy changed and reloads then (its backstop, for
a node that was down or restarted meanwhile).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from funnels.store import identity
from funnels.store.events import (
    GROUPS_COLUMNS,
    GROUPS_DICTIONARY,
    GROUPS_LOADS,
    GROUPS_ORDER,
    GROUPS_TABLE,
    LOADS_COLUMNS,
    LOADS_ORDER,
    EventStore,
    LayoutOutdated,
    groups_dictionary_ddl,
)
from funnels.store.state import StateStore, chunks

GROUPS_TABLE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {GROUPS_TABLE} {GROUPS_COLUMNS} ENGINE = MergeTree {GROUPS_ORDER}"
)
GROUPS_LOADS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {GROUPS_LOADS} {LOADS_COLUMNS} ENGINE = MergeTree {LOADS_ORDER}"
)


INSERT_SLICE = 200_000  # memberships per INSERT (`_store`)


def _create(events: EventStore) -> None:
    """Make the tables and the dictionary (once per process); on a cluster they are the layout's, made on
    every node by `funnels events init --cluster` (`funnels.store.cluster.groups_ddl`): only checked."""
    if events.groups_created:
        return
    if events.cluster is not None:
        names = [GROUPS_TABLE, GROUPS_LOADS, GROUPS_DICTIONARY]
        found = events.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND name IN {names:Array(String)}",
            {"names": names},
        ).rows
        missing = sorted(set(names) - {str(row[0]) for row in found})
        if missing:
            raise LayoutOutdated(
                f"the cluster layout in {events.cluster.database} has no {', '.join(missing)} (made by an "
                f"older version): run `funnels events init --cluster {events.cluster.cluster}` again to add "
                "what aggregate_by needs",
                events.cluster.cluster,
            )
    else:
        database, source = events.dictionary_source()
        for statement in (GROUPS_TABLE_DDL, GROUPS_LOADS_DDL, groups_dictionary_ddl(database, source)):
            events.execute(statement)
    events.groups_created = True


def _latest(events: EventStore, model: str) -> tuple[str, str]:
    """The model's latest load in the event store: (its id, its generation); ('', '') before the first."""
    row = events.query(
        f"SELECT max(load_id), argMax(generation, load_id) FROM {GROUPS_LOADS} WHERE model = {{model:String}}",
        {"model": model},
    ).first()
    return (str(row[0]), str(row[1])) if row else ("", "")


def _store(events: EventStore, model: str, generation: str, rows: Sequence[tuple[str, str]]) -> str:
    """Insert the memberships as a new load of `model` (ids hashed as the funnel SQL hashes user keys): its
    rows first, then its row in the loads table (which makes it the latest); returns the new load's id."""
    load_id = f"{time.time_ns() // 1_000_000:015d}:{uuid.uuid4().hex}"
    # In slices: one array parameter holds at most 1,000,000 elements (ClickHouse's limit for a field).
    for part in chunks(rows, INSERT_SLICE):
        params = {
            "model": model,
            "load": load_id,
            "members": [member for member, _ in part],
            "groups": [group for _, group in part],
        }
        events.execute(
            f"INSERT INTO {GROUPS_TABLE} SELECT {{model:String}}, {{load:String}}, sipHash64(pair.1), "
            "sipHash64(pair.2), pair.2 FROM (SELECT arrayJoin(arrayZip({members:Array(String)}, "
            "{groups:Array(String)})) AS pair)",
            params,
        )
    events.execute(
        f"INSERT INTO {GROUPS_LOADS} VALUES ({{model:String}}, {{load:String}}, {{generation:String}})",
        {"model": model, "load": load_id, "generation": generation},
    )
    return load_id


def _drop_older(events: EventStore, model: str, load_id: str) -> None:
    """Delete the model's loads older than `load_id` (a background mutation; on a cluster, replicated to
    every node). Only after the dictionary reloaded at `load_id`, everywhere: until then a node's dictionary
    may still load the older one (a cluster's lagging replica, `funnels.store.cluster`)."""
    for table in (GROUPS_TABLE, GROUPS_LOADS):
        events.execute(
            f"ALTER TABLE {table} DELETE WHERE model = {{model:String}} AND load_id < {{load:String}}",
            {"model": model, "load": load_id},
        )


def load_groups(state: StateStore, events: EventStore, model: str) -> None:
    """Make the event store's memberships of `model` current with the state store's, before a funnel that
    aggregates by it runs (one cheap read of each store when nothing changed). On a cluster the reload
    waits for every node's replicas of both tables to fetch what was inserted so far, then reloads the
    dictionary on every node (`EventStore.reload_dictionary`)."""
    with state.read() as connection:
        generation = identity.memberships_generation(connection, model)  # before the rows: never newer
        with events.groups_lock:
            _create(events)
            load_id, loaded = _latest(events, model)
            stored = loaded != generation or not load_id
            if stored:
                load_id = _store(events, model, generation, identity.memberships(connection, model))
            if events.groups_reloaded.get(model) != load_id:
                # the loads table first: a load it names had its rows inserted before it, so they are
                # fetched by the second wait at the latest
                events.reload_dictionary(GROUPS_DICTIONARY, (GROUPS_LOADS, GROUPS_TABLE))
                events.groups_reloaded[model] = load_id
            if stored:
                _drop_older(events, model, load_id)


def group_names(events: EventStore, model: str, hashes: Sequence[int]) -> dict[int, str]:
    """Each group hash's primary id (what the people of a funnel aggregated by `model` are listed by)."""
    if not hashes:
        return {}
    rows = events.query(
        f"SELECT grp, any(group_id) FROM {GROUPS_TABLE} WHERE model = {{model:String}} "
        "AND grp IN (SELECT toUInt64(arrayJoin({hashes:Array(String)}))) GROUP BY grp",
        {"model": model, "hashes": [str(h) for h in hashes]},
    ).rows
    return {int(h): str(name) for h, name in rows}
