"""Funnel progress on a real state store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert

from funnels.store.progress import StoredStep, reached_in_order, reached_steps, satisfied_of
from funnels.store.state import StateStore, satisfied_steps


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    state = StateStore(tmp_path / "state.sqlite3")
    yield state
    state.close()


def satisfy(store: StateStore, *steps: tuple[int, str, int, str, int]) -> None:
    """(instance id, funnel id, step index, event, satisfied ms) rows, in this order."""
    with store.write() as connection:
        connection.execute(
            insert(satisfied_steps),
            [
                {
                    "instance_id": instance_id,
                    "funnel_id": funnel_id,
                    "step_index": step_index,
                    "event": event,
                    "event_id": f"e-{instance_id}-{funnel_id}-{step_index}",
                    "event_ts_ms": satisfied_ms - 1,
                    "satisfied_ms": satisfied_ms,
                }
                for instance_id, funnel_id, step_index, event, satisfied_ms in steps
            ],
        )


# --- reads for delivery, people and replay (from the outbox branch)


def test_reached_steps_of_the_instances_asked_for(store: StateStore) -> None:
    satisfy(store, (1, "f", 0, "sign_up", 10), (1, "f", 1, "activate", 20), (2, "g", 0, "visit", 10))
    satisfy(store, *[(n, "f", 0, "sign_up", 5) for n in range(100, 1_300)])
    with store.read() as connection:
        assert sorted(reached_steps(connection, [1, 3])) == [(1, "f", 0, "sign_up"), (1, "f", 1, "activate")]
        assert len(reached_steps(connection, range(100, 1_300))) == 1_200  # more than one IN list's worth
        assert reached_steps(connection, []) == []


def test_an_instances_satisfied_steps(store: StateStore) -> None:
    satisfy(store, (1, "f", 0, "sign_up", 10), (1, "g", 0, "visit", 30), (2, "f", 0, "sign_up", 10))
    with store.read() as connection:
        found = sorted(satisfied_of(connection, 1), key=lambda step: step.funnel_id)
        assert satisfied_of(connection, 3) == []
    assert found == [
        StoredStep("f", 0, "sign_up", "e-1-f-0", 9, 10),
        StoredStep("g", 0, "visit", "e-1-g-0", 29, 30),
    ]


def test_reached_in_the_order_satisfied_per_instance_and_funnel(store: StateStore) -> None:
    """Steps are satisfied in order, so the step index orders them, also two satisfied at one millisecond
    (whatever order the rows were written in)."""
    satisfy(store, (2, "f", 1, "second", 50), (2, "f", 0, "first", 50), (2, "f", 2, "buy", 60))
    satisfy(store, (1, "g", 0, "visit", 5), (1, "f", 0, "sign_up", 70))
    with store.read() as connection:
        assert reached_in_order(connection) == {
            (2, "f"): ["first", "second", "buy"],
            (1, "g"): ["visit"],
            (1, "f"): ["sign_up"],
        }
