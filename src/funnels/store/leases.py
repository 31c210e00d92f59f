"""Leases as the state store keeps them: a job that one process at a time does among all that share the
store, named, with its holder and its expiry.

A lease is taken or renewed in one statement (an upsert whose update applies only when the row is free,
expired or already the caller's), so two processes racing for it cannot both win: on PostgreSQL the second
upsert waits for the first's row lock and then re-checks the condition against the row the first wrote;
on SQLite the write transaction holds the file. Times are the callers' clocks in ms, as for the action
jobs' leases (`outbox`): processes on several machines must keep their clocks in step (NTP).

`funnels.ingest.log` uses one so that a single node ships the shared event log into a shared event store.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import func, or_, select, update

from funnels.store.dialect import insert
from funnels.store.state import StateStore, leases


class Lease(NamedTuple):
    name: str
    holder: str
    expires_ms: int
    progress: int | None  # what the holder last reported with `hold`


def hold(
    store: StateStore, name: str, holder: str, now_ms: int, ttl_ms: int, progress: int | None = None
) -> Lease:
    """Take the lease `name` for `holder` until `now_ms + ttl_ms` if it is free, expired or already
    `holder`'s (a renewal; `progress`, when given, is recorded with it); returns the lease as it then
    stands, whoever holds it."""
    with store.write() as connection:
        statement = insert(connection, leases).values(
            name=name, holder=holder, expires_ms=now_ms + ttl_ms, progress=progress
        )
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=["name"],
                set_={
                    "holder": statement.excluded.holder,
                    "expires_ms": statement.excluded.expires_ms,
                    "progress": func.coalesce(statement.excluded.progress, leases.c.progress),
                },
                where=or_(leases.c.holder == holder, leases.c.expires_ms <= now_ms),
            )
        )
        row = connection.execute(select(leases).where(leases.c.name == name)).one()
    return Lease(row.name, row.holder, row.expires_ms, row.progress)


def release(store: StateStore, name: str, holder: str) -> None:
    """End `holder`'s lease now, so another process takes it at its next try (nothing if it holds none)."""
    with store.write() as connection:
        connection.execute(
            update(leases).where(leases.c.name == name, leases.c.holder == holder).values(expires_ms=0)
        )


def find(store: StateStore, name: str) -> Lease | None:
    with store.read() as connection:
        row = connection.execute(select(leases).where(leases.c.name == name)).first()
    return None if row is None else Lease(row.name, row.holder, row.expires_ms, row.progress)
