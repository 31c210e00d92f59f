"""The state store's schema version: Alembic migrations (`funnels/store/migrations/`), run in code.

How it works: the revision a database is at lives in its `alembic_version` table. `check` reads it and
refuses a revision the scripts do not know (`SchemaTooNew`: a newer release wrote it). `upgrade` brings the
database to the newest revision (the head) on the connection it is given, inside that connection's
transaction, so the caller decides the locking (the store runs it under its write lock: two processes
opening one data directory at once migrate it once) and a failed migration leaves nothing behind.
An empty database is not walked through every revision: it gets the head's tables from `metadata` and is
stamped at the head (a fraction of the time: every new data directory, and every test's store, is one).

A database from before migrations has the tables but no `alembic_version`: it is recognised by its tables
and stamped at the revision it matches (0001 = the release at commit 0af07ab; 0002 = that schema plus the
two job columns the store's ad-hoc upgrade added) before the rest is run. An empty one runs every revision.

Alembic is imported only when a database is not at `HEAD` (it costs a process a noticeable part of its
start): an up-to-date store is recognised by one read of `alembic_version`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Column, Connection, MetaData, PrimaryKeyConstraint, String, Table, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

SCRIPTS = Path(__file__).with_name("migrations")
HEAD = "0007"  # the newest revision in migrations/versions/ (a test holds the two equal)

# Alembic's version table, as its `stamp` creates it (an empty database is stamped without Alembic: `upgrade`).
VERSION_TABLE = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)

# What revision 0001 created, to recognise a data directory written before migrations.
BASELINE_TABLES = frozenset(
    {
        "api_keys",
        "dashboard_sessions",
        "event_log",
        "instances",
        "instance_ids",
        "relationships",
        "satisfied_steps",
        "action_specs",
        "action_jobs",
        "action_attempts",
        "idempotency_keys",
    }
)
LEASE_COLUMNS = frozenset({"lease_owner", "send_started_ms"})  # what revision 0002 added to action_jobs


class SchemaTooNew(Exception):
    """The database is at a revision these migrations do not know: a newer release wrote it."""

    def __init__(self, where: str, revision: str, head: str) -> None:
        self.revision = revision
        super().__init__(
            f"the state store {where} is at schema revision {revision}, which this version of funnels does "
            f"not know (it knows up to {head}; a newer release wrote it): not running on it"
        )


class SchemaUnrecognised(Exception):
    """The database has some of the store's tables but no `alembic_version`, and matches no revision."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"the state store {where} has an unrecognised schema: {problem}")


@dataclass(frozen=True)
class Migration:
    """What `upgrade` did: the revision before (None: none recorded), the one a database from before
    migrations was recognised as and stamped at (else None), and the revision after (the head)."""

    before: str | None
    stamped: str | None
    after: str


@functools.cache
def scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(SCRIPTS))


def current(connection: Connection) -> str | None:
    """The revision recorded in the database; None when it has no `alembic_version` (empty, or older)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    revision: str | None = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return revision  # one row: these migrations have no branches


def check(connection: Connection, where: str) -> str | None:
    """The recorded revision, after refusing one the scripts do not know (`SchemaTooNew`)."""
    revision = current(connection)
    if revision in (None, HEAD):
        return revision
    if revision not in {script.revision for script in scripts().walk_revisions()}:
        raise SchemaTooNew(where, revision, HEAD)
    return revision


def _recognise(connection: Connection, where: str) -> str | None:
    """The revision a database without `alembic_version` matches: None when it has none of the tables."""
    inspector = inspect(connection)
    present = BASELINE_TABLES & set(inspector.get_table_names())
    if not present:
        return None
    if present != BASELINE_TABLES:
        missing = ", ".join(sorted(BASELINE_TABLES - present))
        raise SchemaUnrecognised(where, f"tables missing: {missing}")
    columns = LEASE_COLUMNS & {column["name"] for column in inspector.get_columns("action_jobs")}
    if columns == LEASE_COLUMNS:
        return "0002"
    if not columns:
        return "0001"
    raise SchemaUnrecognised(where, f"action_jobs has {', '.join(sorted(columns))} but not all of them")


def _config(connection: Connection, metadata: MetaData | None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = connection
    config.attributes["metadata"] = metadata
    return config


def upgrade(
    connection: Connection, where: str, metadata: MetaData | None = None, *, run_scripts: bool = False
) -> Migration:
    """Bring the database to the head revision, on `connection` and inside its transaction (see above).
    An empty database gets `metadata`'s tables at once and is stamped at the head, as Alembic's cookbook
    does for a new database (the scripts build the same schema: tests/store/test_migrations.py holds the
    two equal); `run_scripts` runs every revision instead."""
    before = check(connection, where)
    stamped = _recognise(connection, where) if before is None else None
    if before is None and stamped is None and metadata is not None and not run_scripts:
        metadata.create_all(connection)
        VERSION_TABLE.create(connection)  # what `alembic stamp head` writes, without loading the scripts
        connection.execute(VERSION_TABLE.insert().values(version_num=HEAD))
        return Migration(before=None, stamped=None, after=HEAD)
    from alembic import command

    config = _config(connection, metadata)
    if stamped is not None:
        command.stamp(config, stamped)
    command.upgrade(config, "head")
    return Migration(before=before, stamped=stamped, after=HEAD)
