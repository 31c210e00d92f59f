"""Model instances and their ids: `identify` creates or updates one, `choose` picks the one an event names.

Several ids may name one instance (a numeric id and an email). Within a model an id names at most one
instance: identify with ids that match one instance updates it and adds the new ids; ids that match two
different instances are a conflict (`IdentityConflict`), reported rather than guessed at. Properties merge
key by key, last write wins. Relationships are stored by id, so they may name instances that do not exist
yet and pair up when those appear. The rows are `funnels.store.identity`'s; this module holds the rules.

Anyone with the events:write key (the Segment write key, shipped in browser JavaScript) can identify, so an
instance is capped: its properties per identify, its merged properties, its number of ids
(`IdentifyRefused`, checked before anything is written). What reads an instance can then rely on sizes
that do not grow with what was sent to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from funnels.store import identity as store
from funnels.store.identity import Instance, Owners, Relationship
from funnels.store.state import Connection
from funnels.types import JSONDict

MAX_IDENTIFY_PROPERTIES_BYTES = 32 * 1024  # one identify's properties, as compact JSON
MAX_INSTANCE_PROPERTIES_BYTES = 64 * 1024  # an instance's merged properties, as compact JSON
MAX_INSTANCE_IDS = 100  # ids naming one instance


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

    `IdentifyRefused` when the identify would take the instance over a cap, `IdentityConflict` when its ids
    name different instances: either leaves nothing of it written.

    The ids are inserted with ON CONFLICT DO NOTHING and who holds them read back, so an identify that a
    concurrent one (another writer) beat to a new id ends as if it had come second: it updates the
    instance that got the id first, or is a conflict if its ids now name several."""
    properties = orjson.dumps(data.properties)
    _check_size(
        "properties", len(properties), MAX_IDENTIFY_PROPERTIES_BYTES, "properties of one identify", " bytes"
    )
    _check_size("ids", len(set(data.ids)), MAX_INSTANCE_IDS, "ids of one identify")
    ids = list(dict.fromkeys(data.ids))
    holders = store.owners_in(connection, data.model, ids)
    created = not holders
    if created:
        instance_id = store.create_instance(
            connection, data.model, data.ids[0], data.display_name, properties.decode(), now_ms
        )
        holders = store.claim_ids(connection, data.model, ids, instance_id, 0)
        if any(holder != instance_id for holder in holders.values()):  # beaten to an id: update instead
            store.delete_instance(connection, instance_id)
            holders = {id_: holder for id_, holder in holders.items() if holder != instance_id}
            created = False
    if not created:
        instance_id = _update(connection, data, ids, holders, now_ms)
    instance = store.load_instances(connection, [instance_id])[instance_id]
    pairs: list[Relationship] = []
    if data.child_model:  # given whenever there are child ids (validated)
        pairs += [
            Relationship(data.model, instance.primary_id, data.child_model, id_) for id_ in data.child_ids
        ]
    if data.parent_model:
        pairs += [
            Relationship(data.parent_model, id_, data.model, instance.primary_id) for id_ in data.parent_ids
        ]
    store.relate(connection, pairs, now_ms)
    return instance, created


def _update(
    connection: Connection, data: Identify, ids: list[str], holders: dict[str, int], now_ms: int
) -> int:
    """Update the one instance that `holders` (id → instance id) name with the identify; returns its id."""
    found = set(holders.values())
    if len(found) > 1:
        raise _conflict(connection, data.model, holders)
    (instance_id,) = found
    current = store.load_instances(connection, [instance_id])[instance_id]
    new_ids = [id_ for id_ in ids if id_ not in holders]
    if new_ids:
        held = store.count_ids(connection, instance_id)  # its ids' places are 0 … held - 1
        _check_size("ids", held + len(new_ids), MAX_INSTANCE_IDS, "ids of the instance with these")
    merged: bytes | None = None
    if data.properties:
        merged = orjson.dumps({**current.properties, **data.properties})
        _check_size(
            "properties",
            len(merged),
            MAX_INSTANCE_PROPERTIES_BYTES,
            "merged properties of the instance",
            " bytes",
        )
    if new_ids:
        claimed = store.claim_ids(connection, data.model, new_ids, instance_id, held)
        taken = {id_: holder for id_, holder in claimed.items() if holder != instance_id}
        if taken:  # a concurrent identify gave some of them to another instance first
            store.release_ids(
                connection, data.model, [id_ for id_ in claimed if id_ not in taken], instance_id
            )
            raise _conflict(connection, data.model, {**holders, **taken})
    store.update_instance(
        connection, instance_id, now_ms, merged.decode() if merged else None, data.display_name
    )
    return instance_id


def _conflict(connection: Connection, model: str, holders: dict[str, int]) -> IdentityConflict:
    known = store.load_instances(connection, set(holders.values()))
    return IdentityConflict(model, {id_: known[holder].primary_id for id_, holder in holders.items()})


def related(
    connection: Connection, instance: Instance, ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Parents and children by id, each with `exists` telling whether that instance has appeared yet."""

    def entry(model: str, id_text: str) -> dict[str, Any]:
        other = store.instance_by_id(connection, model, id_text)
        return {"model": model, "id": other.primary_id if other else id_text, "exists": other is not None}

    return {
        "children": [entry(*child) for child in store.children_of(connection, instance.model, ids)],
        "parents": [entry(*parent) for parent in store.parents_of(connection, instance.model, ids)],
    }
