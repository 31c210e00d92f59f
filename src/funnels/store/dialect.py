"""What differs between the state store's SQL dialects, in one place (SQLite today; PostgreSQL next).

The store's concern modules (`eventlog`, `identity`, `progress`, `outbox`, `keys`, `idempotency`) write
SQLAlchemy Core that both dialects run alike, and ask this module for the few statements that differ:
an INSERT that can say ON CONFLICT, the claim's row locking, and a lock held to the end of a transaction.
(Wake-ups differ too: `notify.py`.)
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, Table, text
from sqlalchemy.dialects import postgresql, sqlite

NAMES = ("sqlite", "postgresql")  # the dialects a statement that differs between them is built for


def insert(connection: Connection, table: Table) -> sqlite.Insert | postgresql.Insert:
    """An INSERT into `table` in the connection's dialect, with `on_conflict_do_nothing` and
    `on_conflict_do_update` (both dialects spell them the same way, and both offer `excluded`)."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def claim_lock(name: str, rows: Select[Any]) -> Select[Any]:
    """`rows`, the SELECT of the rows a claim takes (its ORDER BY and LIMIT included), as dialect `name`
    must run it when several workers claim at once. SQLite: as is, since the claim's transaction holds the
    file's one write lock. PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent claims take different rows,
    neither waiting for another's nor taking a row twice."""
    if name == "postgresql":
        return rows.with_for_update(skip_locked=True)
    return rows


_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


def transaction_lock(connection: Connection, key: int) -> None:
    """Hold the lock named `key` until this transaction ends, waiting for a transaction that holds it.
    PostgreSQL: an advisory lock. SQLite: nothing to do, since a write transaction holds the whole file."""
    if connection.dialect.name == "postgresql":
        connection.execute(_ADVISORY_LOCK, {"key": key})
