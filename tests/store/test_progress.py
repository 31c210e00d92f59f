"""Funnel progress on a real state store (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert

from funnels.store.progress import SatisfiedStep, all_satisfied, reached_steps, satisfied_by
from funnels.store.state import StateStore, satisfied_steps


@pytest.fixture
def store(state_target: Path | str) -> Iterator[StateStore]:
    state = StateStore(state_target)
    yield state
    state.close()


def step(instance_id: int, funnel_id: str, step_index: int, event: str, satisfied_ms: int) -> SatisfiedStep:
    return SatisfiedStep(
        instance_id,
        funnel_id,
        step_index,
        event,
        f"e-{instance_id}-{funnel_id}-{step_index}",
        satisfied_ms - 1,
        satisfied_ms,
    )


def satisfy(store: StateStore, *steps: SatisfiedStep) -> None:
    with store.write() as connection:
        connection.execute(insert(satisfied_steps), [row._asdict() for row in steps])


# --- reads for delivery, people and replay (from the outbox branch)


def test_reached_steps_of_the_instances_asked_for(store: StateStore) -> None:
    satisfy(
        store, step(1, "f", 0, "sign_up", 10), step(1, "f", 1, "activate", 20), step(2, "g", 0, "visit", 10)
    )
    satisfy(store, *[step(n, "f", 0, "sign_up", 5) for n in range(100, 1_300)])
    with store.read() as connection:
        assert sorted(reached_steps(connection, [1, 3])) == [(1, "f", 0, "sign_up"), (1, "f", 1, "activate")]
        assert len(reached_steps(connection, range(100, 1_300))) == 1_200  # more than one IN list's worth
        assert reached_steps(connection, []) == []


def test_an_instances_satisfied_steps(store: StateStore) -> None:
    mine = [step(1, "f", 0, "sign_up", 10), step(1, "g", 0, "visit", 30)]
    satisfy(store, *mine, step(2, "f", 0, "sign_up", 10))
    with store.read() as connection:
        assert sorted(satisfied_by(connection, 1)) == mine
        assert satisfied_by(connection, 3) == []


def test_every_step_in_the_order_satisfied(store: StateStore) -> None:
    """By time; two steps satisfied at one millisecond by step index (steps are satisfied in order)."""
    rows = [step(2, "f", 1, "second", 50), step(2, "f", 0, "first", 50), step(2, "f", 2, "buy", 60)]
    satisfy(store, *rows, step(1, "g", 0, "visit", 5))
    with store.read() as connection:
        found = [(row.instance_id, row.event) for row in all_satisfied(connection)]
    assert found == [(1, "visit"), (2, "first"), (2, "second"), (2, "buy")]
