"""API keys and dashboard sessions as the state store keeps them: hashes, scopes, expiry; no secrets.

`funnels.auth` and `funnels.sessions` own what they mean (hashing, verification, expiry rules); this module
only stores and finds their rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update

from funnels.store.state import StateStore, api_keys, dashboard_sessions


@dataclass(frozen=True)
class StoredKey:
    id: str
    secret_hash: str
    scopes: tuple[str, ...]
    name: str
    created_ms: int
    revoked_ms: int | None


@dataclass(frozen=True)
class StoredSession:
    """A session's row joined with its key's scopes, name and revocation."""

    key_id: str
    scopes: tuple[str, ...]
    key_name: str
    key_revoked_ms: int | None
    csrf_token: str
    created_ms: int
    expires_ms: int


def _key(row: Any) -> StoredKey:
    return StoredKey(
        row.id, row.secret_hash, tuple(row.scopes.split()), row.name, row.created_ms, row.revoked_ms
    )


def add_key(
    store: StateStore, key_id: str, secret_hash: str, scopes: tuple[str, ...], name: str, created_ms: int
) -> None:
    with store.write() as connection:
        connection.execute(
            insert(api_keys).values(
                id=key_id, secret_hash=secret_hash, scopes=" ".join(scopes), name=name, created_ms=created_ms
            )
        )


def find_key(store: StateStore, key_id: str) -> StoredKey | None:
    with store.read() as connection:
        row = connection.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
    return None if row is None else _key(row)


def all_keys(store: StateStore) -> list[StoredKey]:
    """Every key, revoked ones too, oldest first."""
    with store.read() as connection:
        rows = connection.execute(select(api_keys).order_by(api_keys.c.created_ms)).all()
    return [_key(row) for row in rows]


def mark_revoked(store: StateStore, key_id: str, now_ms: int) -> bool:
    """Revoke the key at `now_ms`: True if it existed and was not revoked already."""
    with store.write() as connection:
        result = connection.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_ms.is_(None))
            .values(revoked_ms=now_ms)
        )
    return result.rowcount > 0


def add_session(
    store: StateStore, token_hash: str, key_id: str, csrf_token: str, created_ms: int, expires_ms: int
) -> None:
    """Keep a new session; sessions expired by `created_ms` are deleted in the same transaction."""
    with store.write() as connection:
        connection.execute(delete(dashboard_sessions).where(dashboard_sessions.c.expires_ms <= created_ms))
        connection.execute(
            insert(dashboard_sessions).values(
                token_hash=token_hash,
                key_id=key_id,
                csrf_token=csrf_token,
                created_ms=created_ms,
                expires_ms=expires_ms,
            )
        )


def find_session(store: StateStore, token_hash: str) -> StoredSession | None:
    query = (
        select(dashboard_sessions, api_keys.c.scopes, api_keys.c.name, api_keys.c.revoked_ms)
        .join(api_keys, api_keys.c.id == dashboard_sessions.c.key_id)
        .where(dashboard_sessions.c.token_hash == token_hash)
    )
    with store.read() as connection:
        row = connection.execute(query).first()
    if row is None:
        return None
    return StoredSession(
        row.key_id,
        tuple(row.scopes.split()),
        row.name,
        row.revoked_ms,
        row.csrf_token,
        row.created_ms,
        row.expires_ms,
    )


def delete_session(store: StateStore, token_hash: str) -> bool:
    """True if there was a session with this token hash."""
    with store.write() as connection:
        result = connection.execute(
            delete(dashboard_sessions).where(dashboard_sessions.c.token_hash == token_hash)
        )
    return result.rowcount > 0
