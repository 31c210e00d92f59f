"""The state store: SQLite (WAL) through SQLAlchemy Core. Holds API keys and the durable event log.

All writes go through `write()`, which takes one process-wide lock and opens the transaction with
`BEGIN IMMEDIATE`, so SQLite never sees two writers and never upgrades a read lock mid-transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine

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


class StateStore:
    """The embedded state store in `<data-dir>/state.sqlite3`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine: Engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False})
        self._write_lock = threading.Lock()

        @event.listens_for(self.engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged event survives power loss too
            cursor.execute("PRAGMA busy_timeout=10000")
            cursor.close()

        @event.listens_for(self.engine, "begin")
        def _begin(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.info.get("writer") else "BEGIN")

        metadata.create_all(self.engine)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (`BEGIN IMMEDIATE`), committed on success."""
        with self._write_lock, self.engine.connect() as connection:
            connection.info["writer"] = True
            try:
                with connection.begin():
                    yield connection
            finally:
                connection.info["writer"] = False

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as connection, connection.begin():
            yield connection

    def close(self) -> None:
        self.engine.dispose()
