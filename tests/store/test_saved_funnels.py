"""Saved funnels' rows: added under unique names up to a cap, replaced only at the version given, listed by
name without their parameters, removed; concurrent writers keep the cap and the names (both dialects)."""

from __future__ import annotations

import threading

from funnels.store import saved_funnels as stored
from funnels.store.saved_funnels import ListedFunnel, StoredFunnel
from funnels.store.state import StateStore


def funnel(funnel_id: str, name: str, parameters: str = '{"date_from": "2026-04-01"}') -> StoredFunnel:
    return StoredFunnel(funnel_id, name, parameters, 1, 1_000, 1_000)


def test_added_funnels_are_found_by_id_and_name_and_listed_by_name(state: StateStore) -> None:
    assert stored.listing(state) == []
    assert stored.add(state, funnel("b1", "Signups"), 10) == "added"
    assert stored.add(state, funnel("a1", "Activation", '{"steps": "[]"}'), 10) == "added"
    assert stored.find(state, "b1") == funnel("b1", "Signups")
    assert stored.find_named(state, "Activation") == funnel("a1", "Activation", '{"steps": "[]"}')
    assert stored.find(state, "zz") is None and stored.find_named(state, "signups") is None  # exact names
    assert stored.listing(state) == [
        ListedFunnel("a1", "Activation", 1, 1_000, 1_000),
        ListedFunnel("b1", "Signups", 1, 1_000, 1_000),
    ]


def test_a_taken_name_and_a_full_store_add_nothing(state: StateStore) -> None:
    assert stored.add(state, funnel("a1", "One"), 2) == "added"
    assert stored.add(state, funnel("a2", "One"), 2) == "name taken"
    assert stored.add(state, funnel("a2", "Two"), 2) == "added"
    assert stored.add(state, funnel("a3", "Three"), 2) == "full"
    assert [row.id for row in stored.listing(state)] == ["a1", "a2"]
    assert stored.remove(state, "a1") and not stored.remove(state, "a1")
    assert stored.add(state, funnel("a3", "Three"), 2) == "added"  # room again after a delete


def test_replace_checks_the_version_and_the_name_and_counts_versions(state: StateStore) -> None:
    stored.add(state, funnel("a1", "One"), 10)
    stored.add(state, funnel("a2", "Two"), 10)
    assert stored.replace(state, "zz", "X", "{}", 2_000, None) == ("missing", None)
    assert stored.replace(state, "a1", "Two", "{}", 2_000, None) == ("name taken", funnel("a1", "One"))
    assert stored.replace(state, "a1", "One", "{}", 2_000, 2) == ("stale", funnel("a1", "One"))
    outcome, row = stored.replace(state, "a1", "Uno", '{"x": "1"}', 2_000, 1)
    assert outcome == "replaced" and row == StoredFunnel("a1", "Uno", '{"x": "1"}', 2, 1_000, 2_000)
    # Without a version it replaces whatever is there; keeping its own name is not a conflict.
    assert stored.replace(state, "a1", "Uno", "{}", 3_000, None)[1] == StoredFunnel(
        "a1", "Uno", "{}", 3, 1_000, 3_000
    )
    assert stored.replace(state, "a1", "Uno", "{}", 4_000, 2)[0] == "stale"
    assert stored.find_named(state, "One") is None


def test_racing_writers_keep_the_cap_unique_names_and_versions(state: StateStore) -> None:
    """Eight threads add under one name, eight more under their own names with room for three, and eight
    replace one funnel at version 1: one winner, three, and one winner."""
    stored.add(state, funnel("v0", "Versioned"), 100)
    start = threading.Barrier(24)
    outcomes: dict[str, str] = {}

    def same_name(i: int) -> None:
        start.wait()
        outcomes[f"same{i}"] = stored.add(state, funnel(f"s{i}", "Same"), 5)

    def own_name(i: int) -> None:
        start.wait()
        outcomes[f"own{i}"] = stored.add(state, funnel(f"o{i}", f"Own {i}"), 5)

    def update(i: int) -> None:
        start.wait()
        outcomes[f"update{i}"] = stored.replace(state, "v0", "Versioned", f'{{"i": "{i}"}}', 2_000, 1)[0]

    threads = [
        threading.Thread(target=work, args=(i,)) for work in (same_name, own_name, update) for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == 24
    values = list(outcomes.values())
    assert sum(outcome == "replaced" for outcome in values) == 1
    assert sum(outcome == "stale" for outcome in values) == 7
    added = [name for name, outcome in outcomes.items() if outcome == "added"]
    assert len(added) == 4  # the cap of 5, with the versioned one
    assert sum(name.startswith("same") for name in added) <= 1
    assert len(stored.listing(state)) == 5
    row = stored.find(state, "v0")
    assert row is not None and row.version == 2
