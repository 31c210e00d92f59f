"""Secrets the server generates for itself and keeps in the state store, by name: the first process that
needs one writes it (a candidate it generated), every later one reads that one, on any node."""

from __future__ import annotations

from sqlalchemy import select

from funnels.store import dialect
from funnels.store.state import Connection, signing_keys


def get_or_create(connection: Connection, name: str, candidate: str, now_ms: int) -> str:
    """The secret called `name`: the stored one, else `candidate`, stored now (in the caller's write
    transaction; of two racing writers, the first one's is kept and both get it)."""
    statement = dialect.insert(connection, signing_keys).on_conflict_do_nothing()
    connection.execute(statement, {"name": name, "secret": candidate, "created_ms": now_ms})
    secret: str = connection.execute(
        select(signing_keys.c.secret).where(signing_keys.c.name == name)
    ).scalar_one()
    return secret
