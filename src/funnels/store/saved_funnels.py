"""Saved funnels as the state store keeps them: a name, the funnel's parameters (a JSON object, as given), a
stable id and a version counting updates.

`funnels.analytics.saved` owns what they mean (which parameters, validated how, the limits); this module
only stores and finds their rows. Every write takes one transaction lock (`SAVED_FUNNELS_LOCK`: nothing on
SQLite, whose write transaction holds the file; an advisory lock on PostgreSQL) before it reads, so the
count cap, the unique names and the version check hold however many writers race: each write sees the
previous one's rows.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from sqlalchemy import delete, func, insert, select, update

from funnels.store.dialect import transaction_lock
from funnels.store.state import SAVED_FUNNELS_LOCK, Connection, StateStore, saved_funnels


class StoredFunnel(NamedTuple):
    id: str
    name: str
    parameters: str  # a JSON object
    version: int
    created_ms: int
    updated_ms: int


class ListedFunnel(NamedTuple):
    """A saved funnel without its parameters (what a list shows)."""

    id: str
    name: str
    version: int
    created_ms: int
    updated_ms: int


Added = Literal["added", "name taken", "full"]
Replaced = Literal["replaced", "missing", "stale", "name taken"]

_LISTED = (
    saved_funnels.c.id,
    saved_funnels.c.name,
    saved_funnels.c.version,
    saved_funnels.c.created_ms,
    saved_funnels.c.updated_ms,
)


def _named(connection: Connection, name: str) -> str | None:
    """The id of the funnel saved under `name`, if any."""
    found: str | None = connection.execute(
        select(saved_funnels.c.id).where(saved_funnels.c.name == name)
    ).scalar()
    return found


def add(store: StateStore, funnel: StoredFunnel, max_count: int) -> Added:
    """Keep a new saved funnel, unless its name is taken or `max_count` are saved already."""
    with store.write() as connection:
        transaction_lock(connection, SAVED_FUNNELS_LOCK)
        if _named(connection, funnel.name) is not None:
            return "name taken"
        if connection.execute(select(func.count()).select_from(saved_funnels)).scalar_one() >= max_count:
            return "full"
        connection.execute(insert(saved_funnels).values(**funnel._asdict()))
    return "added"


def replace(
    store: StateStore, funnel_id: str, name: str, parameters: str, now_ms: int, version: int | None
) -> tuple[Replaced, StoredFunnel | None]:
    """Give a saved funnel a new name and parameters and the next version, if it exists, `version` (when
    given) is its current one and no other funnel has the name. Returns the outcome and the row as it then
    stands (None when missing)."""
    with store.write() as connection:
        transaction_lock(connection, SAVED_FUNNELS_LOCK)
        current = _find(connection, funnel_id)
        if current is None:
            return "missing", None
        if version is not None and version != current.version:
            return "stale", current
        if _named(connection, name) not in (None, funnel_id):
            return "name taken", current
        connection.execute(
            update(saved_funnels)
            .where(saved_funnels.c.id == funnel_id)
            .values(name=name, parameters=parameters, version=current.version + 1, updated_ms=now_ms)
        )
        return "replaced", _find(connection, funnel_id)


def remove(store: StateStore, funnel_id: str) -> bool:
    """Delete a saved funnel: True if there was one."""
    with store.write() as connection:
        transaction_lock(connection, SAVED_FUNNELS_LOCK)
        result = connection.execute(delete(saved_funnels).where(saved_funnels.c.id == funnel_id))
    return result.rowcount > 0


def _find(connection: Connection, funnel_id: str) -> StoredFunnel | None:
    row = connection.execute(select(saved_funnels).where(saved_funnels.c.id == funnel_id)).first()
    return None if row is None else StoredFunnel(*row)


def find(store: StateStore, funnel_id: str) -> StoredFunnel | None:
    with store.read() as connection:
        return _find(connection, funnel_id)


def find_named(store: StateStore, name: str) -> StoredFunnel | None:
    with store.read() as connection:
        row = connection.execute(select(saved_funnels).where(saved_funnels.c.name == name)).first()
    return None if row is None else StoredFunnel(*row)


def listing(store: StateStore) -> list[ListedFunnel]:
    """Every saved funnel without its parameters, by name."""
    with store.read() as connection:
        rows = connection.execute(select(*_LISTED).order_by(saved_funnels.c.name, saved_funnels.c.id)).all()
    return [ListedFunnel(*row) for row in rows]
