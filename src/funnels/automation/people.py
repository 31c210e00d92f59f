"""One model instance as a person sees it: ids, properties, relationships, funnel progress, timeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from funnels.automation.deliveries import iso, job_rows
from funnels.automation.identity import MAX_INSTANCE_IDS, related
from funnels.automation.steprule import Plan, held_out, job_key
from funnels.events import parse_timestamp
from funnels.store import outbox, subscriptions
from funnels.store.events import EventStore
from funnels.store.identity import (
    Instance,
    ids_of,
    instance_by_id,
    instances_named,
    instances_with_ids,
    search_instances,
)
from funnels.store.progress import satisfied_by
from funnels.store.state import Connection


def opted_out(connection: Connection, instance_id: int) -> list[dict[str, Any]]:
    """What the instance has unsubscribed from (`topic`: `email`, `sms`, `email:<topic>`…), oldest first."""
    return [
        {"topic": out.topic, "at": iso(out.unsubscribed_ms), "source": out.source}
        for out in subscriptions.opt_outs(connection, [instance_id]).get(instance_id, [])
    ]


def set_subscribed(
    connection: Connection, instance_id: int, topic: str, subscribed: bool, now_ms: int
) -> None:
    """Subscribe the instance to `topic` again, or unsubscribe it (source `api`)."""
    if subscribed:
        subscriptions.resubscribe(connection, instance_id, topic)
    else:
        subscriptions.unsubscribe(connection, instance_id, topic, now_ms, "api")


def progress(connection: Connection, plan: Plan | None, instance: Instance) -> list[dict[str, Any]]:
    """Each funnel of the instance's model with which steps are satisfied, when, and by which event, and
    the instance's group in each of its actions with a holdout (held out or treated: the draw is a pure
    function of the job's key, so it is known before the job exists)."""
    satisfied = {(row.funnel_id, row.step_index): row for row in satisfied_by(connection, instance.id)}
    funnels = plan.funnels_by_model.get(instance.model, ()) if plan else ()
    result = []
    for funnel in funnels:
        steps = []
        for index, step in enumerate(funnel.steps):
            row = satisfied.get((funnel.id, index))
            steps.append(
                {
                    "step": index + 1,
                    "event": step.event,
                    "satisfied_at": iso(row.satisfied_ms) if row else None,
                    "event_id": row.event_id if row else None,
                    "event_at": iso(row.event_ts_ms) if row else None,
                }
            )
        level = sum(1 for step in steps if step["satisfied_at"])
        holdouts = [
            {
                "step": index + 1,
                "action": action_index + 1,
                "type": action.type,
                "holdout_percent": action.holdout_bp / 100,
                "group": "held_out"
                if held_out(
                    job_key(funnel.id, instance.model, instance.primary_id, index, action_index),
                    action.holdout_bp,
                )
                else "treated",
            }
            for index, step in enumerate(funnel.steps)
            for action_index, action in enumerate(step.actions)
            if action.holdout_bp
        ]
        result.append(
            {
                "id": funnel.id,
                "level": level,
                "completed": level == len(steps),
                "steps": steps,
                "holdouts": holdouts,
            }
        )
    return result


@dataclass(frozen=True)
class Cursor:
    """A timeline position: items sort by (time, rank, id), newest first; a page holds what sorts after."""

    ms: int
    rank: int  # actions (1) sort before events (0) at the same millisecond; a plain time is rank -1
    id: str = ""

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """`next_before` of a previous page (`ms:kind:id`), or a time (ISO 8601 or epoch ms)."""
        ms, _, rest = text.partition(":")
        kind, _, id_ = rest.partition(":")
        if ms.isdigit() and kind in RANKS and id_:
            if kind == "action" and not (id_.isdigit() and int(id_) <= MAX_JOB_ID):
                raise ValueError("not a valid page position")
            return cls(parse_timestamp(int(ms)), RANKS[kind], id_)
        return cls(parse_timestamp(text), -1)

    def bound(self, rank: int) -> tuple[str, bool]:
        """For items of `rank`: `<=` or `<` on time, and whether same-time items need `id <` too."""
        if self.rank > rank:
            return "<=", False
        return "<", self.rank == rank


RANKS = {"event": 0, "action": 1}
MAX_JOB_ID = 2**63 - 1
START = Cursor(2**62, 2)


def timeline(
    connection: Connection,
    events: EventStore,
    instance: Instance | None,
    ids: list[str],
    cursor: Cursor | None,
    limit: int,
) -> dict[str, Any]:
    """Events (from the event store, by any of `ids`) and the instance's actions (none without one),
    newest first, one page."""
    cursor = cursor or START
    op, tie = cursor.bound(RANKS["event"])
    event_rows = events.events_before(ids, cursor.ms, op == "<=", cursor.id if tie else None, limit)
    op, tie = cursor.bound(RANKS["action"])
    action_rows = (
        outbox.timeline_jobs(
            connection,
            instance.id,
            cursor.ms,
            int(cursor.id) if tie else None,
            inclusive=op == "<=",
            limit=limit,
        )
        if instance is not None
        else []
    )
    items: list[tuple[tuple[int, int, Any], dict[str, Any]]] = [
        (
            (int(row["ts_ms"]), RANKS["event"], row["event_id"]),
            {
                "kind": "event",
                "at": iso(int(row["ts_ms"])),
                "id": row["event_id"],
                "type": row["type"],
                "event": row["event"],
                "properties": orjson.loads(row["properties"] or "{}"),
            },
        )
        for row in event_rows
    ]
    for row, job in zip(action_rows, job_rows(connection, action_rows), strict=True):
        items.append(
            (
                (int(row.created_ms), RANKS["action"], int(row.id)),
                {"kind": "action", "at": iso(row.created_ms), **job},
            )
        )
    items.sort(key=lambda item: item[0], reverse=True)
    page = items[:limit]
    more = len(items) > limit or len(event_rows) == limit or len(action_rows) == limit
    last = page[-1][0] if page else None
    return {
        "items": [item for _, item in page],
        "next_before": f"{last[0]}:{'action' if last[1] else 'event'}:{last[2]}" if last and more else None,
    }


def find(connection: Connection, events: EventStore, model: str, id_text: str) -> Instance | None:
    """The instance one of whose ids is `id_text`, else the instance of a user `id_text` links to in the
    event store (an anonymous id identified as that user, an aliased id; nearest link first), else None."""
    found = instance_by_id(connection, model, id_text)
    if found is not None:
        return found
    for user in events.linked_users(id_text):
        found = instance_by_id(connection, model, user)
        if found is not None:
            return found
    return None


def describe(
    connection: Connection,
    events: EventStore,
    plan: Plan | None,
    instance: Instance,
    cursor: Cursor | None,
    limit: int,
) -> dict[str, Any]:
    # At most MAX_INSTANCE_IDS: an instance identified before the cap existed may hold more, and what
    # reads them stays bounded.
    ids = ids_of(connection, instance.id, MAX_INSTANCE_IDS)
    # The anonymous (and aliased) ids events link to the instance's ids: their events are its timeline's too.
    linked = [key for key in events.keys_linked_to(ids, MAX_INSTANCE_IDS) if key not in ids]
    return {
        "model": instance.model,
        "id": instance.primary_id,
        "ids": ids,
        "linked_ids": linked,
        "displayName": instance.display_name,
        "properties": instance.properties,
        "created_at": iso(instance.created_ms),
        "updated_at": iso(instance.updated_ms),
        **related(connection, instance, ids),
        "funnels": progress(connection, plan, instance),
        "unsubscribed": opted_out(connection, instance.id),
        "timeline": timeline(connection, events, instance, ids + linked, cursor, limit),
    }


LISTED_IDS = 5  # ids shown per instance in a list (its own page has them all)


def parse_list_cursor(text: str) -> int:
    """A list page's `next_cursor`: an instance key in decimal, 1 … 2⁶³−1."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_JOB_ID:
        raise ValueError("not a page position")
    return int(text)


def search(
    connection: Connection, model: str, text: str | None, cursor: int | None, limit: int
) -> dict[str, Any]:
    """One page of `model`'s instances, newest first, those one of whose ids or whose display name contains
    `text` when given: each with its first ids; `next_cursor` (null on the last page) for the next."""
    found = search_instances(connection, model, text, cursor, limit + 1)
    page = found[:limit]
    with_ids = instances_with_ids(connection, [instance.id for instance in page])
    return {
        "data": [
            {
                "model": instance.model,
                "id": instance.primary_id,
                "ids": with_ids[instance.id][1][:LISTED_IDS] if instance.id in with_ids else [],
                "id_count": len(with_ids[instance.id][1]) if instance.id in with_ids else 0,
                "displayName": instance.display_name,
                "created_at": iso(instance.created_ms),
                "updated_at": iso(instance.updated_ms),
            }
            for instance in page
        ],
        "next_cursor": str(page[-1].id) if len(found) > limit else None,
    }


def describe_user(
    connection: Connection, events: EventStore, user_key: str, cursor: Cursor | None, limit: int
) -> dict[str, Any] | None:
    """Any user key as a person, identified or not: the person it is counted as in stitched funnels (the
    user it links to, or itself), the person's keys (every id linked to them), the model instances those
    keys name, and the events of all of them, newest first. None when nothing is known of the key (no
    event, no link)."""
    linked = events.linked_users(user_key)
    person = linked[-1] if linked else user_key
    # Two steps back, as stitching follows two links forward: ids linked to the person, and to those.
    direct = [key for key in events.keys_linked_to([person], MAX_INSTANCE_IDS) if key != person]
    further = [
        key for key in events.keys_linked_to(direct, MAX_INSTANCE_IDS) if key != person and key not in direct
    ]
    others = [*direct, *further][:MAX_INSTANCE_IDS]
    keys = [person, *others]
    page = timeline(connection, events, None, keys, cursor, limit)
    if not linked and not others and not page["items"] and cursor is None:
        return None
    owners, instances = instances_named(connection, keys)
    named = sorted(
        {(instances[ref].model, instances[ref].primary_id) for refs in owners.values() for _, ref in refs}
    )
    return {
        "user_key": user_key,
        "person": person,
        "keys": keys,
        "instances": [{"model": model, "id": id_} for model, id_ in named],
        "timeline": page,
    }
