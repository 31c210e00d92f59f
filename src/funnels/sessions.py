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

from funnels.auth import ApiKey
from funnels.clock import Clock
from funnels.store import keys as stored
from funnels.store.state import StateStore

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
    stored.add_session(
        store, _hash(token), key.id, session.csrf_token, session.created_ms, session.expires_ms
    )
    return token, session


def find_session(store: StateStore, clock: Clock, token: str) -> DashboardSession | None:
    """The live session this token names: None once it expired, was closed, or its key was revoked."""
    if not token or len(token) > 200:
        return None
    row = stored.find_session(store, _hash(token))
    if row is None or row.key_revoked_ms is not None or row.expires_ms <= clock.now_ms():
        return None
    key = ApiKey(id=row.key_id, scopes=frozenset(row.scopes), name=row.key_name)
    return DashboardSession(key, row.csrf_token, row.created_ms, row.expires_ms)


def close_session(store: StateStore, token: str) -> bool:
    """Sign out: delete the session (True if there was one)."""
    return stored.delete_session(store, _hash(token))
