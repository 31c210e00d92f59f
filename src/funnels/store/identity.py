"""Model instances and their ids as the state store keeps them (`instances`, `instance_ids`): here, what
delivery, the instance view and replay read of them. What an identify means (caps, conflicts, merging) is
`funnels.automation.identity`'s."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, bindparam, func, literal_column, select

from funnels.store.state import chunks, instance_ids, instances

# --- reads for delivery, people and replay (from the outbox branch)

# The ids' order is the order templates see in `ids`. Their primary key (model, id_text) would sort them
# alphabetically; `position` (migration 0003) is the portable order, but identify does not write it yet
# (every new id is at 0), so this still orders by SQLite's rowid, their insertion order. Once identify
# numbers the ids, order by `position` (then `id_text`) and this runs on PostgreSQL too.
_IDS_BY_INSTANCE = (
    select(instance_ids.c.instance_id, instance_ids.c.id_text)
    .where(instance_ids.c.instance_id.in_(bindparam("instance_ids", expanding=True)))
    .order_by(instance_ids.c.instance_id, literal_column("instance_ids.rowid"))
)


def ids_by_instance(connection: Connection, instance_keys: Iterable[int]) -> dict[int, list[str]]:
    """Each instance's ids in the order they were added (its primary id first); an instance without any
    is left out."""
    ids: dict[int, list[str]] = {}
    for chunk in chunks(instance_keys):
        for instance_id, id_text in connection.execute(_IDS_BY_INSTANCE, {"instance_ids": chunk}):
            ids.setdefault(instance_id, []).append(id_text)
    return ids


def instance_times(connection: Connection, instance_id: int) -> tuple[int, int]:
    """When the instance was created and last identified (epoch ms); `NoResultFound` if it does not exist."""
    row = connection.execute(
        select(instances.c.created_ms, instances.c.updated_ms).where(instances.c.id == instance_id)
    ).one()
    return int(row.created_ms), int(row.updated_ms)


def count_instances(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(instances)).scalar_one())
