"""Funnel progress as the state store keeps it: one row per step an instance satisfied.

`funnels.automation` owns the step rule (which step an event satisfies); this module records and reads
what it decided. Steps are satisfied in order, so an instance's level in a funnel is its number of rows
there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from sqlalchemy import Connection, bindparam, func, select

from funnels.store.dialect import insert
from funnels.store.state import chunks, satisfied_steps


class SatisfiedStep(NamedTuple):
    instance_id: int
    funnel_id: str
    step_index: int  # 0-based
    event: str  # the step's event name
    event_id: str  # the event that satisfied it
    event_ts_ms: int
    satisfied_ms: int


_COLUMNS = [satisfied_steps.c[name] for name in SatisfiedStep._fields]
# Built once: these run for every ingest batch.
_LEVELS = (
    select(satisfied_steps.c.instance_id, satisfied_steps.c.funnel_id, func.count())
    .where(satisfied_steps.c.instance_id.in_(bindparam("keys", expanding=True)))
    .group_by(satisfied_steps.c.instance_id, satisfied_steps.c.funnel_id)
)


def levels_of(connection: Connection, instance_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """Each instance's level (satisfied steps) per funnel; every instance asked for has an entry."""
    levels: dict[int, dict[str, int]] = {instance_id: {} for instance_id in instance_ids}
    for chunk in chunks(levels):
        for instance_id, funnel_id, count in connection.execute(_LEVELS, {"keys": chunk}):
            levels[instance_id][funnel_id] = int(count)
    return levels


def record(connection: Connection, steps: Sequence[SatisfiedStep]) -> None:
    """Record satisfied steps (one statement). A step already recorded stays as it is: on PostgreSQL two
    nodes may satisfy one step of one instance at once, and the second changes nothing (its jobs, keyed
    alike, are not scheduled twice either)."""
    if steps:
        statement = insert(connection, satisfied_steps).on_conflict_do_nothing()
        connection.execute(statement, [step._asdict() for step in steps])


# Built once: it runs for every claimed batch of jobs.
_REACHED = select(
    satisfied_steps.c.instance_id,
    satisfied_steps.c.funnel_id,
    satisfied_steps.c.step_index,
    satisfied_steps.c.event,
).where(satisfied_steps.c.instance_id.in_(bindparam("instance_ids", expanding=True)))


def reached_steps(connection: Connection, instance_keys: Iterable[int]) -> list[tuple[int, str, int, str]]:
    """(instance id, funnel id, step index, step event) of every step these instances have satisfied."""
    reached: list[tuple[int, str, int, str]] = []
    for chunk in chunks(instance_keys):
        reached.extend(connection.execute(_REACHED, {"instance_ids": chunk}))
    return reached


def satisfied_by(connection: Connection, instance_id: int) -> list[SatisfiedStep]:
    """The steps one instance satisfied, in every funnel."""
    rows = connection.execute(select(*_COLUMNS).where(satisfied_steps.c.instance_id == instance_id))
    return [SatisfiedStep(*row) for row in rows]


def all_satisfied(connection: Connection) -> list[SatisfiedStep]:
    """Every satisfied step, by when it was satisfied (one instance's steps of a funnel in the order it
    reached them)."""
    rows = connection.execute(
        select(*_COLUMNS).order_by(satisfied_steps.c.satisfied_ms, satisfied_steps.c.step_index)
    )
    return [SatisfiedStep(*row) for row in rows]
