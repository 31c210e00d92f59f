"""Funnel progress rows: recording satisfied steps, levels per funnel, and the reads of the people view and
`funnels replay`."""

from __future__ import annotations

from funnels.store import progress
from funnels.store.progress import SatisfiedStep
from funnels.store.state import StateStore


def step(instance_id: int, funnel: str, index: int, satisfied_ms: int) -> SatisfiedStep:
    return SatisfiedStep(
        instance_id, funnel, index, f"step{index}", f"e{instance_id}-{funnel}-{index}", 5, satisfied_ms
    )


def test_levels_count_each_instances_satisfied_steps_per_funnel(state: StateStore) -> None:
    with state.write() as connection:
        progress.record(connection, [step(1, "onboarding", 0, 10), step(1, "onboarding", 1, 10)])
        progress.record(connection, [step(1, "billing", 0, 20), step(2, "onboarding", 0, 20)])
        progress.record(connection, [])
    with state.read() as connection:
        assert progress.levels_of(connection, [1, 2, 3]) == {
            1: {"onboarding": 2, "billing": 1},
            2: {"onboarding": 1},
            3: {},  # asked for, nothing satisfied
        }
        assert progress.levels_of(connection, range(1, 1_001))[1] == {"onboarding": 2, "billing": 1}


def test_the_steps_of_one_instance_and_every_step_in_the_order_satisfied(state: StateStore) -> None:
    rows = [step(2, "onboarding", 1, 30), step(1, "onboarding", 0, 20), step(2, "onboarding", 0, 30)]
    with state.write() as connection:
        progress.record(connection, rows)
    with state.read() as connection:
        assert sorted(progress.satisfied_by(connection, 2)) == sorted([rows[0], rows[2]])
        assert progress.satisfied_by(connection, 3) == []
        assert progress.all_satisfied(connection) == [rows[1], rows[2], rows[0]]


def test_reached_steps_of_the_instances_asked_for(state: StateStore) -> None:
    with state.write() as connection:
        progress.record(connection, [step(1, "f", 0, 10), step(1, "f", 1, 20), step(2, "g", 0, 10)])
        progress.record(connection, [step(n, "f", 0, 5) for n in range(100, 1_300)])
    with state.read() as connection:
        assert sorted(progress.reached_steps(connection, [1, 3])) == [
            (1, "f", 0, "step0"),
            (1, "f", 1, "step1"),
        ]
        assert len(progress.reached_steps(connection, range(100, 1_300))) == 1_200  # more than one IN list
        assert progress.reached_steps(connection, []) == []


def test_a_step_recorded_twice_stays_as_first_recorded(state: StateStore) -> None:
    """Two nodes satisfying one step of one instance at once (PostgreSQL): the second changes nothing."""
    with state.write() as connection:
        progress.record(connection, [step(1, "f", 0, 10)])
        progress.record(connection, [step(1, "f", 0, 99), step(1, "f", 1, 99)])
    with state.read() as connection:
        assert sorted(progress.satisfied_by(connection, 1)) == [step(1, "f", 0, 10), step(1, "f", 1, 99)]
