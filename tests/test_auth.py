"""API keys: the verification cache serves repeat requests without a store read, and forgets revoked keys."""

from __future__ import annotations

from funnels.auth import KeyCache, create_key, revoke_key
from funnels.clock import ManualClock
from funnels.services import Services
from tests.postgres import BOTH

pytestmark = BOTH


class Ticker:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_verified_key_is_remembered_for_its_ttl(services: Services, clock: ManualClock) -> None:
    key = create_key(services.state, clock, ["query:read"], name="reader")
    ticker = Ticker()
    cache = KeyCache(services.state, ttl_s=5.0, monotonic=ticker)
    first = cache.verify(key)
    assert first is not None and first.scopes == frozenset({"query:read"}) and first.name == "reader"
    key_id = first.id
    revoke_key(services.state, clock, key_id)  # as `funnels keys revoke` in another process would
    ticker.now += 4.9
    assert cache.verify(key) == first  # within the TTL: from memory
    ticker.now += 0.2
    assert cache.verify(key) is None  # past it: read again, and revoked


def test_revoking_through_the_cache_takes_effect_at_once(services: Services, clock: ManualClock) -> None:
    key = create_key(services.state, clock, ["admin"])
    other = create_key(services.state, clock, ["admin"])
    cache = KeyCache(services.state, monotonic=Ticker())
    record = cache.verify(key)
    assert record is not None and cache.verify(other) is not None
    assert cache.revoke(clock, record.id) is True
    assert cache.verify(key) is None
    assert cache.verify(other) is not None  # other keys are unaffected
    assert cache.revoke(clock, record.id) is False  # already revoked


def test_wrong_secrets_and_malformed_keys_are_never_accepted(services: Services, clock: ManualClock) -> None:
    key = create_key(services.state, clock, ["events:write"])
    cache = KeyCache(services.state, monotonic=Ticker(), max_keys=2)
    assert cache.verify(key) is not None
    for bad in (key[:-1] + ("A" if key[-1] != "A" else "B"), "fk_nope", "", key + "x"):
        assert cache.verify(bad) is None
    # More valid keys than `max_keys`: the memory is bounded, and every key still verifies.
    more = [create_key(services.state, clock, ["events:write"]) for _ in range(3)]
    assert all(cache.verify(k) is not None for k in [key, *more])
    assert len(cache._known) <= 2
