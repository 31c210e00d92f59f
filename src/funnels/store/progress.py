"""Funnel progress as the state store keeps it (`satisfied_steps`): one row per satisfied step; here, what
delivery, the instance view and replay read of it. Steps are satisfied in order, so an instance's level in
a funnel is its number of rows there, and within one instance and funnel the step index orders the rows
as they were satisfied."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select

from funnels.store.state import chunks, satisfied_steps

# --- reads for delivery, people and replay (from the outbox branch)


@dataclass(frozen=True)
class StoredStep:
    """One satisfied step: which event satisfied it, and when."""

    funnel_id: str
    step_index: int
    event: str  # the step's event
    event_id: str
    event_ts_ms: int
    satisfied_ms: int


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


def satisfied_of(connection: Connection, instance_id: int) -> list[StoredStep]:
    """Every step the instance has satisfied, in any funnel."""
    rows = connection.execute(
        select(
            satisfied_steps.c.funnel_id,
            satisfied_steps.c.step_index,
            satisfied_steps.c.event,
            satisfied_steps.c.event_id,
            satisfied_steps.c.event_ts_ms,
            satisfied_steps.c.satisfied_ms,
        ).where(satisfied_steps.c.instance_id == instance_id)
    )
    return [StoredStep(*row) for row in rows]


def reached_in_order(connection: Connection) -> dict[tuple[int, str], list[str]]:
    """Every instance's reached step events per funnel, by (instance id, funnel id), in the order they were
    satisfied (the primary key's order: by step index within an instance and funnel)."""
    reached: dict[tuple[int, str], list[str]] = {}
    rows = connection.execute(
        select(satisfied_steps.c.instance_id, satisfied_steps.c.funnel_id, satisfied_steps.c.event).order_by(
            satisfied_steps.c.instance_id, satisfied_steps.c.funnel_id, satisfied_steps.c.step_index
        )
    )
    for instance_id, funnel_id, event in rows:
        reached.setdefault((instance_id, funnel_id), []).append(event)
    return reached
