"""Model instances, their ids and their relationships as the state store keeps them.

`funnels.automation.identity` owns the rules (when ids name one instance or conflict, how properties merge,
the caps); this module reads and writes the rows in the caller's transaction. Within a model an id names
at most one instance (the primary key of `instance_ids`): `claim_ids` inserts with ON CONFLICT DO NOTHING
and reads back who holds each id, so an identify that races another for the same new id (several writers,
on PostgreSQL) learns who won instead of failing the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from funnels.store import dialect
from funnels.store.state import chunks, instance_ids, instances, relationships
from funnels.types import JSONDict


@dataclass(frozen=True)
class Instance:
    id: int
    model: str
    primary_id: str  # the first id it was identified with: its events' user key in the event store
    display_name: str | None
    properties: JSONDict
    created_ms: int
    updated_ms: int

    def ref(self) -> dict[str, str]:
        return {"model": self.model, "id": self.primary_id}


class Relationship(NamedTuple):
    """A parent–child pair by id: either side may name an instance that does not exist yet."""

    parent_model: str
    parent_id: str
    child_model: str
    child_id: str


Owners = dict[str, list[tuple[str, int]]]  # id → (model, instance id) of every model where it names one


def _instance(row: Any) -> Instance:
    return Instance(
        id=row.id,
        model=row.model,
        primary_id=row.primary_id,
        display_name=row.display_name,
        properties=orjson.loads(row.properties),
        created_ms=row.created_ms,
        updated_ms=row.updated_ms,
    )


# Built once: these run for every ingest batch, every identify and every claimed batch of jobs.
_INSTANCES = select(instances).where(instances.c.id.in_(bindparam("keys", expanding=True)))
_NAMED = (
    select(instance_ids.c.id_text, *instances.c)
    .join_from(instance_ids, instances, instances.c.id == instance_ids.c.instance_id)
    .where(instance_ids.c.id_text.in_(bindparam("ids", expanding=True)))
)
_OWNERS_IN = select(instance_ids.c.id_text, instance_ids.c.instance_id).where(
    instance_ids.c.model == bindparam("model"), instance_ids.c.id_text.in_(bindparam("ids", expanding=True))
)


def load_instances(connection: Connection, ids: Iterable[int]) -> dict[int, Instance]:
    found = {}
    for chunk in chunks(ids):
        for row in connection.execute(_INSTANCES, {"keys": chunk}):
            found[row.id] = _instance(row)
    return found


def instances_named(connection: Connection, ids: Iterable[str]) -> tuple[Owners, dict[int, Instance]]:
    """Which instances, of which models, these ids name (id → [(model, instance id)], an entry for each
    id that names any), and those instances; one query per 500 ids (an ingest batch's first read)."""
    owners: Owners = {}
    found: dict[int, Instance] = {}
    for chunk in chunks(set(ids)):
        for row in connection.execute(_NAMED, {"ids": chunk}):
            owners.setdefault(row.id_text, []).append((row.model, row.id))  # an id's model is its instance's
            if row.id not in found:
                found[row.id] = _instance(row)
    return owners, found


def owners_in(connection: Connection, model: str, ids: Sequence[str]) -> dict[str, int]:
    """Which of these ids name an instance of `model`, and which (id → instance id; at most a few hundred
    ids: one identify's)."""
    rows = connection.execute(_OWNERS_IN, {"model": model, "ids": list(ids)})
    return {id_text: instance_id for id_text, instance_id in rows}


def instance_by_id(connection: Connection, model: str, id_text: str) -> Instance | None:
    """The instance of `model` that this id names, if any."""
    found = owners_in(connection, model, [id_text]).get(id_text)
    return None if found is None else load_instances(connection, [found]).get(found)


def count_ids(connection: Connection, instance_id: int) -> int:
    return int(
        connection.execute(select(func.count()).where(instance_ids.c.instance_id == instance_id)).scalar_one()
    )


def ids_of(connection: Connection, instance_id: int, limit: int) -> list[str]:
    """The instance's ids in the order they were added (primary id first), at most `limit` of them."""
    return list(
        connection.execute(
            select(instance_ids.c.id_text)
            .where(instance_ids.c.instance_id == instance_id)
            .order_by(instance_ids.c.position, instance_ids.c.id_text)
            .limit(limit)
        ).scalars()
    )


# Built once: it runs for every claimed batch of jobs. The ids' order is the order templates see in `ids`.
_WITH_IDS = (
    select(*instances.c, instance_ids.c.id_text)
    .outerjoin_from(instances, instance_ids, instance_ids.c.instance_id == instances.c.id)
    .where(instances.c.id.in_(bindparam("keys", expanding=True)))
    .order_by(instances.c.id, instance_ids.c.position, instance_ids.c.id_text)
)


def instances_with_ids(
    connection: Connection, instance_keys: Iterable[int]
) -> dict[int, tuple[Instance, list[str]]]:
    """Each of these instances that exists, with its ids in the order they were added (its primary id
    first); one query per 500 instances (a claimed batch of jobs)."""
    found: dict[int, tuple[Instance, list[str]]] = {}
    for chunk in chunks(instance_keys):
        for row in connection.execute(_WITH_IDS, {"keys": chunk}):
            if row.id not in found:
                found[row.id] = (_instance(row), [])
            if row.id_text is not None:
                found[row.id][1].append(row.id_text)
    return found


def search_instances(
    connection: Connection, model: str, text: str | None, before: int | None, limit: int
) -> list[Instance]:
    """Up to `limit` instances of `model`, newest first (by instance key), those with a key below `before`
    when given; with `text`, only those one of whose ids or whose display name contains it (any case;
    `%` and `_` are plain characters)."""
    query = select(instances).where(instances.c.model == model)
    if text:
        named = select(instance_ids.c.instance_id).where(
            instance_ids.c.model == model, instance_ids.c.id_text.icontains(text, autoescape=True)
        )
        query = query.where(
            instances.c.display_name.icontains(text, autoescape=True) | instances.c.id.in_(named)
        )
    if before is not None:
        query = query.where(instances.c.id < before)
    rows = connection.execute(query.order_by(instances.c.id.desc()).limit(limit))
    return [_instance(row) for row in rows]


def count_instances(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(instances)).scalar_one())


def create_instance(
    connection: Connection,
    model: str,
    primary_id: str,
    display_name: str | None,
    properties: str,
    now_ms: int,
) -> int:
    """A new instance (`properties`: a JSON object), without ids yet (`claim_ids`); returns its id."""
    result = connection.execute(
        insert(instances).values(
            model=model,
            primary_id=primary_id,
            display_name=display_name,
            properties=properties,
            created_ms=now_ms,
            updated_ms=now_ms,
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def update_instance(
    connection: Connection, instance_id: int, now_ms: int, properties: str | None, display_name: str | None
) -> None:
    """Mark the instance updated at `now_ms`, replacing its properties (a JSON object) and display name
    where given."""
    values: dict[str, Any] = {"updated_ms": now_ms}
    if properties is not None:
        values["properties"] = properties
    if display_name is not None:
        values["display_name"] = display_name
    connection.execute(update(instances).where(instances.c.id == instance_id).values(**values))


def claim_ids(
    connection: Connection, model: str, ids: Sequence[str], instance_id: int, first_position: int
) -> dict[str, int]:
    """Give these ids of `model` to the instance where no instance holds them yet, in order from
    `first_position` (the instance's next place: 0 for the id it is created with); returns who holds each
    afterwards (id → instance id): the instance, or the one that held it first."""
    rows = [
        {"model": model, "id_text": id_, "instance_id": instance_id, "position": first_position + index}
        for index, id_ in enumerate(ids)
    ]
    claimed = set(
        connection.execute(
            dialect.insert(connection, instance_ids)
            .on_conflict_do_nothing(index_elements=["model", "id_text"])
            .returning(instance_ids.c.id_text),
            rows,
        ).scalars()
    )
    holders = {id_: instance_id for id_ in ids if id_ in claimed}
    if len(holders) < len(ids):
        holders.update(owners_in(connection, model, [id_ for id_ in ids if id_ not in claimed]))
    return holders


def release_ids(connection: Connection, model: str, ids: Sequence[str], instance_id: int) -> None:
    """Take these ids of `model` from the instance again (those it holds)."""
    connection.execute(
        delete(instance_ids).where(
            instance_ids.c.model == model,
            instance_ids.c.id_text.in_(list(ids)),
            instance_ids.c.instance_id == instance_id,
        )
    )


def delete_instance(connection: Connection, instance_id: int) -> None:
    """Delete the instance and its ids."""
    connection.execute(delete(instance_ids).where(instance_ids.c.instance_id == instance_id))
    connection.execute(delete(instances).where(instances.c.id == instance_id))


def relate(connection: Connection, pairs: Sequence[Relationship], now_ms: int) -> None:
    """Keep these parent–child pairs (one statement); a pair kept already stays as it was."""
    if pairs:
        connection.execute(
            dialect.insert(connection, relationships).on_conflict_do_nothing(),
            [{**pair._asdict(), "created_ms": now_ms} for pair in pairs],
        )


def children_of(connection: Connection, model: str, ids: Sequence[str]) -> list[tuple[str, str]]:
    """(model, id) of each child of the `model` instance with these ids."""
    rows = connection.execute(
        select(relationships.c.child_model, relationships.c.child_id)
        .where(relationships.c.parent_model == model, relationships.c.parent_id.in_(list(ids)))
        .order_by(relationships.c.parent_id, relationships.c.child_model, relationships.c.child_id)
    )
    return [(child_model, child_id) for child_model, child_id in rows]


def parents_of(connection: Connection, model: str, ids: Sequence[str]) -> list[tuple[str, str]]:
    """(model, id) of each parent of the `model` instance with these ids, oldest pair first by id."""
    rows = connection.execute(
        select(relationships.c.parent_model, relationships.c.parent_id)
        .where(relationships.c.child_model == model, relationships.c.child_id.in_(list(ids)))
        .order_by(
            relationships.c.child_id,
            relationships.c.created_ms,
            relationships.c.parent_model,
            relationships.c.parent_id,
        )
    )
    return [(parent_model, parent_id) for parent_model, parent_id in rows]


def memberships(connection: Connection, model: str) -> list[tuple[str, str]]:
    """Who counts toward each instance of `model` when a funnel aggregates by it: (id, the group's primary
    id) for every id of every instance a relationship names as a child of a `model` instance (whichever
    side's identify stored the pair), and for the group's own ids. A pair naming an instance that does not
    exist (yet) contributes nothing; a child of two groups is in both. Sorted, without repeats."""
    group_ids, group = instance_ids.alias("group_ids"), instances.alias("group_")
    child_ids, member_ids = instance_ids.alias("child_ids"), instance_ids.alias("member_ids")
    children = (
        select(member_ids.c.id_text, group.c.primary_id)
        .select_from(relationships)
        .join(
            group_ids,
            (group_ids.c.model == relationships.c.parent_model)
            & (group_ids.c.id_text == relationships.c.parent_id),
        )
        .join(group, group.c.id == group_ids.c.instance_id)
        .join(
            child_ids,
            (child_ids.c.model == relationships.c.child_model)
            & (child_ids.c.id_text == relationships.c.child_id),
        )
        .join(member_ids, member_ids.c.instance_id == child_ids.c.instance_id)
        .where(relationships.c.parent_model == model)
    )
    own = (
        select(instance_ids.c.id_text, instances.c.primary_id)
        .join_from(instance_ids, instances, instances.c.id == instance_ids.c.instance_id)
        .where(instances.c.model == model)
    )
    rows = connection.execute(children.union(own))
    return sorted((str(member), str(primary)) for member, primary in rows)


def memberships_generation(connection: Connection, model: str) -> str:
    """A stamp that changes whenever `memberships(model)` may have: the count and newest time of the
    model's parent relationships, and the count of ids and of instances with the newest update time (an
    identify that adds or moves ids updates its instance; a deletion changes a count). Cheap: counts and
    maxima, no join."""
    related = connection.execute(
        select(func.count(), func.max(relationships.c.created_ms)).where(
            relationships.c.parent_model == model
        )
    ).one()
    ids = connection.execute(select(func.count()).select_from(instance_ids)).scalar_one()
    known = connection.execute(select(func.count(), func.max(instances.c.updated_ms))).one()
    return f"{related[0]}:{related[1] or 0}:{ids}:{known[0]}:{known[1] or 0}"
