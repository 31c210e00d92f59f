"""What instances have unsubscribed from: opt-outs by topic (`email`, `sms`, or `email:<topic>`), in the
caller's transaction. No row means subscribed; unsubscribing again keeps the first time and source."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import orjson
from sqlalchemy import Connection, delete, select

from funnels.store import dialect
from funnels.store.state import chunks, instances, subscriptions


class OptOut(NamedTuple):
    topic: str
    unsubscribed_ms: int
    source: str  # api, import, link


def unsubscribe(connection: Connection, instance_id: int, topic: str, now_ms: int, source: str) -> bool:
    """Record the opt-out; False when the instance had already unsubscribed from `topic` (kept as it was)."""
    # RETURNING, not rowcount: a row comes back only when one was inserted, whatever the driver reports.
    statement = (
        dialect.insert(connection, subscriptions)
        .on_conflict_do_nothing()
        .returning(subscriptions.c.instance_id)
    )
    result = connection.execute(
        statement, {"instance_id": instance_id, "topic": topic, "unsubscribed_ms": now_ms, "source": source}
    )
    return result.first() is not None


def resubscribe(connection: Connection, instance_id: int, topic: str) -> None:
    connection.execute(
        delete(subscriptions).where(
            subscriptions.c.instance_id == instance_id, subscriptions.c.topic == topic
        )
    )


def opt_outs(connection: Connection, instance_ids: Iterable[int]) -> dict[int, list[OptOut]]:
    """Each of these instances' opt-outs (only those with any), oldest first."""
    found: dict[int, list[OptOut]] = {}
    for chunk in chunks(instance_ids):
        rows = connection.execute(
            select(subscriptions)
            .where(subscriptions.c.instance_id.in_(chunk))
            .order_by(subscriptions.c.unsubscribed_ms, subscriptions.c.topic)
        )
        for row in rows:
            found.setdefault(row.instance_id, []).append(OptOut(row.topic, row.unsubscribed_ms, row.source))
    return found


def instances_by_property(connection: Connection, model: str, key: str) -> dict[str, list[int]]:
    """The instances of `model` by the value of their property `key` (a string, trimmed and lowercased:
    how an address is matched), for matching a file of opt-outs to instances. Reads every instance of the
    model once."""
    found: dict[str, list[int]] = {}
    rows = connection.execute(
        select(instances.c.id, instances.c.properties)
        .where(instances.c.model == model)
        .order_by(instances.c.id)
    )
    for row in rows:
        try:
            value = orjson.loads(row.properties).get(key)
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if isinstance(value, str) and value.strip():
            found.setdefault(value.strip().lower(), []).append(row.id)
    return found
