"""Events enough for a funnel that runs a while (the long-query tests: concurrency, time limit,
cancellation), made fast: ClickHouse generates them itself (`INSERT … SELECT … FROM numbers(N)`)."""

from __future__ import annotations

import json

from funnels.store.events import EventStore

START_MS = 1_775_001_600_000  # 2026-04-01T00:00:00Z
STEPS = json.dumps(
    [
        {"type": "track", "event": "view", "name": "view::0", "filters": []},
        {"type": "track", "event": "cart", "name": "cart::1", "filters": []},
        {"type": "track", "event": "buy", "name": "buy::2", "filters": []},
    ]
)
# The funnel's query string: stitched (the default), broken down by a JSON property (read from every
# event's JSON), over the month the events span.
PARAMS = {"date_from": "2026-04-01", "date_to": "2026-04-30", "steps": STEPS, "breakdown": "properties.plan"}

_COLUMNS = ("event_id", "type", "event", "user_key", "user_id", "ts", "received_at", "properties")
# Event i is user i // per_user's; a user's events come a second apart, in the order view, cart, buy, …,
# the users spread over 29 days; the plan is one of 13.
_SELECT = (
    "SELECT concat('e', toString(number)), 'track', ['view', 'cart', 'buy'][number % 3 + 1], "
    "concat('u', toString(intDiv(number, {per_user:UInt64}))), concat('u', toString(intDiv(number, "
    "{per_user:UInt64}))), fromUnixTimestamp64Milli(toInt64({start:Int64} + intDiv(number, {per_user:UInt64}) "
    "* {spacing:Int64} + number % {per_user:UInt64} * 1000), 'UTC') AS at, at, "
    "concat('{\"plan\":\"p', toString(intDiv(number, {per_user:UInt64}) % 13), '\"}') FROM numbers({n:UInt64})"
)


def add_events(store: EventStore, users: int, per_user: int = 10) -> int:
    """`users` × `per_user` events into `store` (see `_SELECT`); returns how many."""
    n = users * per_user
    spacing = 29 * 86_400_000 // users
    params = {"per_user": per_user, "start": START_MS, "spacing": spacing, "n": n}
    store.insert_select(list(_COLUMNS), _SELECT, params, linking=False)
    return n
