"""Dashboard sessions: signing in with an API key opens a server-side session named by a cookie's token.

How it works: the token (256 random bits) goes to the browser once, in the `funnels_session` cookie; the
state store keeps only its SHA-256, with the key id, a CSRF token and the expiry. Expiry is fixed at
`SESSION_TTL_MS` after sign-in, not sliding: a request never writes, and a leaked cookie is good for at
most that long. Every lookup joins the key, so revoking a key ends its sessions on their next request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, insert, select

from funnels.auth import ApiKey
from funnels.clock import Clock
from funnels.store.state import StateStore, api_keys, dashboard_sessions

SESSION_COOKIE = "funnels_session"
SESSION_TTL_MS = 12 * 60 * 60 * 1000


@dataclass(frozen=True)
class DashboardSession:
    key: ApiKey
    csrf_token: str
    created_ms: int
    expires_ms: int

    def csrf_matches(self, candidate: str | None) -> bool:
        """Whether `candidate` is this session's CSRF token (compared in constant time)."""
        return candidate is not None and hmac.compare_digest(candidate.encode(), self.csrf_token.encode())


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(store: StateStore, clock: Clock, key: ApiKey) -> tuple[str, DashboardSession]:
    """A new session for this (verified) key: the cookie's token, returned only here, and the session.
    Expired sessions are deleted on the way, so the table holds live sessions and a few revoked ones."""
    now_ms = clock.now_ms()
    token = secrets.token_urlsafe(32)
    session = DashboardSession(key, secrets.token_urlsafe(32), now_ms, now_ms + SESSION_TTL_MS)
    with store.write() as connection:
        connection.execute(delete(dashboard_sessions).where(dashboard_sessions.c.expires_ms <= now_ms))
        connection.execute(
            insert(dashboard_sessions).values(
                token_hash=_hash(token),
                key_id=key.id,
                csrf_token=session.csrf_token,
                created_ms=session.created_ms,
                expires_ms=session.expires_ms,
            )
        )
    return token, session


def find_session(store: StateStore, clock: Clock, token: str) -> DashboardSession | None:
    """The live session this token names: None once it expired, was closed, or its key was revoked."""
    if not token or len(token) > 200:
        return None
    query = (
        select(dashboard_sessions, api_keys.c.scopes, api_keys.c.name, api_keys.c.revoked_ms)
        .join(api_keys, api_keys.c.id == dashboard_sessions.c.key_id)
        .where(dashboard_sessions.c.token_hash == _hash(token))
    )
    with store.read() as connection:
        row = connection.execute(query).first()
    if row is None or row.revoked_ms is not None or row.expires_ms <= clock.now_ms():
        return None
    key = ApiKey(id=row.key_id, scopes=frozenset(row.scopes.split()), name=row.name)
    return DashboardSession(key, row.csrf_token, row.created_ms, row.expires_ms)


def close_session(store: StateStore, token: str) -> bool:
    """Sign out: delete the session (True if there was one)."""
    with store.write() as connection:
        result = connection.execute(
            delete(dashboard_sessions).where(dashboard_sessions.c.token_hash == _hash(token))
        )
    return result.rowcount > 0
