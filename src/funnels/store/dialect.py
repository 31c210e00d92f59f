"""What differs between the state store's SQL dialects, in one place (SQLite today; PostgreSQL next).

The store's concern modules (`eventlog`, `identity`, `progress`, `outbox`, `keys`, `idempotency`) write
SQLAlchemy Core that both dialects run alike, and ask this module for the few statements that differ:
an INSERT that can say ON CONFLICT, and (as PostgreSQL arrives) the claim's row locking and wake-ups.
"""

from __future__ import annotations

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def insert(connection: Connection, table: Table) -> sqlite.Insert | postgresql.Insert:
    """An INSERT into `table` in the connection's dialect, with `on_conflict_do_nothing` and
    `on_conflict_do_update` (both dialects spell them the same way, and both offer `excluded`)."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
