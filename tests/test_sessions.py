"""Dashboard sessions over a real state store: only a hash of the token is kept, expiry is fixed, a revoked
key's sessions end, signing out ends one session."""

from __future__ import annotations

from sqlalchemy import select

from funnels.auth import create_key, key_id_of, revoke_key, verify_key
from funnels.clock import ManualClock
from funnels.services import Services
from funnels.sessions import SESSION_TTL_MS, close_session, find_session, open_session
from funnels.store.state import dashboard_sessions
from tests.postgres import BOTH

pytestmark = BOTH


def admin(services: Services, clock: ManualClock) -> str:
    return create_key(services.state, clock, ["admin"], name="Ada")


def test_a_session_stands_for_its_key_and_stores_no_token(services: Services, clock: ManualClock) -> None:
    key = verify_key(services.state, admin(services, clock))
    assert key is not None
    token, session = open_session(services.state, clock, key)
    found = find_session(services.state, clock, token)
    assert found == session
    assert found.key == key and found.key.name == "Ada"
    assert found.expires_ms == clock.now_ms() + SESSION_TTL_MS
    with services.state.read() as connection:
        rows = connection.execute(select(dashboard_sessions)).all()
    assert len(rows) == 1 and token not in repr(tuple(rows[0]))
    assert find_session(services.state, clock, token + "x") is None
    assert find_session(services.state, clock, "") is None


def test_expiry_is_fixed_from_sign_in(services: Services, clock: ManualClock) -> None:
    key = verify_key(services.state, admin(services, clock))
    assert key is not None
    token, _ = open_session(services.state, clock, key)
    clock.advance(SESSION_TTL_MS - 1)
    assert find_session(services.state, clock, token) is not None
    clock.advance(1)
    assert find_session(services.state, clock, token) is None


def test_revoking_the_key_ends_its_sessions(services: Services, clock: ManualClock) -> None:
    raw = admin(services, clock)
    key = verify_key(services.state, raw)
    assert key is not None
    first, _ = open_session(services.state, clock, key)
    second, _ = open_session(services.state, clock, key)
    assert revoke_key(services.state, clock, key_id_of(raw))
    assert find_session(services.state, clock, first) is None
    assert find_session(services.state, clock, second) is None


def test_closing_ends_one_session_and_expired_ones_are_pruned(services: Services, clock: ManualClock) -> None:
    key = verify_key(services.state, admin(services, clock))
    assert key is not None
    old, _ = open_session(services.state, clock, key)
    clock.advance(SESSION_TTL_MS)
    kept, _ = open_session(services.state, clock, key)  # prunes `old`, which just expired
    other, _ = open_session(services.state, clock, key)
    assert close_session(services.state, other) and not close_session(services.state, other)
    assert find_session(services.state, clock, kept) is not None
    with services.state.read() as connection:
        assert len(connection.execute(select(dashboard_sessions)).all()) == 1
    assert not close_session(services.state, old)
