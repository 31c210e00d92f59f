"""Idempotency records: the first response to each `Idempotency-Key`, kept 24 h so a retry is replayed.

A record is claimed (in progress, `status` NULL) before the request runs and finished with the response
after it. Each claim carries a random token, so a request that outlived its lease and was taken over can
neither finish nor abandon the record its successor now owns.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

import orjson
from sqlalchemy import ColumnElement, delete, func, select, update

from funnels.store.dialect import insert
from funnels.store.state import StateStore, idempotency_keys

TTL_MS = 24 * 3600 * 1000  # a finished response is replayed this long after its request began
LEASE_MS = 60 * 1000  # an unfinished claim older than this belongs to a request that died with its process


@dataclass(frozen=True)
class RecordKey:
    """Where a record lives: one credential's one endpoint's one Idempotency-Key."""

    credential: str
    method: str
    path: str
    key: str


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Claim:
    """What `begin` decided; `token` is set when the request may proceed, `response` when it is replayed."""

    outcome: Literal["proceed", "replay", "in_progress", "mismatch"]
    token: str = ""
    response: StoredResponse | None = None
    epoch_ms: int = 0


def _where(record: RecordKey) -> list[ColumnElement[bool]]:
    table = idempotency_keys.c
    return [
        table.credential == record.credential,
        table.method == record.method,
        table.path == record.path,
        table.key == record.key,
    ]


def begin(state: StateStore, record: RecordKey, fingerprint: str, now_ms: int) -> Claim:
    """Claim the record for this request, or say why not (one write transaction: never two claims).

    The claim is an INSERT … ON CONFLICT DO NOTHING, so two requests with one key racing on PostgreSQL
    (where writers do not take turns) get one claim and one answer from the other's row, never an error;
    the existing row is read `FOR UPDATE` (PostgreSQL; SQLite's writer holds the whole file)."""
    token = secrets.token_hex(16)
    with state.write() as connection:
        claimed = connection.execute(
            insert(connection, idempotency_keys)
            .values(
                credential=record.credential,
                method=record.method,
                path=record.path,
                key=record.key,
                fingerprint=fingerprint,
                token=token,
                created_ms=now_ms,
                epoch_ms=now_ms,
            )
            .on_conflict_do_nothing()
            .returning(idempotency_keys.c.token)
        ).first()
        if claimed is not None:
            return Claim("proceed", token=token, epoch_ms=now_ms)
        row = connection.execute(select(idempotency_keys).where(*_where(record)).with_for_update()).one()
        if now_ms - row.created_ms < TTL_MS:
            if row.fingerprint != fingerprint:
                return Claim("mismatch")
            if row.status is not None:
                headers = [(name, value) for name, value in orjson.loads(row.headers)]
                return Claim("replay", response=StoredResponse(row.status, headers, row.body))
            if now_ms - row.created_ms < LEASE_MS:
                return Claim("in_progress")
        # expired, or a claim whose request died: start afresh in the same row. A takeover keeps the epoch:
        # the dead request may have committed.
        epoch_ms = row.epoch_ms if now_ms - row.created_ms < TTL_MS else now_ms
        connection.execute(
            update(idempotency_keys)
            .where(*_where(record))
            .values(
                fingerprint=fingerprint,
                token=token,
                created_ms=now_ms,
                epoch_ms=epoch_ms,
                status=None,
                headers=None,
                body=None,
                finished_ms=None,
            )
        )
        return Claim("proceed", token=token, epoch_ms=epoch_ms)


def finish(state: StateStore, record: RecordKey, token: str, response: StoredResponse, now_ms: int) -> bool:
    """Store the response of a claimed request; False if the claim was taken over meanwhile."""
    with state.write() as connection:
        result = connection.execute(
            update(idempotency_keys)
            .where(*_where(record), idempotency_keys.c.token == token)
            .values(
                status=response.status,
                headers=orjson.dumps(response.headers).decode(),
                body=response.body,
                finished_ms=now_ms,
            )
        )
        return result.rowcount == 1


def abandon(state: StateStore, record: RecordKey, token: str) -> None:
    """Drop a claim whose request failed, so a retry runs again."""
    with state.write() as connection:
        connection.execute(
            delete(idempotency_keys).where(
                *_where(record), idempotency_keys.c.token == token, idempotency_keys.c.status.is_(None)
            )
        )


def prune(state: StateStore, now_ms: int) -> int:
    """Delete every expired record; returns how many."""
    with state.write() as connection:
        result = connection.execute(
            delete(idempotency_keys).where(idempotency_keys.c.created_ms <= now_ms - TTL_MS)
        )
        return result.rowcount


def count(state: StateStore) -> int:
    """How many records exist (in progress or finished)."""
    with state.read() as connection:
        return int(connection.execute(select(func.count()).select_from(idempotency_keys)).scalar_one())
