"""The event store's interface (`EventStore`) and what its backends share: the schema and the identity links.

The store is a ClickHouse MergeTree table: on chDB (embedded ClickHouse) inside the data directory
(`funnels.store.chdb_events`, the default), or on a ClickHouse server (`funnels.store.server_events`); the
same DDL and the same analytics SQL run on both.

Rows are sorted by (user_key, ts, event_id), so one user's events sit together in time order, which is what
funnel queries read. The table is a ReplacingMergeTree keyed on that sort key: a row written twice (the
same event id, user and time) collapses on merge. Rows shipped from the event log carry their log sequence
number, which makes shipping idempotent (see `funnels.ingest.log`).

The `names_by_day` projection keeps, per (type, event, UTC day), the event count and the last time: listing
the event names seen (`funnels.analytics.catalog`) reads a few rows per name and day instead of every
event. ClickHouse keeps it in step with the table on insert, and rebuilds it when a merge collapses
duplicates (`deduplicate_merge_projection_mode = 'rebuild'`, which a ReplacingMergeTree needs for a
projection), so it always counts what the table holds.

Identity links (docs/semantics.md, "Users and persons"): a materialized view on `events` turns every row
that carries a user id and a key (its anonymous id, or an alias' `previousId`) into a claim (time, event
id, user id) in `identity_links`, an AggregatingMergeTree keyed by that key that keeps each key's least
claim (its link: the earliest claim's user); every way rows enter the table (shipping,
imports, the native Parquet path) feeds it, and a row stored twice claims nothing new. A bulk import
drops the view for the load and adds its rows' links in one pass after it (`views_after_load`). The
`identity_persons` dictionary holds each key's person (its link followed at most twice, resolved in the
dictionary's source query), both as 64-bit hashes, so a stitched funnel does one in-memory integer lookup
per scanned row and groups by an integer. It is reloaded only when it is behind: every insert whose rows
may change a link bumps a generation counter, and a query that reads the dictionary (`query(...,
persons=True)`) first reloads it if its generation is older, under the store's lock, so a query always sees
the links of every event stored before it began (an analytics query holds the lock for the reload only, not
for its own length: an insert racing its start may be counted unstitched until the next query). Whether rows may change a link is told from their claims and
the links known of their keys (`funnels.store.links`): a batch that only repeats known links (analytics.js
sends both ids on every event once a visitor has identified) leaves the dictionary as it is. On a store
other processes write too (a server), their link changes count as well: a backend tells them through the
store (`_tell_links_changed`, `_links_elsewhere`; `funnels.store.server_events`).

Identify events have a narrow table of their own (`identify_events`, fed by a view, backfilled once for a
store made before it): a breakdown by a person property reads a person's identify events of any time
(`funnels.analytics.sql.identified_sql`), and there they are the table, not a few rows in every granule of
the events before the scan's end.
"""

from __future__ import annotations

import re
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from funnels.events import Event
from funnels.store.links import Claim, KnownLinks, batch_claims, settle
from funnels.types import STANDARD_COLUMNS

HIGH_CARDINALITY = frozenset({"referrer", "page_path", "ref"})

EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "type",
    "event",
    "user_key",
    "user_id",
    "anonymous_id",
    "ts",
    "received_at",
    "properties",
    *STANDARD_COLUMNS,
    "log_seq",
)


def _column_type(name: str) -> str:
    if name in ("ts", "received_at"):
        return "DateTime64(3, 'UTC')"
    if name == "log_seq":
        return "UInt64"
    if name in ("type", "event") or (name in STANDARD_COLUMNS and name not in HIGH_CARDINALITY):
        return "LowCardinality(String)"
    return "String"


NAMES_PROJECTION = "names_by_day"
NAMES_PROJECTION_QUERY = (
    "SELECT type, event, toDate32(ts), count(), max(ts) GROUP BY type, event, toDate32(ts)"
)
PROJECTION_MODE = "deduplicate_merge_projection_mode = 'rebuild'"

EVENT_COLUMNS_DDL = ",\n".join(f"    {name} {_column_type(name)}" for name in EVENT_COLUMNS)
EVENTS_DDL = (
    "CREATE TABLE IF NOT EXISTS events (\n"
    + EVENT_COLUMNS_DDL
    + f",\n    PROJECTION {NAMES_PROJECTION} ({NAMES_PROJECTION_QUERY})"
    + "\n) ENGINE = ReplacingMergeTree\nPARTITION BY toYYYYMM(ts)\nORDER BY (user_key, ts, event_id)"
    + f"\nSETTINGS {PROJECTION_MODE}"
)

LINKS_TABLE = "identity_links"
LINKS_VIEW = "identity_links_mv"
KEYS_BY_USER = "identity_keys_by_user"
KEYS_BY_USER_VIEW = "identity_keys_by_user_mv"
PERSONS_SOURCE = "identity_persons_source"
PERSONS_DICTIONARY = "identity_persons"
# Link changes the writers of a shared server made (`funnels.store.server_events`, `funnels.store.cluster`).
LINKS_CHANGES = "identity_links_changes"


def links_select(rows: str = "1", table: str = "events") -> str:
    """The claims of the events `rows` selects: one per key a row claims (its anonymous id, and an alias'
    previousId when that is a JSON string; never the row's own user id). The materialized view runs it on
    each inserted block; backfills run it on stored rows. `table`: the events table it reads (on a cluster,
    each shard's local table: `funnels.store.cluster`)."""
    return (
        f"SELECT key, min((ts, event_id, user_id)) AS claim FROM {table} "
        "ARRAY JOIN arrayFilter(k -> k != '' AND k != user_id, [anonymous_id, "
        "if(type = 'alias' AND JSONType(properties, 'previousId') = 'String', "
        "JSONExtractString(properties, 'previousId'), '')]) AS key "
        f"WHERE user_id != '' AND (anonymous_id != '' OR type = 'alias') AND ({rows}) GROUP BY key"
    )


LINKS_SELECT = links_select()
# A claim is (time, event id, user id); the smallest wins, so a key links to its earliest claim's user, and
# two claims of one time and event id (the same event stored under two user ids) resolve the same way on
# every merge. Its time is what tells whether a new claim can win (`funnels.store.links`).
CLAIM_TYPE = "Tuple(DateTime64(3, 'UTC'), String, String)"
LINKS_VIEW_DDL = f"CREATE MATERIALIZED VIEW IF NOT EXISTS {LINKS_VIEW} TO {LINKS_TABLE} AS {LINKS_SELECT}"
LINKS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {LINKS_TABLE} (\n"
    "    key String,\n"
    f"    claim SimpleAggregateFunction(min, {CLAIM_TYPE})\n"
    ") ENGINE = AggregatingMergeTree\nORDER BY key"
)
# Every (user, key) pair of a claim that was its key's least in some insert into the links table: a key's
# link is among them, so the keys linked to a user are found by this table's primary key, then checked
# against their links (`keys_linked_to`). Fed by a view on the links table, so every way links are added
# (the view on events, backfills, the pass after a bulk load) feeds it too.
KEYS_BY_USER_DDL = (
    f"CREATE TABLE IF NOT EXISTS {KEYS_BY_USER} (user String, key String) "
    "ENGINE = ReplacingMergeTree ORDER BY (user, key)"
)
KEYS_BY_USER_VIEW_DDL = (
    f"CREATE MATERIALIZED VIEW IF NOT EXISTS {KEYS_BY_USER_VIEW} TO {KEYS_BY_USER} AS "
    f"SELECT claim.3 AS user, key FROM {LINKS_TABLE}"
)


def persons_source_ddl(view: str = PERSONS_SOURCE, links_table: str = LINKS_TABLE) -> str:
    """The persons dictionary's source view: a key's person is the user it links to, and that user's own
    link if it has one (two links at most)."""
    links = f"(SELECT key, min(claim).3 AS user FROM {links_table} GROUP BY key)"
    return (
        f"CREATE OR REPLACE VIEW {view} AS "
        "SELECT first.key AS key, if(second.user != '', second.user, first.user) AS person "
        f"FROM {links} AS first LEFT JOIN {links} AS second ON first.user = second.key"
    )


PERSONS_SOURCE_DDL = persons_source_ddl()
# The dictionary maps sipHash64(key) → sipHash64(person): a lookup by integer and a GROUP BY on integers
# cost a stitched funnel about 1.13x the raw one, against 1.3x with String keys and persons
# (docs/benchmarks.md). Two ids merge wrongly only if their 64-bit hashes collide (about 1 in 10^7 for a
# million persons; a chosen id colliding with a given one is a 2^64 search).


def persons_ddl(
    database: str = "", source: str = "", name: str = PERSONS_DICTIONARY, lifetime: str = "0"
) -> str:
    """The persons dictionary. `database`: where its source view is, when not in the default database (the
    source's query runs there, whatever the dictionary's database); `source`: more of its CLICKHOUSE
    source's settings (a server needs the user and password its load runs as: `funnels.store.server_events`);
    `name`: what the statement creates (on a cluster, qualified and `ON CLUSTER`: `funnels.store.cluster`);
    `lifetime`: 0, reloaded only when told (`SYSTEM RELOAD DICTIONARY`), or a range in seconds between
    reloads the server makes by itself (a cluster's backstop)."""
    view = f"{database}.{PERSONS_SOURCE}" if database else PERSONS_SOURCE
    return (
        f"CREATE OR REPLACE DICTIONARY {name} (key UInt64, person UInt64) PRIMARY KEY key "
        "SOURCE(CLICKHOUSE(QUERY 'SELECT sipHash64(key) AS key, sipHash64(person) AS person "
        f"FROM {view}'{source})) LAYOUT(HASHED()) LIFETIME({lifetime})"
    )


PERSONS_DDL = persons_ddl()

# `aggregate_by`'s memberships (`funnels.store.groups`, which loads and reloads them): their tables' shape and
# their dictionary, here beside the persons dictionary because the cluster layout makes them too
# (`funnels.store.cluster.groups_ddl`).
GROUPS_TABLE = "identity_groups"
GROUPS_LOADS = "identity_groups_loads"
GROUPS_DICTIONARY = "identity_groups_members"

GROUPS_COLUMNS = "(model String, load_id String, member UInt64, grp UInt64, group_id String)"
GROUPS_ORDER = "ORDER BY (model, load_id, member)"
LOADS_COLUMNS = "(model String, load_id String, generation String)"
LOADS_ORDER = "ORDER BY (model, load_id)"


def groups_dictionary_ddl(
    database: str = "", source: str = "", name: str = GROUPS_DICTIONARY, lifetime: str = "0"
) -> str:
    """The memberships dictionary: each model's latest load only. `database`, `source`, `name` and
    `lifetime` as `persons_ddl` takes them. On one server it is made anew by each process's first use, as
    the persons dictionary is on each open (a changed password, a changed shape); on a cluster by the
    layout (`funnels.store.cluster.groups_ddl`), with a lifetime as its backstop: every lifetime the server
    checks whether its copy of the tables changed (`INVALIDATE_QUERY`: the loads, the latest one, the
    memberships' count) and reloads only then."""
    table = f"{database}.{GROUPS_TABLE}" if database else GROUPS_TABLE
    loads = f"{database}.{GROUPS_LOADS}" if database else GROUPS_LOADS
    invalidate = (
        f" INVALIDATE_QUERY 'SELECT ((SELECT count() FROM {loads}), (SELECT max(load_id) FROM {loads}), "
        f"(SELECT count() FROM {table}))'"
        if lifetime != "0"
        else ""
    )
    return (
        f"CREATE OR REPLACE DICTIONARY {name} (key UInt64, one UInt64, many Array(UInt64)) "
        "PRIMARY KEY key SOURCE(CLICKHOUSE(QUERY 'SELECT key, if(length(groups) = 1, groups[1], 0) AS one, "
        "if(length(groups) = 1, emptyArrayUInt64(), groups) AS many FROM (SELECT sipHash64(model, member) AS key, "
        f"groupUniqArray(grp) AS groups FROM {table} WHERE (model, load_id) IN (SELECT model, max(load_id) "
        f"FROM {loads} GROUP BY model) GROUP BY key)'{invalidate}{source})) LAYOUT(HASHED()) LIFETIME({lifetime})"
    )


ARROW_SCHEMA = pa.schema(
    [
        pa.field(name, pa.timestamp("ms", tz="UTC"))
        if name in ("ts", "received_at")
        else pa.field(name, pa.uint64() if name == "log_seq" else pa.string())
        for name in EVENT_COLUMNS
    ]
)


# The identify events alone (`funnels.analytics.sql.identified_sql`: a person property is the value on a person's
# latest identify event of any time): a view copies each inserted block's identify rows into a narrow table of
# their own, so a breakdown by a person property reads those, not every event before its scan's end (in the
# events table they are spread over every granule). A ReplacingMergeTree on the events' own key: a row stored
# twice (a retried insert, a backfill repeated after a crash) collapses, and the latest value is a max anyway.
IDENTIFIES_TABLE = "identify_events"
IDENTIFIES_VIEW = "identify_events_mv"
IDENTIFIES_COLUMNS = "(user_key String, ts DateTime64(3, 'UTC'), event_id String, properties String)"
IDENTIFIES_KEY = "PARTITION BY toYYYYMM(ts) ORDER BY (user_key, ts, event_id)"
# The table's comment says whether it holds every identify row stored before its view existed.
BACKFILLING, COMPLETE = "backfilling", "complete"


def identifies_select(events: str = "events") -> str:
    return f"SELECT user_key, ts, event_id, properties FROM {events} WHERE type = 'identify'"


IDENTIFIES_DDL = (
    f"CREATE TABLE IF NOT EXISTS {IDENTIFIES_TABLE} {IDENTIFIES_COLUMNS} ENGINE = ReplacingMergeTree "
    f"{IDENTIFIES_KEY} COMMENT '{BACKFILLING}'"
)
IDENTIFIES_VIEW_DDL = (
    f"CREATE MATERIALIZED VIEW IF NOT EXISTS {IDENTIFIES_VIEW} TO {IDENTIFIES_TABLE} AS {identifies_select()}"
)

SHARD_EVENTS = "events_local"  # on a cluster, each shard's events table (`funnels.store.cluster`)
SHARD_IDENTIFIES = "identify_events_local"  # and each shard's identify events
_CLUSTER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ClusterLayout:
    """Events spread over a ClickHouse cluster (`funnels.store.cluster`): the cluster's name as
    `remote_servers` spells it, and the database the tables are in on every node. Both are checked to be
    plain names, so they can be written into SQL text."""

    cluster: str
    database: str

    def __post_init__(self) -> None:
        if not _CLUSTER_NAME.fullmatch(self.cluster):
            raise ValueError(f"the cluster name {self.cluster!r} must be letters, digits, '_', '.' and '-'")
        if not self.database.replace("_", "").isalnum():
            raise ValueError(f"the database name {self.database!r} must be letters, digits and underscores")

    @property
    def on_cluster(self) -> str:
        return f"ON CLUSTER '{self.cluster}'"

    @property
    def shard_events(self) -> str:
        """Each shard's events table, qualified (a query sent to the shards names its database)."""
        return f"{self.database}.{SHARD_EVENTS}"


class EventStoreError(Exception):
    """A query or write the event store refused."""


class LayoutOutdated(EventStoreError):
    """A cluster layout made by an older version lacks what this one needs (`funnels events init
    --cluster NAME` again adds it): an operator's step, not the request's fault."""

    def __init__(self, message: str, cluster: str) -> None:
        super().__init__(message)
        self.cluster = cluster


class EventStoreUnavailable(EventStoreError):
    """The event store could not be reached (a server down, a network failure): nothing was refused, the
    same call may succeed later. Whether a write that failed so was stored is not known."""


class QueryTimeout(EventStoreError):
    """An analytics query ran past its time limit (ClickHouse's `max_execution_time`) and was stopped."""

    def __init__(self, message: str, limit_seconds: float) -> None:
        super().__init__(message)
        self.limit_seconds = limit_seconds


class QueryCancelled(EventStoreError):
    """An analytics query was cancelled (`EventStore.cancel`: its client went away) before it finished."""


# ClickHouse's error codes for the two (the message of a refused query carries `Code: N.` and the name).
_TIMEOUT_CODES = ("TIMEOUT_EXCEEDED", "Code: 159.")
_CANCELLED_CODES = ("QUERY_WAS_CANCELLED", "Code: 394.")


@dataclass
class QueryBudget:
    """What one analytics request may spend: a time limit per query (`max_execution_time`, None for none)
    and a tag its queries carry, by which `EventStore.cancel` finds and stops them. Made by the caller that
    may cancel (the API, for a request whose client may go away), entered with `EventStore.limited` on the
    thread that runs the queries."""

    limit_seconds: float | None = None
    tag: str = field(default_factory=lambda: uuid.uuid4().hex)
    cancelled: bool = False
    _issued: int = 0

    def next_query_id(self) -> str:
        """A query id of this budget's (unique per query: a server refuses two running with one id)."""
        self._issued += 1
        return f"{self.prefix}{self._issued}"

    @property
    def prefix(self) -> str:
        """What every query id (or, on chDB, the leading comment) of this budget starts with."""
        return f"funnels-{self.tag}-"

    def refused(self, message: str) -> EventStoreError:
        """The error for a query of this budget that ClickHouse refused with `message`."""
        if self.limit_seconds is not None and any(code in message for code in _TIMEOUT_CODES):
            return QueryTimeout(
                f"the query ran longer than the limit of {self.limit_seconds:g} s and was stopped",
                self.limit_seconds,
            )
        if any(code in message for code in _CANCELLED_CODES):
            return QueryCancelled("the query was cancelled")
        return EventStoreError(message)


_BUDGET: ContextVar[QueryBudget | None] = ContextVar("funnels_query_budget", default=None)


def current_budget() -> QueryBudget | None:
    """The budget this thread's queries run under (`EventStore.limited`), if any."""
    return _BUDGET.get()


@dataclass
class Results:
    """A query result: column metadata, rows as lists, and ClickHouse's statistics."""

    meta: list[dict[str, str]]
    rows: list[list[Any]]
    statistics: dict[str, Any] = field(default_factory=dict)

    def dicts(self) -> list[dict[str, Any]]:
        names = [column["name"] for column in self.meta]
        return [dict(zip(names, row, strict=True)) for row in self.rows]

    def first(self) -> list[Any] | None:
        return self.rows[0] if self.rows else None


def events_to_arrow(events: Sequence[Event], log_seqs: Sequence[int] | None = None) -> pa.Table:
    """Events as an Arrow table in the store's column order."""
    columns: dict[str, list[Any]] = {
        "event_id": [e.event_id for e in events],
        "type": [e.type for e in events],
        "event": [e.event for e in events],
        "user_key": [e.user_key for e in events],
        "user_id": [e.user_id for e in events],
        "anonymous_id": [e.anonymous_id for e in events],
        "ts": [e.ts_ms for e in events],
        "received_at": [e.received_ms for e in events],
        "properties": [e.properties_json() for e in events],
    }
    for name in STANDARD_COLUMNS:
        columns[name] = [e.columns.get(name, "") for e in events]
    columns["log_seq"] = list(log_seqs) if log_seqs is not None else [0] * len(events)
    return pa.Table.from_pydict(columns, schema=ARROW_SCHEMA)


class EventStore(ABC):
    """The event store, whichever backend holds it: what funnels, the catalog, the shipper, imports and the
    people pages ask of it, in their words.

    How it works: the schema, the identity links and the persons dictionary's generation are the same
    ClickHouse SQL on every backend, so they are written once here over four primitives each backend
    supplies: `_run` (a statement), `_select` (a query's rows as `Results`), `_insert` (an Arrow table into
    `events`) and `close`. Every user value reaches them as a bound parameter. The import's fast paths are
    optional: `bulk_load` (a backend may pause what slows a big load) and `parquet_source` (a backend that
    reads this machine's files). The backends: `funnels.store.chdb_events` (embedded, the default) and
    `funnels.store.server_events` (a ClickHouse server through clickhouse-connect).

    `self._lock` guards the links' state (the generation counters, the links known), and orders each insert
    after the settling of its claims; a backend may use it for more (chDB serializes every call with it).
    """

    # Whether this process is the only writer: then a claim of the user a key already links to cannot
    # change the link (`funnels.store.links`); with several writers it may have changed meanwhile.
    single_writer = True
    # The cluster the events are spread over, if they are (a funnel then runs on the shards:
    # `funnels.analytics.sql.cluster_funnel_sql`); None for one table.
    cluster: ClusterLayout | None = None

    def __init__(self, lock: threading.RLock | None = None, known_links: int = 100_000) -> None:
        self._lock = lock or threading.RLock()
        self._known_links = known_links
        # The memberships of `aggregate_by` (`funnels.store.groups`) take turns.
        self.groups_lock = threading.Lock()
        self._start_afresh()

    def _start_afresh(self) -> None:
        """What this object remembers of the store's contents, as when it has just opened (`__init__`,
        `forget`)."""
        # Inserts that may have changed a link, and the count the persons dictionary last loaded at.
        self._links_generation, self._persons_generation = 1, 0
        # What other processes' link changes looked like when the dictionary last loaded (`_links_elsewhere`).
        self._persons_elsewhere: int | None = None
        self.persons_loads = 0  # how many times a query (re)loaded the persons dictionary
        # The links of the keys claimed lately (`funnels.store.links`), and whether a bulk load runs.
        self._known = KnownLinks(self._known_links)
        self._loading = False
        # The memberships' tables and dictionary are made on first use (`funnels.store.groups`), and each
        # model's load the dictionary last reloaded at.
        self.groups_created = False
        self.groups_reloaded: dict[str, str] = {}

    def forget(self) -> None:
        """Forget what this object remembers of the store's contents (the links known, the generations the
        persons dictionary loaded at, whether the memberships' tables exist and their loads), as a store
        just opened knows nothing: for a store emptied and returned to its new schema behind this object's
        back (the tests share one embedded store per process: tests/shared_events.py)."""
        with self._lock, self.groups_lock:
            self._start_afresh()

    # Whether a failed insert stores the whole batch or none of it (one server: one block, one part per
    # partition); on a cluster a batch may reach some shards only (`funnels.ingest.copy` resumes so).
    whole_batches = True

    # --- what a backend supplies ------------------------------------------------------------------------

    @abstractmethod
    def _run(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement; `EventStoreError` (or `EventStoreUnavailable`) when it fails."""

    @abstractmethod
    def _select(self, sql: str, params: Mapping[str, Any] | None = None) -> Results:
        """Run a query: its rows as ClickHouse's JSONCompact format gives them (64-bit integers as text)."""

    @abstractmethod
    def _insert(self, table: pa.Table, token: str | None) -> None:
        """Append an Arrow table to `events` in one insert. `token`: the same token on a retried insert of
        the same rows lets a backend that can deduplicate inserts store them once."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection or session."""

    @contextmanager
    def bulk_load(self, received_ms: int) -> Iterator[None]:
        """Bulk-load mode for an import whose rows are stamped `received_ms` (optional: a backend may pause
        what slows a big load). The identity links of the load are the backend's to keep right."""
        yield

    def dictionary_source(self) -> tuple[str, str]:
        """What a dictionary's CLICKHOUSE source needs on this backend: the database its tables are in (''
        for the default one) and more source settings (a server's user and password)."""
        return "", ""

    def _links_elsewhere(self) -> int | None:
        """How many times other processes may have changed a link, as the store tells (a backend with
        other writers; None: this process is the only one). A stitched query reloads the persons dictionary
        when it moved. Must be cheap: it runs before every stitched query."""
        return None

    def _tell_links_changed(self) -> None:
        """Tell the other processes' stitched queries that this one may have changed a link (a backend with
        other writers; called after the insert, under the lock)."""
        return None

    def parquet_source(self, path: Path) -> tuple[str, dict[str, Any]] | None:
        """A table function reading the Parquet file at `path` on this machine, with its parameters, for
        `INSERT ... SELECT` (`insert_select`); None when the engine cannot read this machine's files."""
        return None

    # --- the schema -------------------------------------------------------------------------------------

    def _persons_ddl(self) -> str:
        return PERSONS_DDL

    def _create_schema(self) -> None:
        """The events table, its projection, the identity links and the persons dictionary; upgrades a
        schema an older version made (idempotent)."""
        self.execute(EVENTS_DDL)
        self._add_names_projection()
        self._add_identity_links()
        self._add_identifies()

    def _add_names_projection(self) -> None:
        """Give a table made before the projection existed its projection; existing rows are projected by a
        background mutation (until it is done, queries read those parts' rows instead, with the same result)."""
        found = self.query(
            "SELECT count() FROM system.projections WHERE database = currentDatabase() AND table = 'events' "
            "AND name = {name:String}",
            {"name": NAMES_PROJECTION},
        ).first()
        if found is not None and int(found[0]):
            return
        self.execute(f"ALTER TABLE events MODIFY SETTING {PROJECTION_MODE}")
        self.execute(
            f"ALTER TABLE events ADD PROJECTION IF NOT EXISTS {NAMES_PROJECTION} ({NAMES_PROJECTION_QUERY})"
        )
        self.execute(f"ALTER TABLE events MATERIALIZE PROJECTION {NAMES_PROJECTION}")

    def _add_identity_links(self) -> None:
        """Create the links table, the keys-by-user table, their views and the persons dictionary. A data
        directory made before one of the views gets its table backfilled once, before the view exists: the
        keys by user from the links, the links from the stored events (through the keys-by-user view). A
        backfill adds only claims, which a min keeps once, and pairs, which the keys-by-user table holds
        once, so repeating it after a crash changes nothing. A links table of the first version (an argMin
        state per claim, which does not tell the claim's time) is dropped and rebuilt the same way."""
        claim = self.query(
            "SELECT type FROM system.columns WHERE database = currentDatabase() AND table = {table:String} "
            "AND name = 'claim'",
            {"table": LINKS_TABLE},
        ).first()
        if claim is not None and str(claim[0]).startswith("AggregateFunction("):
            for view in (LINKS_VIEW, KEYS_BY_USER_VIEW):
                self.execute(f"DROP VIEW IF EXISTS {view}")
            for table in (LINKS_TABLE, KEYS_BY_USER):
                self.execute(f"DROP TABLE IF EXISTS {table}")
        self.execute(LINKS_DDL)
        if not self._exists(KEYS_BY_USER_VIEW):
            self.execute(KEYS_BY_USER_DDL)
            self.execute(
                f"INSERT INTO {KEYS_BY_USER} SELECT min(claim).3, key FROM {LINKS_TABLE} GROUP BY key"
            )
            self.execute(KEYS_BY_USER_VIEW_DDL)
        if not self._exists(LINKS_VIEW):
            self.execute(f"INSERT INTO {LINKS_TABLE} {LINKS_SELECT}")
            self.execute(LINKS_VIEW_DDL)
        self.execute(PERSONS_SOURCE_DDL)
        self.execute(self._persons_ddl())

    def _add_identifies(self) -> None:
        """The identify events' own table and its view; a store made before them gets the identify rows it
        holds copied once. The view comes first, so a row inserted meanwhile (by another process, on a
        server) is copied by one or the other, and twice at worst, which the table collapses; the table's
        comment turns `complete` only after the copy, so a copy a crash cut short is made again on the next
        open."""
        self.execute(IDENTIFIES_DDL)
        self.execute(IDENTIFIES_VIEW_DDL)
        comment = self.query(
            "SELECT comment FROM system.tables WHERE database = currentDatabase() AND name = {name:String}",
            {"name": IDENTIFIES_TABLE},
        ).first()
        if comment is not None and comment[0] == COMPLETE:
            return
        self.execute(f"INSERT INTO {IDENTIFIES_TABLE} {identifies_select()}")
        self.execute(f"ALTER TABLE {IDENTIFIES_TABLE} MODIFY COMMENT '{COMPLETE}'")

    def _exists(self, name: str) -> bool:
        found = self.query(
            "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = {name:String}",
            {"name": name},
        ).first()
        return found is not None and int(found[0]) > 0

    # --- queries and statements -------------------------------------------------------------------------

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns nothing."""
        self._run(sql, params)

    def query(self, sql: str, params: Mapping[str, Any] | None = None, persons: bool = False) -> Results:
        """Run a SELECT; every user value must come in `params` (bound as ClickHouse query parameters: a
        list of strings is an `Array(String)`).

        `persons`: the query reads the `identity_persons` dictionary, which is reloaded first when an insert
        since it last loaded may have changed a link (under the lock: the reload only, not the query).

        Inside `limited(budget)` (an analytics request) the query runs under the budget: concurrently with
        other such queries and with inserts, with its time limit (`QueryTimeout` past it), cancellable by
        `cancel(budget)` (`QueryCancelled`)."""
        if persons:
            with self._lock:
                elsewhere = self._links_elsewhere()
                if self._persons_generation != self._links_generation or elsewhere != self._persons_elsewhere:
                    generation = self._links_generation
                    self.reload_dictionary(PERSONS_DICTIONARY)
                    self._persons_generation, self._persons_elsewhere = generation, elsewhere
                    self.persons_loads += 1
        budget = current_budget()
        if budget is None:
            return self._select(sql, params)
        if budget.cancelled:
            raise QueryCancelled("the query was cancelled")
        return self._select_limited(sql, params, budget)

    @contextmanager
    def limited(self, budget: QueryBudget) -> Iterator[QueryBudget]:
        """Run this thread's queries (`query`) under `budget` until the block ends."""
        token = _BUDGET.set(budget)
        try:
            yield budget
        finally:
            _BUDGET.reset(token)

    def cancel(self, budget: QueryBudget) -> None:
        """Stop the budget's queries: the running ones are killed (`KILL QUERY`, asynchronously: they end
        with `QueryCancelled` at their next block), later ones refused. Safe from any thread; call again
        while the queries' thread has not finished (a query that started as the kill ran escapes it)."""
        budget.cancelled = True
        self._kill(budget.prefix)

    # Which rows of `system.processes` are a budget's queries (`{prefix:String}`: `QueryBudget.prefix`).
    _BUDGET_QUERIES = "startsWith(query_id, {prefix:String})"

    def _kill(self, prefix: str) -> None:
        """Kill the running queries of the budget whose ids start with `prefix`."""
        self._run(f"KILL QUERY WHERE {self._BUDGET_QUERIES} ASYNC", {"prefix": prefix})

    def running(self, budget: QueryBudget) -> int:
        """How many of the budget's queries are running now (`system.processes`; on a server, the node this
        process is connected to)."""
        row = self.query(
            f"SELECT count() FROM system.processes WHERE {self._BUDGET_QUERIES}", {"prefix": budget.prefix}
        ).first()
        return int(row[0]) if row else 0

    def _select_limited(self, sql: str, params: Mapping[str, Any] | None, budget: QueryBudget) -> Results:
        """`_select` under an analytics budget (a backend runs it beside other queries, with the budget's
        query id and time limit); by default as `_select`."""
        return self._select(sql, params)

    def reload_dictionary(self, name: str, replicated: Sequence[str] = ()) -> None:
        """Reload the dictionary `name` (the persons dictionary before a stitched query; the memberships'
        after a load, `funnels.store.groups`). On a cluster (`funnels.store.server_events`): on every node
        (the shards look ids up), once every node's replicas of the `replicated` tables, in order, have
        fetched what was inserted before."""
        self._run(f"SYSTEM RELOAD DICTIONARY {name}")

    # --- inserts and the identity links -----------------------------------------------------------------

    @property
    def links_generation(self) -> int:
        """How many inserts so far may have changed an identity link (a stitched query reloads the persons
        dictionary first when one came since it last loaded)."""
        return self._links_generation

    def insert_events(self, events: Sequence[Event], log_seqs: Sequence[int] | None = None) -> None:
        """Append events; shipped ones with their log sequence numbers (a retried batch of the same numbers
        carries the same deduplication token, so a backend that can tell stores it once)."""
        token = f"log:{log_seqs[0]}-{log_seqs[-1]}:{len(log_seqs)}" if log_seqs else None
        self.insert_arrow(events_to_arrow(events, log_seqs), token)

    def insert_arrow(self, table: pa.Table, token: str | None = None) -> None:
        """Append an Arrow table whose columns are (a subset of) the store's columns, in one insert. The
        persons dictionary is marked behind only when the rows may change a link: they claim a key without
        one, or claim a key earlier than its link for another user (`funnels.store.links`)."""
        if table.num_rows == 0:
            return
        claims = None if self._loading else batch_claims(table)  # None: may change any link
        with self._lock:
            changes, after = self._settle(claims)
            try:
                self._insert(table, token)
                self._known.update(after)
            finally:  # a failed insert may have written some blocks
                if changes:
                    self._links_generation += 1
                    self._tell_links_changed()

    def insert_copied(self, table: pa.Table, token: str) -> None:
        """Append a batch copied from another store (`funnels events copy`) in one insert with its token.
        Its claims are not followed one by one: the links are marked as changed."""
        with self._lock:
            try:
                self._insert(table, token)
            finally:
                self._links_changed()

    def _settle(self, claims: dict[str, Claim] | None) -> tuple[bool, dict[str, Claim | None]]:
        """Whether an insert with these claims may change a link, and the links known after it. During a
        bulk load the view is off: the load's end adds the links and marks the dictionary behind."""
        if self._loading:
            return False, {}
        if claims is None:
            return True, {}
        unknown = [key for key in claims if key not in self._known]
        stored = self._stored_links(unknown) if unknown else {}
        known = {key: self._known.get(key) or stored.get(key) for key in claims}
        return settle(claims, known, single_writer=self.single_writer)

    def _stored_links(self, keys: list[str]) -> dict[str, Claim]:
        """The links of these keys as the links table holds them (a lookup by its primary key)."""
        rows = self._select(
            "SELECT key, toUnixTimestamp64Milli(least.1), least.2, least.3 FROM (SELECT key, min(claim) AS "
            f"least FROM {LINKS_TABLE} WHERE key IN {{keys:Array(String)}} GROUP BY key) "
            "SETTINGS output_format_json_quote_64bit_integers = 0",  # the times as JSON numbers
            {"keys": keys},
        ).rows
        return {key: (ms, event_id, user) for key, ms, event_id, user in rows}

    def insert_select(
        self, columns: Sequence[str], select: str, params: Mapping[str, Any], linking: bool = True
    ) -> None:
        """`INSERT INTO events (columns) <select>`: rows ClickHouse reads itself (a file, say). `linking`:
        whether the rows may carry identity links (when unsure, say so: it costs one dictionary reload)."""
        with self._lock:
            try:
                self._run(f"INSERT INTO events ({', '.join(columns)}) {select}", params)
            finally:
                if linking:
                    self._links_changed()

    def _links_changed(self) -> None:
        """Links may have changed in ways not followed claim by claim: mark the persons dictionary behind and
        forget the links known (under the lock)."""
        with self._lock:
            self._links_generation += 1
            self._known.clear()
            self._tell_links_changed()

    @contextmanager
    def views_after_load(self, received_ms: int) -> Iterator[None]:
        """Bulk-load mode for the identity links and the identify events' table: their views are dropped
        during the load, then recreated, and what the rows stored meanwhile (received at `received_ms`, as
        an import stamps its rows, or shipped with a `log_seq` above today's) add to each is added from the
        table in one pass. Computing the links block by block cost the native Parquet import about a third
        of its rate (docs/benchmarks.md). A key keeps the least of its claims, so adding a row's claim twice
        changes nothing, and the identify table collapses a row stored twice; the views are back before
        that pass, so a row inserted meanwhile is caught by one or the other. After a crash in between there
        is no links view and the identify table is marked as being backfilled, so the next open backfills
        both. Only for a store no other process writes meanwhile (their rows would miss the views): the
        embedded one."""
        since = self.max_log_seq()
        rows = "received_at = fromUnixTimestamp64Milli({received:Int64}, 'UTC') OR log_seq > {since:UInt64}"
        self._loading = True
        try:
            self.execute(f"ALTER TABLE {IDENTIFIES_TABLE} MODIFY COMMENT '{BACKFILLING}'")
            self.execute(f"DROP VIEW IF EXISTS {IDENTIFIES_VIEW}")
            self.execute(f"DROP VIEW IF EXISTS {LINKS_VIEW}")
            yield
        finally:
            with self._lock:
                self._loading = False  # whatever failed: inserts must be told apart again
                params = {"received": received_ms, "since": since}
                try:
                    self._run(LINKS_VIEW_DDL)
                    self._run(f"INSERT INTO {LINKS_TABLE} {links_select(rows)}", params)
                    self._run(IDENTIFIES_VIEW_DDL)
                    self._run(f"INSERT INTO {IDENTIFIES_TABLE} {identifies_select()} AND ({rows})", params)
                    self._run(f"ALTER TABLE {IDENTIFIES_TABLE} MODIFY COMMENT '{COMPLETE}'")
                finally:
                    self._links_changed()

    def linked_users(self, key: str) -> list[str]:
        """The users `key` links to, nearest first: its own link, then that user's (at most two, as a
        stitched funnel follows them); [] when it links nowhere."""
        found: list[str] = []
        current = key
        for _ in range(2):
            row = self.query(
                f"SELECT min(claim).3 FROM {LINKS_TABLE} WHERE key = {{key:String}}", {"key": current}
            ).first()
            if row is None or not row[0] or row[0] == key or row[0] in found:
                break
            current = str(row[0])
            found.append(current)
        return found

    def keys_linked_to(self, users: Sequence[str], limit: int) -> list[str]:
        """Up to `limit` keys (anonymous or aliased ids) whose own link is one of `users`, in key order: the
        keys ever claimed by them (`identity_keys_by_user`), kept where the claim is still the key's link;
        both reads go by a table's primary key."""
        if not users:
            return []
        rows = self.query(
            f"SELECT key FROM {LINKS_TABLE} WHERE key IN (SELECT key FROM {KEYS_BY_USER} WHERE user IN "
            "{users:Array(String)}) GROUP BY key HAVING min(claim).3 IN {users:Array(String)} "
            "ORDER BY key LIMIT {limit:UInt32}",
            {"users": list(users), "limit": limit},
        ).rows
        return [str(row[0]) for row in rows]

    # --- a person's events -----------------------------------------------------------------------------

    def events_before(
        self, keys: Sequence[str], before_ms: int, inclusive: bool, tie_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Up to `limit` events of the user keys `keys`, newest first (time, then event id, descending),
        that come before a page's cursor: at `before_ms` or earlier (`inclusive`), or earlier and, with
        `tie_id`, also those at `before_ms` whose event id is smaller. Rows: event_id, type, event, ts_ms,
        properties (JSON text)."""
        at = "toUnixTimestamp64Milli(ts)"
        where = f"{at} {'<=' if inclusive else '<'} {{before:Int64}}"
        if tie_id is not None:
            where = f"({where} OR ({at} = {{before:Int64}} AND event_id < {{tie_id:String}}))"
        return self.query(
            f"SELECT event_id, type, event, {at} AS ts_ms, properties FROM events"
            f" WHERE user_key IN {{keys:Array(String)}} AND {where}"  # one parameter: the SQL's size is fixed
            " ORDER BY ts DESC, event_id DESC LIMIT {limit:UInt32}",
            {"keys": list(keys), "before": before_ms, "tie_id": tie_id or "", "limit": limit},
        ).dicts()

    # --- the rest ---------------------------------------------------------------------------------------

    def truncate(self) -> None:
        """Delete every event, and with them every identity link (tests start over with it)."""
        with self._lock:
            try:
                for table in ("events", LINKS_TABLE, KEYS_BY_USER, IDENTIFIES_TABLE):
                    self._run(f"TRUNCATE TABLE {table}")
            finally:
                self._links_changed()

    def max_log_seq(self) -> int:
        """The highest log sequence number stored: the shipper's watermark."""
        row = self.query("SELECT max(log_seq) FROM events").first()
        return int(row[0]) if row else 0

    def store_id(self) -> str:
        """What names this store whichever URL reaches it: its database's UUID (the same on every replica
        of a database created ON CLUSTER). Nodes sharing a server ship under one lease named by it."""
        row = self.query("SELECT toString(uuid) FROM system.databases WHERE name = currentDatabase()").first()
        if row is None:
            raise EventStoreError("the event store's database is not in system.databases")
        return str(row[0])

    def count(self) -> int:
        row = self.query("SELECT count() FROM events").first()
        return int(row[0]) if row else 0

    def probe(self) -> None:
        """Prove the store readable and writable (`/healthz`): a query that reads no rows, and a statement
        that writes the catalog; `EventStoreError` if either fails."""
        self.query("SELECT count() FROM events WHERE log_seq = 0 AND 0")
        self.execute("CREATE TABLE IF NOT EXISTS health (at UInt64) ENGINE = Memory")
