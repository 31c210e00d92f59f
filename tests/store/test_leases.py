"""Leases: taken when free or expired, renewed by their holder only, released at once, one winner in a race."""

from __future__ import annotations

import threading

from funnels.store import leases
from funnels.store.state import StateStore

TTL = 60_000


def test_a_free_lease_is_taken_and_renewed_by_its_holder_only(state: StateStore) -> None:
    assert leases.find(state, "ship") is None
    assert leases.hold(state, "ship", "a", 1_000, TTL) == leases.Lease("ship", "a", 61_000, None)
    # Another holder sees it held and does not change it.
    assert leases.hold(state, "ship", "b", 2_000, TTL, progress=9) == leases.Lease("ship", "a", 61_000, None)
    # Its holder renews it, with progress; a renewal without progress keeps the last one.
    assert leases.hold(state, "ship", "a", 5_000, TTL, progress=42) == leases.Lease("ship", "a", 65_000, 42)
    assert leases.hold(state, "ship", "a", 6_000, TTL) == leases.Lease("ship", "a", 66_000, 42)
    assert leases.find(state, "ship") == leases.Lease("ship", "a", 66_000, 42)
    # Leases are by name.
    assert leases.hold(state, "other", "b", 6_000, TTL).holder == "b"


def test_an_expired_lease_goes_to_the_next_process_that_tries(state: StateStore) -> None:
    leases.hold(state, "ship", "a", 1_000, TTL, progress=7)
    assert leases.hold(state, "ship", "b", 60_999, TTL).holder == "a"  # one ms before it expires
    taken = leases.hold(state, "ship", "b", 61_000, TTL)
    assert taken == leases.Lease("ship", "b", 121_000, 7)  # the last holder's progress stays until b reports
    assert leases.hold(state, "ship", "a", 62_000, TTL).holder == "b"  # the old holder does not get it back


def test_a_released_lease_is_free_at_once_and_only_its_holder_releases_it(state: StateStore) -> None:
    leases.hold(state, "ship", "a", 1_000, TTL)
    leases.release(state, "ship", "b")  # not b's: nothing happens
    assert leases.hold(state, "ship", "b", 2_000, TTL).holder == "a"
    leases.release(state, "ship", "a")
    assert leases.hold(state, "ship", "b", 2_000, TTL).holder == "b"


def test_processes_racing_for_a_free_lease_have_one_winner(state: StateStore) -> None:
    """Eight threads, each through the store's own connections, try at once: every one of them sees the same
    holder afterwards (PostgreSQL: concurrent upserts; SQLite: the write lock)."""
    start = threading.Barrier(8)
    seen: dict[str, str] = {}

    def take(holder: str) -> None:
        start.wait()
        seen[holder] = leases.hold(state, "ship", holder, 1_000, TTL).holder

    threads = [threading.Thread(target=take, args=(f"h{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(seen) == 8
    winners = set(seen.values())
    assert len(winners) == 1
    assert seen[winners.pop()] in seen  # the winner is one of them, and saw itself win
    assert leases.find(state, "ship") is not None
