"""The event store on a ClickHouse server, through clickhouse-connect (`--events-url` / `FUNNELS_EVENTS_URL`).

The same DDL and the same analytics SQL as the embedded store (`funnels.store.events`); what differs:

- **Parameters** are bound by clickhouse-connect (server-side `{name:Type}` binding, sent beside the SQL).
- **Inserts** go as Arrow over HTTP, one insert per batch. A shipped batch carries an insert deduplication
  token made of its log sequence numbers, and the events table keeps the last 1,000 inserts' tokens
  (`non_replicated_deduplication_window`; a replicated table deduplicates by default): a batch retried
  after a failure whose outcome was unknown is stored once. The ReplacingMergeTree on (user key, time,
  event id) would collapse a double only at a merge, and the funnel SQL does not read with FINAL, so the
  token is what keeps counts exact. The shipper reads its watermark back (`max(log_seq)`) after a failure.
- **Unreachable** (connection refused, timeouts, TLS): `EventStoreUnavailable`, so callers can tell it from
  a refused query; the shipper retries, and the state store's log keeps every acknowledged event meanwhile.
- **The persons dictionary**'s CLICKHOUSE source runs its query as a user of the server: without `USER`
  and `PASSWORD` it would be `default` with no password, which a secured server refuses, so the DDL names
  the URL's user and password, and the source view by its database (the source's query does not run in
  the dictionary's database) (re-created on every open, so a changed password is picked up; the
  server shows the password as `[HIDDEN]`).
- **Several writers**: the links known to this process may be stale (`EventStore.single_writer`), and
  links another process adds (another node, `funnels import`, `funnels events copy`) must reach this one's
  persons dictionary: every insert that may change a link also adds a row (this store's id, its
  generation) to `identity_links_changes`, and before a stitched query the sum of each writer's greatest
  generation is read; when it moved since the dictionary last loaded, the dictionary is reloaded (on a
  cluster, on every node; the layout's own table, `funnels.store.cluster`).
- **A cluster** (`funnels events init --cluster NAME`, `funnels.store.cluster`): recognised on open from
  the `events` table's engine (`self.cluster`); the schema is then the layout's, inserts go through the
  Distributed `events` in the foreground (each shard stores its part, token and all, before the insert
  returns) and the persons dictionary is reloaded on every node; so is `aggregate_by`'s memberships
  dictionary, once every node's replicas of its tables have fetched the new load (`reload_dictionary`).
- **Concurrent queries**: the client keeps no session (`autogenerate_session_id=False`; a ClickHouse session
  runs one query at a time), so this process's queries run at once over its connection pool. An analytics
  query (`EventStore.limited`) carries its budget's query id and `max_execution_time`; `cancel` kills by the
  id's prefix (`KILL QUERY`). The HTTP read timeout (`send_receive_timeout`, 300 s) bounds every query too:
  a longer limit is cut to it, as `EventStoreUnavailable`. On clickhouse-connect's chDB interface (tests) a
  client runs one query at a time and a query killed from a second client leaves its partial output for the
  next one to read, so there `cancel` only refuses the budget's later queries.
- No bulk-load mode and no `file()` fast path: other processes may write meanwhile, and the server cannot
  read this machine's files, so `funnels import` takes the column-wise path in Arrow batches.

The URL: `http[s]://user:password@host[:port]/database` (port 8123, or 8443 with https); the database is
created if missing (`chdb:///path/to/dir`: this backend on an embedded chDB directory, for tests). `redact` keeps the password out of every message. `ServerEventStore.on_chdb` runs the
same class on clickhouse-connect's embedded chDB interface: the tests' second pass and the benchmark use it,
since no ClickHouse server can be installed here.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson
import pyarrow as pa
from clickhouse_connect import get_client
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

from funnels.store.cluster import (
    DEDUPLICATION_WINDOW,
    INSERT_SETTINGS,
    WATERMARK,
    ClusterLayoutError,
    backfill_identifies,
    cluster_ddl,
    identifies_behind,
    layout_of,
    reload_dictionary,
    sync_replica,
    truncate_statements,
)
from funnels.store.events import (
    LINKS_CHANGES,
    ClusterLayout,
    EventStore,
    EventStoreError,
    EventStoreUnavailable,
    QueryBudget,
    Results,
    persons_ddl,
)

# Link changes other processes made: each writer (a store opened by one process) keeps its count of inserts
# that may have changed a link, one row per change; a reader sums each writer's greatest count. A few rows
# a writer once merged, so the sum costs a round trip and a read of a tiny table per stitched query.
LINKS_CHANGES_DDL = (
    f"CREATE TABLE IF NOT EXISTS {LINKS_CHANGES} (writer String, generation UInt64) "
    "ENGINE = ReplacingMergeTree(generation) ORDER BY writer"
)
TARGET_VERSION = "26.9"  # the ClickHouse release chDB 4.4.0 embeds, which the tests run against


def redact(url: str) -> str:
    """The URL with its password replaced by `***` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _literal(text: str) -> str:
    """A ClickHouse string literal (for the dictionary's source settings, which take no parameters)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _database_name(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"the database name {name!r} must be letters, digits and underscores")
    return name


class ServerEventStore(EventStore):
    """The event store on a ClickHouse server (or, for tests, on clickhouse-connect's chDB interface)."""

    single_writer = False  # other processes (CLI commands, other nodes) write the server too

    def __init__(
        self,
        client: Client,
        database: str,
        name: str,
        source: str = "",
        known_links: int = 100_000,
        init_cluster: str | None = None,
    ) -> None:
        """Open the store in `database`, creating the one-server schema there unless the database holds the
        cluster layout; `init_cluster`: first lay the cluster layout out on that cluster's every node
        (`funnels events init --cluster`)."""
        super().__init__(threading.RLock(), known_links)
        self._writer = uuid.uuid4().hex  # this store's rows in `identity_links_changes`
        self._client = client
        self.cancellable = True  # whether `cancel` kills running queries (not on clickhouse-connect's chDB)
        self.name = name  # what messages call the store: its URL, password redacted
        self._source = source
        self.database = database = _database_name(database)
        if init_cluster is not None:
            self._init_cluster(ClusterLayout(init_cluster, database))
        else:
            self._run(f"CREATE DATABASE IF NOT EXISTS {database}")
        client.database = database
        self.cluster = self._find_layout()
        if self.cluster is None:
            self._create_schema()
            self._run(
                "ALTER TABLE events MODIFY SETTING "
                f"non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
            )
            self._run(LINKS_CHANGES_DDL)

    def _events_engine(self) -> str | None:
        row = self._select(
            "SELECT engine_full FROM system.tables WHERE database = {database:String} AND name = 'events'",
            {"database": self.database},
        ).first()
        return None if row is None else str(row[0])

    def _find_layout(self) -> ClusterLayout | None:
        """The cluster layout, when the database's `events` is the Distributed table it makes."""
        engine = self._events_engine()
        return None if engine is None else layout_of(engine, self.database)

    def shard_count(self) -> int:
        """How many shards the store's cluster has (1 on one server)."""
        if self.cluster is None:
            return 1
        row = self._select(
            "SELECT uniqExact(shard_num) FROM system.clusters WHERE cluster = {cluster:String}",
            {"cluster": self.cluster.cluster},
        ).first()
        return int(row[0]) if row else 0

    def _init_cluster(self, layout: ClusterLayout) -> None:
        """Lay the cluster layout out (idempotent); refused where `events` is a one-server table, where the
        server knows no such cluster, and where its replicated shards are not `internal_replication`."""
        engine = self._events_engine()
        if engine is not None and layout_of(engine, self.database) is None:
            raise ClusterLayoutError(
                f"the database {self.database} already holds a one-server events table: lay the cluster out "
                "in another database (and copy the events there)"
            )
        shards = self._select(
            "SELECT shard_num, count(), countIf(internal_replication = 0) FROM system.clusters "
            "WHERE cluster = {cluster:String} GROUP BY shard_num",
            {"cluster": layout.cluster},
        ).rows
        if not shards:
            raise ClusterLayoutError(
                f"the server at {self.name} knows no cluster {layout.cluster} (remote_servers)"
            )
        if any(int(replicas) > 1 and int(plain) for _, replicas, plain in shards):
            raise ClusterLayoutError(
                f"the cluster {layout.cluster} has shards with several replicas and internal_replication off: "
                "the Distributed table would write every replica itself, beside replication (set "
                "<internal_replication>true</internal_replication> in each shard)"
            )
        for statement in cluster_ddl(layout, self._source):
            self._run(statement)
        behind = self._select(identifies_behind(layout)).first()
        if behind is not None and int(behind[0]):  # a layout made before the identify tables
            self._run(backfill_identifies(layout))

    @classmethod
    def connect(
        cls, url: str, known_links: int = 100_000, init_cluster: str | None = None
    ) -> ServerEventStore:
        """Open the store a `http[s]://user:password@host:port/database` URL names; `EventStoreUnavailable`
        when the server cannot be reached, `ValueError` for a URL that is not of that shape. `init_cluster`:
        lay the cluster layout out on that cluster first (`funnels events init --cluster`)."""
        parts = urlsplit(url)
        if parts.scheme == "chdb":  # chdb:///path/to/dir: clickhouse-connect's embedded chDB (tests)
            return cls.on_chdb(Path(unquote(parts.path)), known_links=known_links, init_cluster=init_cluster)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"--events-url must be http[s]://user:password@host:port/database, not {redact(url)}"
            )
        database = _database_name(unquote(parts.path.strip("/")) or "funnels")
        if init_cluster is not None:
            ClusterLayout(init_cluster, database)  # a name that cannot be the cluster's: before connecting
        user, password = unquote(parts.username or "default"), unquote(parts.password or "")
        try:
            client = get_client(
                host=parts.hostname,
                port=parts.port or (8443 if parts.scheme == "https" else 8123),
                username=user,
                password=password,
                secure=parts.scheme == "https",
                autogenerate_session_id=False,  # no session: concurrent queries from one process
                connect_timeout=5,
                send_receive_timeout=300,
            )
        except OperationalError as error:
            message = str(error).replace(password, "***") if password else str(error)
            raise EventStoreUnavailable(
                f"the event store at {redact(url)} is unreachable: {message}"
            ) from None
        source = f" USER {_literal(user)} PASSWORD {_literal(password)}"
        try:
            return cls(client, database, redact(url), source, known_links, init_cluster)
        except BaseException:
            client.close()
            raise

    @classmethod
    def on_chdb(
        cls,
        path: Path,
        database: str = "funnels",
        known_links: int = 100_000,
        init_cluster: str | None = None,
    ) -> ServerEventStore:
        """This backend on clickhouse-connect's embedded chDB interface (tests, benchmarks; chDB has no
        cluster, so `init_cluster` fails there, as it should)."""
        path.mkdir(parents=True, exist_ok=True)
        client = get_client(interface="chdb", path=str(path))
        try:
            store = cls(client, database, f"chdb://{path}", "", known_links, init_cluster)
            store.cancellable = False
            return store
        except BaseException:
            client.close()
            raise

    def close(self) -> None:
        self._client.close()

    def _persons_ddl(self) -> str:
        return persons_ddl(self.database, self._source)

    def dictionary_source(self) -> tuple[str, str]:
        return self.database, self._source

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as error:
            raise EventStoreUnavailable(f"the event store at {self.name} is unreachable: {error}") from error
        except ClickHouseError as error:
            raise EventStoreError(str(error)) from error

    def _run(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        with self._errors():
            self._client.command(sql, parameters=dict(params or {}))

    def _select(self, sql: str, params: Mapping[str, Any] | None = None) -> Results:
        with self._errors():
            raw = self._client.raw_query(sql, parameters=dict(params or {}), fmt="JSONCompact")
        if not raw:
            return Results(meta=[], rows=[])
        body = orjson.loads(raw)
        return Results(meta=body["meta"], rows=body["data"], statistics=body.get("statistics", {}))

    def _select_limited(self, sql: str, params: Mapping[str, Any] | None, budget: QueryBudget) -> Results:
        query_id = budget.next_query_id()
        settings: dict[str, Any] = {"query_id": query_id}
        if budget.limit_seconds is not None:
            settings["max_execution_time"] = budget.limit_seconds
        try:
            with self._errors():
                raw = self._client.raw_query(
                    sql, parameters=dict(params or {}), settings=settings, fmt="JSONCompact"
                )
        except EventStoreUnavailable:
            raise
        except EventStoreError as error:
            raise budget.refused(str(error)) from error
        if not raw:
            return Results(meta=[], rows=[])
        body = orjson.loads(raw)
        return Results(meta=body["meta"], rows=body["data"], statistics=body.get("statistics", {}))

    def _kill(self, prefix: str) -> None:
        if self.cancellable:
            super()._kill(prefix)

    @property
    def whole_batches(self) -> bool:  # type: ignore[override]
        return self.cluster is None

    def _links_elsewhere(self) -> int | None:
        row = self._select(
            f"SELECT sum(generation) FROM (SELECT max(generation) AS generation FROM {LINKS_CHANGES} "
            "GROUP BY writer)"
        ).first()
        return int(row[0]) if row else 0

    def _tell_links_changed(self) -> None:
        self._run(
            f"INSERT INTO {LINKS_CHANGES} VALUES ({{writer:String}}, {{generation:UInt64}})",
            {"writer": self._writer, "generation": self._links_generation},
        )

    def _insert(self, table: pa.Table, token: str | None) -> None:
        settings: dict[str, Any] = {"insert_deduplication_token": token} if token else {}
        if self.cluster is not None:
            settings |= INSERT_SETTINGS
        with self._errors():
            self._client.insert_arrow("events", table, settings=settings or None)

    def max_log_seq(self) -> int:
        if self.cluster is None:
            return super().max_log_seq()
        row = self.query(WATERMARK).first()  # from the replicas the inserts go to
        return int(row[0]) if row else 0

    def reload_dictionary(self, name: str, replicated: Sequence[str] = ()) -> None:
        if self.cluster is None:
            super().reload_dictionary(name, replicated)
            return
        for table in replicated:  # every node's replica has what was inserted anywhere before
            self._run(sync_replica(self.cluster, table))
        self._run(reload_dictionary(self.cluster, name))  # then every node reloads from its own copy

    def truncate(self) -> None:
        if self.cluster is None:
            super().truncate()
            return
        with self._lock:
            try:
                for statement in truncate_statements(self.cluster):
                    self._run(statement)
            finally:
                self._links_changed()
