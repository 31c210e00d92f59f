"""The state store: SQLite (WAL) through SQLAlchemy Core. Holds API keys, dashboard sessions, idempotency
records, the durable event log and the automation state: model instances and their ids, funnel progress, and
the action jobs (the outbox). Every table is defined here, on one `metadata`; the migrations in
`funnels/store/migrations/` create them, and a test keeps the two in step (docs/architecture.md).

All writes go through `write()`, which takes one process-wide lock and opens the transaction with
`BEGIN IMMEDIATE`, so SQLite never sees two writers and never upgrades a read lock mid-transaction.

A disk that refuses writes (full, or failing) makes `write()` raise `StoreUnavailable` (the transaction is
rolled back: nothing of it is kept) and marks the store failing until `probe()` writes again. A damaged
file is refused when the store opens (`StateFileDamaged`), after `PRAGMA quick_check`.
"""

from __future__ import annotations

import fcntl
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy import Connection as Connection  # re-exported: callers outside the store annotate with it
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

from funnels.store import StoreUnavailable, schema
from funnels.store.dialect import transaction_lock
from funnels.store.schema import Migration, SchemaTooNew, SchemaUnrecognised

T = TypeVar("T")

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),  # public key id (the key's prefix)
    Column("secret_hash", String(128), nullable=False),
    Column("scopes", Text, nullable=False),  # space-separated
    Column("name", String(200), nullable=False, default=""),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger, nullable=True),
)

# Dashboard sign-ins (`funnels.sessions`): only a hash of the cookie's token is kept, so a copy of the
# database opens no session. The CSRF token is kept as is: it is worthless without the cookie.
dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),  # SHA-256 hex of the cookie's token
    Column("key_id", String(32), nullable=False, index=True),
    Column("csrf_token", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False, index=True),
)

# The write-ahead event log: an event is acknowledged once its row is committed here. A background task
# ships rows to the event store in sequence order; rows are kept for the dedup window after shipping.
event_log = Table(
    "event_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(400), nullable=False, unique=True),
    Column("record", LargeBinary, nullable=False),
    Column("received_ms", BigInteger, nullable=False),
    sqlite_autoincrement=True,
)

# --- automation -------------------------------------------------------------------------------------------

# A model instance. `primary_id` is the first id it was identified with: the user key its events carry in
# the event store, so analytics counts an instance once however many ids it has.
instances = Table(
    "instances",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False),
    Column("primary_id", String(400), nullable=False),
    Column("display_name", Text, nullable=True),
    Column("properties", Text, nullable=False, default="{}"),  # JSON object, merged on identify
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    sqlite_autoincrement=True,
)

# Every id of every instance; an id names one instance within its model.
instance_ids = Table(
    "instance_ids",
    metadata,
    Column("model", String(200), nullable=False),
    Column("id_text", String(400), nullable=False),
    Column("instance_id", Integer, nullable=False),
    # Its place among the instance's ids: 0 for the one it was created with, then in the order added.
    Column("position", Integer, nullable=False, server_default="0"),
    PrimaryKeyConstraint("model", "id_text"),
    Index("ix_instance_ids_id_text", "id_text"),  # resolution without a model: any model's id
    Index("ix_instance_ids_instance", "instance_id"),
)

# Parent–child pairs by id, so either side may name an instance that does not exist yet: the pair
# resolves through `instance_ids` when it is read.
relationships = Table(
    "relationships",
    metadata,
    Column("parent_model", String(200), nullable=False),
    Column("parent_id", String(400), nullable=False),
    Column("child_model", String(200), nullable=False),
    Column("child_id", String(400), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("parent_model", "parent_id", "child_model", "child_id"),
    Index("ix_relationships_child", "child_model", "child_id"),
)

# Funnel progress: one row per satisfied step. Steps are satisfied in order, so an instance's level in a
# funnel is the number of its rows there.
satisfied_steps = Table(
    "satisfied_steps",
    metadata,
    Column("instance_id", Integer, nullable=False),
    Column("funnel_id", String(200), nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("event", String(200), nullable=False),
    Column("event_id", String(400), nullable=False),
    Column("event_ts_ms", BigInteger, nullable=False),
    Column("satisfied_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("instance_id", "funnel_id", "step_index"),
)

# An action as it was configured when a job was scheduled, stored once per distinct definition.
action_specs = Table(
    "action_specs",
    metadata,
    Column("id", String(64), primary_key=True),  # SHA-256 of the canonical JSON
    Column("spec", Text, nullable=False),
)

# The outbox: one row per action to deliver, written in the transaction that satisfied its step.
# `next_ms` is when a worker should look at the job next (due time, retry time, or lease expiry while
# sending) and NULL once it is final, so the claim query is one range scan of one index. `lease_owner`
# names the worker that claimed the job last; `send_started_ms` is set just before an at-most-once job's
# send and cleared when its outcome is recorded: a job leased and so marked when its worker died may have
# reached the receiver, and ends `unknown` instead of being sent again.
action_jobs = Table(
    "action_jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(80), nullable=False, unique=True),  # the idempotency key every attempt carries
    Column("funnel_id", String(200), nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("action_index", Integer, nullable=False),
    Column("action_type", String(40), nullable=False),
    Column("model", String(200), nullable=False),
    Column("instance_id", Integer, nullable=False),
    Column("spec_id", String(64), nullable=False),
    Column("event_id", String(400), nullable=False),
    Column("event", String(200), nullable=False),
    Column("event_properties", Text, nullable=False),
    Column("event_ts_ms", BigInteger, nullable=False),
    # scheduled, sending, sent, failed, dead, cancelled, unknown
    Column("status", String(16), nullable=False),
    Column("due_ms", BigInteger, nullable=False),
    Column("next_ms", BigInteger, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("rendered", Text, nullable=True),  # JSON: what went out on the last attempt
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("sent_ms", BigInteger, nullable=True),
    Column("lease_owner", String(80), nullable=True),
    Column("send_started_ms", BigInteger, nullable=True),
    sqlite_autoincrement=True,
)
Index(
    "ix_action_jobs_next",
    action_jobs.c.next_ms,
    sqlite_where=action_jobs.c.next_ms.is_not(None),
    postgresql_where=action_jobs.c.next_ms.is_not(None),
)
Index("ix_action_jobs_instance", action_jobs.c.instance_id, action_jobs.c.funnel_id)
Index("ix_action_jobs_status", action_jobs.c.status, action_jobs.c.id)

# Every delivery attempt of a job, with its outcome: the delivery log's detail. `attempt` is its place in
# the job's log (from 1, going on after a manual retry; rows written before that fix restart at 1), so the
# row id orders them.
action_attempts = Table(
    "action_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Integer, nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("started_ms", BigInteger, nullable=False),
    Column("finished_ms", BigInteger, nullable=False),
    Column("outcome", String(16), nullable=False),  # sent, failed, dead
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("response", Text, nullable=True),
)

# Idempotency records (`funnels.store.idempotency`): the first response to each `Idempotency-Key`.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("credential", String(64), nullable=False),  # SHA-256 hex of the Authorization header, or of ""
    Column("method", String(10), nullable=False),
    Column("path", Text, nullable=False),
    Column("key", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),  # SHA-256 hex of method, path, query and body
    Column("token", String(32), nullable=False),  # the claim's owner
    Column("created_ms", BigInteger, nullable=False),
    # When the first of a run of claims began; a claim that takes over a dead request's keeps it, so the
    # rerun derives the same default event ids and dedups what the dead request may have committed.
    Column("epoch_ms", BigInteger, nullable=False),
    Column("status", Integer, nullable=True),  # NULL while in progress
    Column("headers", Text, nullable=True),  # JSON [[name, value], ...]
    Column("body", LargeBinary, nullable=True),
    Column("finished_ms", BigInteger, nullable=True),
    PrimaryKeyConstraint("credential", "method", "path", "key"),
    Index("ix_idempotency_keys_created", "created_ms"),
)

# Leases (`funnels.store.leases`): a job that one process at a time may do among all that share the store
# (shipping the event log into one shared event store), held until `expires_ms` on the holder's clock.
leases = Table(
    "leases",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("progress", BigInteger, nullable=True),  # what the holder last reported (a shipper: its watermark)
)

# Saved funnels (`funnels.store.saved_funnels`): a funnel's /v0/funnel parameters under a name, never its
# results. `id` is random and never changes (links name it); `version` counts its updates (optimistic
# concurrency: an update may say which version it replaces).
saved_funnels = Table(
    "saved_funnels",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("parameters", Text, nullable=False),  # a JSON object of /v0/funnel's parameters, as strings
    Column("version", Integer, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

# What an instance has unsubscribed from (`funnels.store.subscriptions`): a row is an opt-out of `topic`,
# `email` or `sms` (the whole channel) or `email:<topic>` / `sms:<topic>`; no row means subscribed.
subscriptions = Table(
    "subscriptions",
    metadata,
    Column("instance_id", Integer, nullable=False),
    Column("topic", String(240), nullable=False),
    Column("unsubscribed_ms", BigInteger, nullable=False),
    Column("source", String(20), nullable=False),  # api, import, link
    PrimaryKeyConstraint("instance_id", "topic"),
)

# Secrets the server generates for itself once and keeps (`funnels.store.signing_keys`): `unsubscribe` signs
# the one-click unsubscribe links' tokens (`funnels.automation.consent`). Never logged, never shown.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("secret", String(128), nullable=False),  # URL-safe base64 of random bytes
    Column("created_ms", BigInteger, nullable=False),
)


def chunks(values: Iterable[Any], size: int = 500) -> Iterator[list[Any]]:
    """Values in lists of at most `size`: IN lists stay far below SQLite's bound-parameter limit."""
    items = list(values)
    for start in range(0, len(items), size):
        yield items[start : start + size]


# SQLite's primary result codes for a disk that refuses writes: SQLITE_IOERR (a failed write, fsync, …:
# ENOSPC mid-write, EFBIG past a file-size limit, EIO) and SQLITE_FULL.
_DISK_ERRORS = {10: "the disk refused a write (full, or failing)", 13: "the disk is full"}
# PostgreSQL's SQLSTATEs for a server that refuses writes for a reason outside the request: class 53
# (insufficient resources: disk full, out of memory, too many connections), class 08 (the connection), and
# 57P0x (the server shutting down or starting). Anything else is the statement's own problem.
_POSTGRES_UNAVAILABLE = {
    "53": "the database server is out of resources (disk, memory or connections)",
    "08": "the database server cannot be reached",
    "57P0": "the database server is shutting down or starting",
}
# deadlock_detected, serialization_failure: the transaction was chosen to give way; running it again works.
_RETRY_SQLSTATES = {"40P01", "40001"}
# `transaction_lock` keys: the schema migration, the health probe's CREATE TABLE, and every write of the
# saved funnels (so their count cap and unique names hold under concurrent writers on PostgreSQL too).
_MIGRATION_LOCK = 0x66756E6E656C73  # "funnels"
_PROBE_LOCK = _MIGRATION_LOCK + 1
SAVED_FUNNELS_LOCK = _MIGRATION_LOCK + 2
# … and for a file that is not a sound database: SQLITE_CORRUPT, SQLITE_NOTADB.
_DAMAGE_ERRORS = {11, 26}
HEADROOM_BYTES = 1024 * 1024  # what `probe` writes before it calls a failing store writable again


class StateFileDamaged(Exception):
    """The state store cannot be used: `state.sqlite3` is damaged, or the store (a file, or a PostgreSQL
    database) cannot be opened; `str()` says what to do."""

    def __init__(self, path: Path | str, problem: str, damaged: bool = True) -> None:
        self.path = path
        self.problem = problem
        advice = (
            "restore it from a backup, or move it aside (with its -wal and -shm files) to start with an "
            "empty state"
            if damaged
            else "check the file and its directory (permissions, disk)"
            if isinstance(path, Path)
            else "check the URL, the server and its permissions"
        )
        what = "file" if isinstance(path, Path) else "database"
        super().__init__(
            f"the state {what} {path} {'is damaged' if damaged else 'cannot be opened'}: {problem}; {advice}"
        )


def _redact_url(url: str) -> str:
    """A URL as messages show it: without its password."""
    return make_url(url).render_as_string(hide_password=True)


PING_IDLE_S = 2.0  # PostgreSQL: a pooled connection idle longer than this is pinged before it is used


def _postgres_events(engine: Engine) -> None:
    """Ping a pooled connection before use only when it has been idle for `PING_IDLE_S`.

    SQLAlchemy's `pool_pre_ping` pings at every checkout: one more round trip per transaction, and a busy
    node or worker checks out hundreds of times a second (each ingest transaction and claim). A connection
    in steady use is known to be alive; one that sat idle (a quiet node, a server restarted meanwhile) is
    pinged, and a dead one replaced, as `pool_pre_ping` would. A server that goes away within the last
    `PING_IDLE_S` fails the transaction that finds it gone (the pool then drops every connection it holds);
    the caller sees `StoreUnavailable`, as during any outage."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_from"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_from", 0.0) < PING_IDLE_S:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error:
            alive = False
        if not alive:
            raise DisconnectionError("the pooled connection is gone")  # the pool connects anew


def _sqlite_events(engine: Engine) -> None:
    """SQLite's connection settings, and BEGIN IMMEDIATE for the writer's transactions (see `write`)."""

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged event survives power loss too
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.info.get("writer") else "BEGIN")


def _postgres_unavailable(error: DBAPIError) -> str | None:
    """Why PostgreSQL refused a transaction for a reason outside the request (see above), else None."""
    sqlstate = getattr(error.orig, "sqlstate", None) or ""
    if not sqlstate and (error.connection_invalidated or isinstance(error, OperationalError)):
        return _POSTGRES_UNAVAILABLE["08"]
    for prefix, reason in _POSTGRES_UNAVAILABLE.items():
        if sqlstate.startswith(prefix):
            return reason
    return None


def _sqlite_code(error: BaseException) -> int | None:
    """SQLite's primary result code of a DBAPI error, if it is one."""
    original = error.orig if isinstance(error, DBAPIError) else error
    code = getattr(original, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def state_url(target: Path | str) -> str:
    """The SQLAlchemy URL of a state store given as a file path (SQLite) or a `postgresql://` URL (also
    `postgres://`; the psycopg 3 driver is filled in)."""
    if isinstance(target, Path):
        return f"sqlite:///{target}"
    scheme, sep, rest = target.partition("://")
    if not sep or scheme not in {"postgresql", "postgres", "postgresql+psycopg"}:
        raise ValueError(f"a state URL must start with postgresql:// (got {target.split('://')[0]!r}://…)")
    return f"postgresql+psycopg://{rest}"


class StateStore:
    """The state store: `<data-dir>/state.sqlite3` (the default), or a PostgreSQL database that any number
    of processes on any number of machines share (`--state-url`)."""

    def __init__(self, target: Path | str, *, check: bool = True, migrate: bool = True) -> None:
        """Open (or create) the store at a file path (SQLite) or a `postgresql://` URL. With `check`, a
        SQLite file is checked first (`PRAGMA quick_check`): `StateFileDamaged` if it is not a sound
        database. `SchemaTooNew` if a newer release wrote the schema. With `migrate`, an older schema (or
        none: a new store) is brought up to date in place (`migrate()`)."""
        self.url = state_url(target)
        self.dialect = "postgresql" if self.url.startswith("postgresql") else "sqlite"
        self.path = target if isinstance(target, Path) else None
        self.where = str(target) if self.path is not None else _redact_url(str(target))
        self._write_lock = threading.Lock()
        self._writer: Connection | None = None  # SQLite: every write transaction's connection (see `write`)
        self.write_failure: str | None = None  # why the last write failed, while the disk refuses writes
        self.revision: str | None = None  # the schema revision (`funnels.store.schema`)
        self._lock_file = -1
        if self.path is None:
            # READ COMMITTED, a pool per process; concurrent writers are settled in SQL (ON CONFLICT, SKIP
            # LOCKED), not by taking turns.
            self.engine: Engine = create_engine(self.url)
            _postgres_events(self.engine)
        else:
            self.engine = create_engine(self.url, connect_args={"check_same_thread": False})
            # Writers in other processes (`funnels worker`, the server's delivery process) take turns
            # through an advisory lock on this file (see `write`).
            lock_path = self.path.with_name(self.path.name + ".write-lock")
            self._lock_file = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            _sqlite_events(self.engine)
        try:
            if check and self.dialect == "sqlite":
                self._quick_check()
            with self.read() as connection:  # the usual case, up to date: no write
                self.revision = schema.check(connection, self.where)
            if migrate and self.revision != schema.HEAD:
                self.migrate()
        except (SchemaTooNew, SchemaUnrecognised):
            self.close()
            raise
        except StoreUnavailable as refused:  # the migration's write (a new file on a full disk)
            self.close()
            raise StateFileDamaged(self.where, refused.reason, damaged=False) from None
        except (DBAPIError, sqlite3.Error) as error:
            self.close()
            code = _sqlite_code(error)
            problem = " ".join(str(getattr(error, "orig", None) or error).split())
            raise StateFileDamaged(self.where, problem, damaged=code in _DAMAGE_ERRORS) from None

    def _quick_check(self) -> None:
        """`PRAGMA quick_check`: every page of the file read and its b-tree structure checked (not index
        contents), so zeroed or garbage pages are found before the server answers healthy."""
        with self.engine.connect() as connection:
            problems = [row[0] for row in connection.exec_driver_sql("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise StateFileDamaged(self.where, " ".join("; ".join(problems).split()))

    def migrate(self) -> Migration:
        """Bring the schema to the newest revision (`funnels.store.schema`), under the write lock: two
        processes opening the store at once migrate it once, the second finding it up to date."""
        with self.write() as connection:
            transaction_lock(connection, _MIGRATION_LOCK)  # nodes starting together migrate in turn
            migration = schema.upgrade(connection, self.where, metadata)
        self.revision = migration.after
        return migration

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, committed on success; `StoreUnavailable` if the store refuses it for a
        reason outside the request (a full or failing disk; on PostgreSQL also a server that cannot be
        reached), with nothing of it kept.

        SQLite (`BEGIN IMMEDIATE`): writers take turns, threads of this process through a lock, processes
        through `flock` on the store's `.write-lock` file. A waiting process gets the turn the moment the
        other releases it; SQLite's own busy handler would poll with growing sleeps (1, 2, 5, 10, … ms),
        and the server and its delivery process, each writing hundreds of times a second, lost tens of ms
        to them at the tail. (`busy_timeout` still covers any other program writing the file.) All writes
        use one connection kept for them: SQLite keeps a page cache per connection and drops it when
        another connection of this process has written since.

        PostgreSQL: a connection from the pool per transaction, concurrent with other writers."""
        if self.dialect == "postgresql":
            try:
                with self.engine.begin() as connection:
                    yield connection
            except DBAPIError as error:
                reason = _postgres_unavailable(error)
                if reason is None:
                    raise
                self.write_failure = f"{reason}: {' '.join(str(error.orig).split())}"
                raise StoreUnavailable("state", self.write_failure) from error
            return
        with self._write_lock:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            try:
                if self._writer is None or self._writer.closed or self._writer.invalidated:
                    self._writer = self.engine.connect()
                    self._writer.info["writer"] = True
                with self._writer.begin():
                    yield self._writer
            except DBAPIError as error:
                reason = _DISK_ERRORS.get(_sqlite_code(error) or 0)
                if reason is None:
                    raise
                self.write_failure = f"{reason}: {error.orig}"
                raise StoreUnavailable("state", self.write_failure) from error
            finally:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def run_write(self, work: Callable[[Connection], T], attempts: int = 4) -> T:
        """`work(connection)` in a write transaction, committed; run again in a new transaction when
        PostgreSQL aborted it for a deadlock or a serialization failure (SQLSTATE 40P01, 40001), which
        concurrent writers on other nodes can cause and which say nothing about the work itself. `work`
        must therefore be safe to run again: everything it did was rolled back. On SQLite, once."""
        for attempt in range(attempts):
            try:
                with self.write() as connection:
                    return work(connection)
            except DBAPIError as error:
                sqlstate = getattr(error.orig, "sqlstate", None)
                if sqlstate not in _RETRY_SQLSTATES or attempt == attempts - 1:
                    raise
                time.sleep(random.uniform(0.001, 0.01) * (attempt + 1))  # let the other one finish first
        raise AssertionError("unreachable")  # pragma: no cover

    def probe(self, now_ms: int) -> None:
        """Prove the store writable (`/healthz`); `StoreUnavailable` if it is not. While writes are failing
        (`write_failure`), `HEADROOM_BYTES` are written and deleted again first, so the store is called
        writable again only when there is room for more than a probe's row (SQLite; PostgreSQL reports
        a full disk itself, on the next write)."""
        if self.write_failure is not None and self.dialect == "sqlite":
            with self.write() as connection:
                connection.execute(
                    text("CREATE TABLE IF NOT EXISTS health_headroom (id INTEGER PRIMARY KEY, pad BLOB)")
                )
                connection.execute(
                    text("INSERT OR REPLACE INTO health_headroom (id, pad) VALUES (1, zeroblob(:size))"),
                    {"size": HEADROOM_BYTES},
                )
            with self.write() as connection:
                connection.execute(text("DELETE FROM health_headroom"))
        with self.write() as connection:
            transaction_lock(connection, _PROBE_LOCK)  # PostgreSQL's CREATE … IF NOT EXISTS races itself
            connection.execute(text("CREATE TABLE IF NOT EXISTS health (id INTEGER PRIMARY KEY, at BIGINT)"))
            connection.execute(
                text("INSERT INTO health (id, at) VALUES (1, :at) ON CONFLICT (id) DO UPDATE SET at = :at"),
                {"at": now_ms},
            )
        self.write_failure = None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading. PostgreSQL: in autocommit, each statement its own transaction, which at
        READ COMMITTED is what a transaction around them would give (every statement takes its own
        snapshot), without the BEGIN and ROLLBACK round trips."""
        if self.dialect == "postgresql":
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                yield connection
            return
        with self.engine.connect() as connection, connection.begin():
            yield connection

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            if self._lock_file >= 0:
                os.close(self._lock_file)
                self._lock_file = -1
        self.engine.dispose()
