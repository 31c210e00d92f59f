"""API keys: `fk_<id>_<secret>`, stored as a salted hash of the secret, each with scopes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from funnels.clock import Clock
from funnels.store import keys as stored
from funnels.store.state import StateStore
from funnels.types import SCOPES

KEY_PREFIX = "fk_"


@dataclass(frozen=True)
class ApiKey:
    id: str
    scopes: frozenset[str]
    name: str = ""

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def _hash(key_id: str, secret: str) -> str:
    return hashlib.sha256(f"{key_id}:{secret}".encode()).hexdigest()


def create_key(store: StateStore, clock: Clock, scopes: list[str], name: str = "") -> str:
    """Create a key with these scopes and return it; only its hash is kept."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}; got {', '.join(unknown) or 'none'}")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)
    stored.add_key(store, key_id, _hash(key_id, secret), tuple(sorted(set(scopes))), name, clock.now_ms())
    return f"{KEY_PREFIX}{key_id}_{secret}"


def verify_key(store: StateStore, key: str) -> ApiKey | None:
    """The key's record if it is well-formed, known, not revoked and its secret matches."""
    if not key.startswith(KEY_PREFIX) or key.count("_") < 2:
        return None
    key_id, _, secret = key[len(KEY_PREFIX) :].partition("_")
    row = stored.find_key(store, key_id)
    if row is None or row.revoked_ms is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, _hash(key_id, secret)):
        return None
    return ApiKey(id=row.id, scopes=frozenset(row.scopes), name=row.name)


class KeyCache:
    """`verify_key` with memory: a key verified in the last `ttl_s` seconds costs a dict lookup instead of
    a SQLite read and a hash on every request. Only valid keys are remembered (at most `max_keys`). A key
    revoked through `revoke` stops working at once; one revoked by another process (`funnels keys
    revoke` while the server runs) within `ttl_s`."""

    def __init__(
        self,
        store: StateStore,
        ttl_s: float = 5.0,
        max_keys: int = 1_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self.monotonic = monotonic  # cache freshness is not business time: not the injected clock
        self._known: dict[str, tuple[ApiKey, float]] = {}  # presented key → (record, monotonic expiry)
        self._lock = threading.Lock()

    def verify(self, key: str) -> ApiKey | None:
        now = self.monotonic()
        with self._lock:
            hit = self._known.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        record = verify_key(self.store, key)
        with self._lock:
            if record is None:
                self._known.pop(key, None)
            else:
                if len(self._known) >= self.max_keys:
                    self._known.clear()
                self._known[key] = (record, now + self.ttl_s)
        return record

    def revoke(self, clock: Clock, key_id: str) -> bool:
        """`revoke_key`, effective at once for this process."""
        revoked = revoke_key(self.store, clock, key_id)
        with self._lock:
            self._known = {key: hit for key, hit in self._known.items() if hit[0].id != key_id}
        return revoked


def revoke_key(store: StateStore, clock: Clock, key_id: str) -> bool:
    return stored.mark_revoked(store, key_id, clock.now_ms())


@dataclass(frozen=True)
class KeyInfo:
    """What is kept of a key: never its secret."""

    id: str
    scopes: tuple[str, ...]
    name: str
    created_ms: int
    revoked_ms: int | None

    @property
    def revoked(self) -> bool:
        return self.revoked_ms is not None


def _info(row: stored.StoredKey) -> KeyInfo:
    return KeyInfo(row.id, row.scopes, row.name, row.created_ms, row.revoked_ms)


def list_keys(store: StateStore) -> list[KeyInfo]:
    return [_info(row) for row in stored.all_keys(store)]


def key_info(store: StateStore, key_id: str) -> KeyInfo | None:
    row = stored.find_key(store, key_id)
    return None if row is None else _info(row)


def key_id_of(key: str) -> str:
    """The public id of a key as `create_key` returns it (`fk_<id>_<secret>`)."""
    return key[len(KEY_PREFIX) :].partition("_")[0]
