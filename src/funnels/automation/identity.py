"""Model instances and their ids: `identify` creates or updates one, `choose` picks the one an event names.

Several ids may name one instance (a numeric id and an email). Within a model an id names at most one
instance: identify with ids that match one instance updates it and adds the new ids; ids that match two
different instances are a conflict (`IdentityConflict`), reported rather than guessed at. Properties merge
key by key, last write wins. Relationships are stored by id, so they may name instances that do not exist
yet and pair up when those appear.

Anyone with the events:write key (the Segment write key, shipped in browser JavaScript) can identify, so an
instance is capped: its properties per identify, its merged properties, its number of ids
(`IdentifyRefused`, checked before anything is written). What reads an instance can then rely on sizes
that do not grow with what was sent to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, func, insert, literal_column, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from funnels.store.state import chunks, instance_ids, instances, relationships
from funnels.types import JSONDict

MAX_IDENTIFY_PROPERTIES_BYTES = 32 * 1024  # one identify's properties, as compact JSON
MAX_INSTANCE_PROPERTIES_BYTES = 64 * 1024  # an instance's merged properties, as compact JSON
MAX_INSTANCE_IDS = 100  # ids naming one instance


@dataclass(frozen=True)
class Instance:
    id: int
    model: str
    primary_id: str
    display_name: str | None
    properties: JSONDict

    def ref(self) -> dict[str, str]:
        return {"model": self.model, "id": self.primary_id}


@dataclass(frozen=True)
class Identify:
    """One identify call, already validated."""

    model: str
    ids: tuple[str, ...]
    display_name: str | None = None
    properties: JSONDict = field(default_factory=dict)
    child_model: str | None = None
    child_ids: tuple[str, ...] = ()
    parent_model: str | None = None
    parent_ids: tuple[str, ...] = ()


class IdentityConflict(Exception):
    """The ids of one identify call name two or more different instances."""

    def __init__(self, model: str, owners: dict[str, str]) -> None:
        self.model = model
        self.owners = owners  # id → the primary id of the instance that holds it
        names = ", ".join(f"{id_!r} (instance {owner!r})" for id_, owner in owners.items())
        super().__init__(f"these ids already name different {model} instances: {names}")


class IdentifyRefused(Exception):
    """An identify over a cap (`field` is `properties` or `ids`); nothing of it was written."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def _instance(row: Any) -> Instance:
    return Instance(
        id=row.id,
        model=row.model,
        primary_id=row.primary_id,
        display_name=row.display_name,
        properties=orjson.loads(row.properties),
    )


# Built once: these run for every ingest batch and every claimed batch of jobs.
_INSTANCES = select(instances).where(instances.c.id.in_(bindparam("keys", expanding=True)))
_OWNERS = select(instance_ids.c.id_text, instance_ids.c.model, instance_ids.c.instance_id).where(
    instance_ids.c.id_text.in_(bindparam("ids", expanding=True))
)


def load_instances(connection: Connection, ids: Iterable[int]) -> dict[int, Instance]:
    found = {}
    for chunk in chunks(ids):
        for row in connection.execute(_INSTANCES, {"keys": chunk}):
            found[row.id] = _instance(row)
    return found


Owners = dict[str, list[tuple[str, int]]]  # id → (model, instance id) of every model where it names one


def owners_of(connection: Connection, ids: Iterable[str]) -> Owners:
    """Which instances, of which models, these ids name (one query per 500 ids)."""
    owners: Owners = {}
    for chunk in chunks(set(ids)):
        for id_text, model, instance_id in connection.execute(_OWNERS, {"ids": chunk}):
            owners.setdefault(id_text, []).append((model, instance_id))
    return owners


def choose(owners: Owners, ids: Sequence[str], model: str | None, models: Sequence[str]) -> int | None:
    """The instance an event names: with `model`, that model's; without, the first declared model (in
    `models` order) with a matching id. Among several matches, the earliest id in `ids` wins."""
    rank = {name: index for index, name in enumerate(models)}
    best: tuple[int, int, int] | None = None
    for id_rank, id_ in enumerate(ids):
        for owner_model, instance_id in owners.get(id_, ()):
            if owner_model in rank and (model is None or owner_model == model):
                candidate = (rank[owner_model], id_rank, instance_id)
                best = candidate if best is None or candidate < best else best
    return None if best is None else best[2]


def _check_size(field: str, size: int, limit: int, what: str, unit: str = "") -> None:
    if size > limit:
        raise IdentifyRefused(
            field, f"{what}: {size:,}{unit}, over the limit of {limit:,}{unit}; nothing was changed"
        )


def identify(connection: Connection, data: Identify, now_ms: int) -> tuple[Instance, bool]:
    """Create or update the instance these ids name; returns it and whether it was created.

    `IdentifyRefused` when the identify would take the instance over a cap, before anything is written."""
    properties = orjson.dumps(data.properties)
    _check_size(
        "properties", len(properties), MAX_IDENTIFY_PROPERTIES_BYTES, "properties of one identify", " bytes"
    )
    _check_size("ids", len(set(data.ids)), MAX_INSTANCE_IDS, "ids of one identify")
    owners = connection.execute(
        select(instance_ids.c.id_text, instance_ids.c.instance_id).where(
            instance_ids.c.model == data.model, instance_ids.c.id_text.in_(data.ids)
        )
    ).all()
    found = {row.instance_id for row in owners}
    if len(found) > 1:
        known = load_instances(connection, list(found))
        raise IdentityConflict(data.model, {row.id_text: known[row.instance_id].primary_id for row in owners})
    created = not found
    known_ids = {row.id_text for row in owners}
    new_ids = [id_ for id_ in dict.fromkeys(data.ids) if id_ not in known_ids]
    if created:
        instance_id: int = connection.execute(
            insert(instances).values(
                model=data.model,
                primary_id=data.ids[0],
                display_name=data.display_name,
                properties=properties.decode(),
                created_ms=now_ms,
                updated_ms=now_ms,
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    else:
        (instance_id,) = found
        current = load_instances(connection, [instance_id])[instance_id]
        values: dict[str, Any] = {"updated_ms": now_ms}
        if new_ids:
            held = connection.execute(
                select(func.count()).where(instance_ids.c.instance_id == instance_id)
            ).scalar_one()
            _check_size("ids", held + len(new_ids), MAX_INSTANCE_IDS, "ids of the instance with these")
        if data.properties:
            merged = orjson.dumps({**current.properties, **data.properties})
            _check_size(
                "properties",
                len(merged),
                MAX_INSTANCE_PROPERTIES_BYTES,
                "merged properties of the instance",
                " bytes",
            )
            values["properties"] = merged.decode()
        if data.display_name is not None:
            values["display_name"] = data.display_name
        connection.execute(update(instances).where(instances.c.id == instance_id).values(**values))
    if new_ids:
        connection.execute(
            insert(instance_ids),
            [{"model": data.model, "id_text": id_, "instance_id": instance_id} for id_ in new_ids],
        )
    instance = load_instances(connection, [instance_id])[instance_id]
    pairs: list[tuple[str | None, str, str | None, str]] = [
        (data.model, instance.primary_id, data.child_model, child) for child in data.child_ids
    ]
    pairs += [(data.parent_model, parent, data.model, instance.primary_id) for parent in data.parent_ids]
    if pairs:
        connection.execute(
            sqlite_insert(relationships).on_conflict_do_nothing(),
            [
                {
                    "parent_model": parent_model,
                    "parent_id": parent_id,
                    "child_model": child_model,
                    "child_id": child_id,
                    "created_ms": now_ms,
                }
                for parent_model, parent_id, child_model, child_id in pairs
            ],
        )
    return instance, created


def instance_by_id(connection: Connection, model: str, id_text: str) -> Instance | None:
    row = connection.execute(
        select(instance_ids.c.instance_id).where(
            instance_ids.c.model == model, instance_ids.c.id_text == id_text
        )
    ).first()
    return None if row is None else load_instances(connection, [row.instance_id]).get(row.instance_id)


def ids_of(connection: Connection, instance_id: int) -> list[str]:
    """The instance's ids in the order they were added (primary id first), at most `MAX_INSTANCE_IDS`: an
    instance identified before the cap existed may hold more, and what reads them stays bounded."""
    return list(
        connection.execute(
            select(instance_ids.c.id_text)
            .where(instance_ids.c.instance_id == instance_id)
            .order_by(literal_column("instance_ids.rowid"))
            .limit(MAX_INSTANCE_IDS)
        ).scalars()
    )


def related(
    connection: Connection, instance: Instance, ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Parents and children by id, each with `exists` telling whether that instance has appeared yet."""
    as_parent = connection.execute(
        select(relationships).where(
            relationships.c.parent_model == instance.model, relationships.c.parent_id.in_(list(ids))
        )
    ).all()
    as_child = connection.execute(
        select(relationships).where(
            relationships.c.child_model == instance.model, relationships.c.child_id.in_(list(ids))
        )
    ).all()

    def entry(model: str, id_text: str) -> dict[str, Any]:
        other = instance_by_id(connection, model, id_text)
        return {"model": model, "id": other.primary_id if other else id_text, "exists": other is not None}

    return {
        "children": [entry(row.child_model, row.child_id) for row in as_parent],
        "parents": [entry(row.parent_model, row.parent_id) for row in as_child],
    }
