"""Helpers shared by the funnel analytics tests: terse event and query builders, and a loaded store.

chDB allows one open event store per process, so every test here uses the one `services` fixture's store
(`store`) and `load()` empties it (events and identity links) before inserting the next event set.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from typing import Any

import pytest

from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import FunnelQuery, parse_funnel_query
from funnels.analytics.reference import reference_funnel
from funnels.events import Event
from funnels.services import Services
from funnels.store.events import EventStore

BASE_DAY = date(2026, 4, 1)
BASE_MS = 1_775_001_600_000  # 2026-04-01T00:00:00Z
DAY_MS = 86_400_000

_ids = itertools.count()


def day(offset: int) -> str:
    """BASE_DAY + offset days, as YYYY-MM-DD."""
    return (BASE_DAY + timedelta(days=offset)).isoformat()


def at(day_offset: int = 0, ms: int = 0) -> int:
    """Epoch ms of BASE_DAY + day_offset days, plus ms."""
    return BASE_MS + day_offset * DAY_MS + ms


def ev(
    user: str,
    ts_ms: int,
    type_: str = "track",
    event: str | None = None,
    *,
    props: dict[str, Any] | None = None,
    event_id: str | None = None,
    anonymous_id: str = "",
    **columns: str,
) -> Event:
    """An event as stored; `event` defaults to the type (as for page/identify/...). `user` is the user id
    ("" for an anonymous event, whose user key is then `anonymous_id`)."""
    return Event(
        event_id=event_id or f"e{next(_ids):08d}",
        type=type_,
        event=event or type_,
        user_key=user or anonymous_id,
        user_id=user,
        anonymous_id=anonymous_id,
        ts_ms=ts_ms,
        received_ms=ts_ms,
        properties=dict(props or {}),
        columns={name: value for name, value in columns.items() if value},
    )


def step(type_: str, event: str, *filters: tuple[str, str, str], name: str | None = None) -> dict[str, Any]:
    """A raw step spec; filters as (operand, operator, value). `funnel_query` fills in missing names."""
    spec: dict[str, Any] = {"type": type_, "event": event}
    if name:
        spec["name"] = name
    if filters:
        spec["filters"] = [{"operand": o, "operator": op, "value": v} for o, op, v in filters]
    return spec


def funnel_query(
    steps: Sequence[dict[str, Any]],
    date_from: str = day(0),
    date_to: str | None = None,
    **params: Any,
) -> FunnelQuery:
    """A validated query (via `parse_funnel_query`, as the endpoint builds it); steps named `event::i`."""
    named = [{"name": f"{s['event']}::{i}", **s} for i, s in enumerate(steps)]
    raw = {"date_from": date_from, "date_to": date_to or date_from, "steps": named}
    raw |= {key: str(value) for key, value in params.items() if value is not None}
    return parse_funnel_query(raw)


def load(store: EventStore, events: Iterable[Event], batches: int = 1) -> None:
    """Replace the store's events with these, inserted in `batches` separate inserts (separate parts)."""
    events = list(events)
    store.truncate()
    size = max(1, -(-len(events) // max(1, batches)))
    for start in range(0, len(events), size):
        store.insert_events(events[start : start + size])


def users(response: dict[str, Any]) -> list[int]:
    """`users` per row (one row per step without a breakdown)."""
    return [row["users"] for row in response["data"]]


def column(response: dict[str, Any], name: str) -> list[Any]:
    return [row[name] for row in response["data"]]


def both(
    store: EventStore, query: FunnelQuery, events: Sequence[Event]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(SQL response, reference response) for these events; the store must already hold exactly them."""
    return run_funnel(store, query), reference_funnel(query, events)


@pytest.fixture
def store(services: Services) -> EventStore:
    store = services.events
    store.truncate()
    return store
