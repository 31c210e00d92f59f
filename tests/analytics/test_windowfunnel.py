"""Closed funnels with exclusive steps agree with ClickHouse's own `windowFunnel` on random data.

When no event can match two steps, our closed funnel is exactly `windowFunnel(window)` over the scanned range
with step 1 restricted to the date range: count the users whose level is ≥ k and compare with `users` at
step k. The data (a few hundred users, seeded) has second-granularity timestamps with millisecond jitter, so
same-millisecond ties and exact window edges both occur.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import FunnelQuery
from funnels.events import Event
from funnels.store.events import EventStore
from tests.analytics.conftest import DAY_MS, at, day, ev, funnel_query, load, step

KINDS = [("page", "page"), ("page", "home"), ("track", "connect"), ("track", "swap"), ("transaction", "swap")]
KINDS += [("identify", "identify"), ("track", "other")]

# Exclusive step lists: no two steps match the same stored (type, event).
STEP_LISTS = {
    "page-connect-swap": [("event", "page"), ("track", "connect"), ("track", "swap")],
    "connect-home-tx-swap": [
        ("track", "connect"),
        ("page", "home"),
        ("transaction", "swap"),
        ("track", "swap"),
    ],
    "identify-page": [("event", "identify"), ("event", "page")],
    "five-steps": [
        ("page", "page"),
        ("track", "connect"),
        ("page", "home"),
        ("track", "swap"),
        ("event", "identify"),
    ],
}
QUERIES = [
    ("page-connect-swap", 0, 0, 1),
    ("page-connect-swap", 0, 1, 60),
    ("page-connect-swap", 1, 2, 3600),
    ("connect-home-tx-swap", 0, 2, 30),
    ("connect-home-tx-swap", 1, 1, 86_400),
    ("identify-page", 0, 0, 2),
    ("identify-page", 0, 3, 1_209_600),
    ("five-steps", 0, 1, 120),
    ("five-steps", 0, 2, 86_400),
]


def random_events(seed: int, users: int = 300) -> list[Event]:
    rng = random.Random(seed)
    events = []
    for user in range(users):
        # A session of a few minutes on some day, often just before midnight so it spills into the next day.
        session_day = rng.randint(-1, 3)
        session = rng.choice([rng.randrange(0, 86_000), rng.randrange(86_300, 86_400)])
        for _ in range(rng.randint(1, 12)):
            type_, event = rng.choice(KINDS)
            second = session + rng.choice([0, 0, 1, 1, 2, 2, 3, 5, 30, 60, 61, 120, 3600])
            ts = at(session_day, second * 1000 + rng.choice([0, 0, 0, 1, 999]))
            events.append(ev(f"u{user:03d}", ts, type_, event))
    rng.shuffle(events)
    return events


def window_funnel_levels(store: EventStore, query: FunnelQuery, kinds: list[tuple[str, str]]) -> Counter[int]:
    """Users per `windowFunnel` level (0 excluded), step conditions bound as parameters."""
    params: dict[str, object] = {
        "from": query.from_ms,
        "to_end": query.to_end_ms,
        "scan_end": query.scan_end_ms,
    }
    conditions = []
    for i, (type_, event) in enumerate(kinds):
        if type_ == "event":
            params[f"t{i}"] = event
            conditions.append(f"type = {{t{i}:String}}")
        else:
            params[f"t{i}"], params[f"e{i}"] = type_, event
            conditions.append(f"(type = {{t{i}:String}} AND event = {{e{i}:String}})")
    conditions[0] = f"({conditions[0]} AND ts <= fromUnixTimestamp64Milli({{to_end:Int64}}, 'UTC'))"
    sql = (
        f"SELECT level, count() FROM (SELECT user_key, windowFunnel({query.window_ms})"
        f"(toUInt64(toUnixTimestamp64Milli(ts)), {', '.join(conditions)}) AS level FROM events "
        "WHERE ts >= fromUnixTimestamp64Milli({from:Int64}, 'UTC') "
        "AND ts <= fromUnixTimestamp64Milli({scan_end:Int64}, 'UTC') GROUP BY user_key) "
        "WHERE level > 0 GROUP BY level"
    )
    return Counter({int(level): int(count) for level, count in store.query(sql, params).rows})


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize(("steps", "start", "span", "window"), QUERIES)
def test_closed_exclusive_funnel_equals_window_funnel(
    store: EventStore, seed: int, steps: str, start: int, span: int, window: int
) -> None:
    kinds = STEP_LISTS[steps]
    query = funnel_query([step(t, e) for t, e in kinds], day(start), day(start + span), window_seconds=window)
    assert query.steps_exclusive
    events = random_events(seed)
    load(store, events, batches=3)
    levels = window_funnel_levels(store, query, kinds)
    expected = [sum(count for level, count in levels.items() if level >= k) for k in range(1, len(kinds) + 1)]
    assert expected[0] > 0 and expected[1] > 0  # the comparison is not vacuous
    response = run_funnel(store, query)
    assert [row["users"] for row in response["data"]] == expected


def test_data_has_ties_and_window_edges() -> None:
    """The generator really produces same-millisecond ties and events exactly one window apart."""
    events = random_events(1)
    by_user: dict[str, list[int]] = {}
    for event in events:
        by_user.setdefault(event.user_key, []).append(event.ts_ms)
    ties = sum(len(times) - len(set(times)) for times in by_user.values())
    one_second_apart = sum(1 for times in by_user.values() for a in times for b in times if b - a == 1000)
    across_midnight = sum(1 for e in events if (e.ts_ms - at(0)) % DAY_MS < 120_000)
    assert ties > 50 and one_second_apart > 50 and across_midnight > 100
