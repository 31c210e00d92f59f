"""Named edge cases of the funnel semantics, each with its expected answer, run on BOTH implementations.

Every case states the expected `users` per response row (and medians, breakdown buckets or dropped-off users
where they are the point), checks the reference oracle and the SQL path against that, and checks that the
two responses are identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from funnels.analytics.query import FunnelQuery
from funnels.events import Event
from funnels.store.events import EventStore
from tests.analytics.conftest import DAY_MS, at, both, column, day, ev, funnel_query, load, step

T = at(0, 10 * 3_600_000)  # 2026-04-01T10:00:00Z
S = 1000  # one second in ms
PAGE, CONNECT, SWAP = step("event", "page"), step("track", "connect"), step("track", "swap")
ANY_TRACK = step("event", "track")


@dataclass(frozen=True)
class Case:
    name: str
    events: list[Event]
    query: FunnelQuery
    users: list[int]  # per response row (step-major, then breakdown rank)
    from_previous: list[float | None] | None = None  # median_seconds_from_previous per row
    from_start: list[float | None] | None = None
    breakdown: list[str] | None = None
    dropped_off: list[int | None] | None = None
    batches: int = 1  # inserts (events are inserted in the order listed)
    extra: dict[str, Any] = field(default_factory=dict)


def closed(*steps: dict[str, Any], window: int = 60, **params: Any) -> FunnelQuery:
    return funnel_query(list(steps), window_seconds=window, **params)


def opened(*steps: dict[str, Any], window: int = 60, **params: Any) -> FunnelQuery:
    return funnel_query(list(steps), window_seconds=window, funnel_type="open", **params)


def strict(*steps: dict[str, Any], window: int = 60, **params: Any) -> FunnelQuery:
    return funnel_query(list(steps), window_seconds=window, funnel_type="strict", **params)


def page(user: str, ts: int, **kw: Any) -> Event:
    return ev(user, ts, "page", **kw)


def track(user: str, ts: int, name: str, **kw: Any) -> Event:
    return ev(user, ts, "track", name, **kw)


CASES = [
    # --- the window edge ---
    Case(
        "window edge is inclusive: tk - t1 == window reaches",
        [page("u", T), track("u", T + 60 * S, "connect")],
        closed(PAGE, CONNECT),
        users=[1, 1],
        from_previous=[None, 60.0],
        from_start=[None, 60.0],
    ),
    Case(
        "window edge + 1 ms does not reach",
        [page("u", T), track("u", T + 60 * S + 1, "connect")],
        closed(PAGE, CONNECT),
        users=[1, 0],
        from_previous=[None, None],
    ),
    Case(
        "window is measured from step 1, not from the previous step",
        [page("u", T), track("u", T + 40 * S, "connect"), track("u", T + 61 * S, "swap")],
        closed(PAGE, CONNECT, SWAP),
        users=[1, 1, 0],
    ),
    Case(
        "a later step exactly at the window edge, 3 steps",
        [page("u", T), track("u", T + 40 * S, "connect"), track("u", T + 60 * S, "swap")],
        closed(PAGE, CONNECT, SWAP),
        users=[1, 1, 1],
        from_previous=[None, 40.0, 20.0],
        from_start=[None, 40.0, 60.0],
    ),
    # --- the date range ---
    Case(
        "step 1 on the day after date_to does not enter",
        [page("u", at(1, 0)), track("u", at(1, S), "connect"), page("control", T)],
        closed(PAGE, CONNECT),
        users=[1, 0],
    ),
    Case(
        "step 1 at the last millisecond of date_to enters",
        [page("u", at(0, DAY_MS - 1)), track("u", at(1, 5 * S), "connect")],
        closed(PAGE, CONNECT),
        users=[1, 1],
        from_previous=[None, 5.001],
    ),
    Case(
        "a later step after date_to within the window counts",
        [page("u", at(0, DAY_MS - 10 * S)), track("u", at(1, 50 * S), "connect")],
        closed(PAGE, CONNECT),
        users=[1, 1],
        from_start=[None, 60.0],
    ),
    Case(
        "a later step after date_to beyond the window does not",
        [page("u", at(0, DAY_MS - 10 * S)), track("u", at(1, 50 * S + 1), "connect")],
        closed(PAGE, CONNECT),
        users=[1, 0],
    ),
    Case(
        "step 1 before date_from does not enter",
        [page("u", at(0, -1)), track("u", at(0, S), "connect"), page("control", T)],
        closed(PAGE, CONNECT),
        users=[1, 0],
    ),
    Case(
        "step 1 at midnight of date_from enters",
        [page("u", at(0, 0)), track("u", at(0, S), "connect")],
        closed(PAGE, CONNECT),
        users=[1, 1],
    ),
    Case(
        "a multi-day range: step 1 on the last day enters",
        [page("u", at(2, 5 * S)), track("u", at(2, 6 * S), "connect"), page("v", at(3, 0))],
        closed(PAGE, CONNECT, date_from=day(0), date_to=day(2)),
        users=[1, 1],
    ),
    # --- chains: which start, which events ---
    Case(
        "a later start reaches further than an earlier one",
        [
            page("u", T),
            page("u", T + 100 * S),
            track("u", T + 130 * S, "connect"),
            track("u", T + 150 * S, "swap"),
        ],
        closed(PAGE, CONNECT, SWAP),
        users=[1, 1, 1],
        from_previous=[None, 30.0, 20.0],
        from_start=[None, 30.0, 50.0],
    ),
    Case(
        "an earlier start reaching step 2 loses to a later start reaching step 3",
        [
            page("u", T),
            track("u", T + 30 * S, "connect"),
            page("u", T + 40 * S),
            track("u", T + 50 * S, "connect"),
            track("u", T + 95 * S, "swap"),
        ],
        closed(PAGE, CONNECT, SWAP),
        users=[1, 1, 1],
        from_previous=[None, 10.0, 45.0],
        from_start=[None, 10.0, 55.0],
    ),
    Case(
        "steps out of order do not count (closed)",
        [track("u", T, "connect"), page("u", T + S)],
        closed(PAGE, CONNECT),
        users=[1, 0],
    ),
    Case(
        "same-millisecond ties chain up whatever the insertion order (exclusive steps)",
        [
            track("u", T, "swap", event_id="a1"),
            track("u", T, "connect", event_id="a2"),
            page("u", T, event_id="a3"),
        ],
        closed(PAGE, CONNECT, SWAP),
        users=[1, 1, 1],
        from_previous=[None, 0.0, 0.0],
        from_start=[None, 0.0, 0.0],
        batches=3,
    ),
    Case(
        "same-millisecond ties in reverse insertion order (overlapping steps)",
        [
            page("u", T, event_id="a1"),
            track("u", T, "connect", event_id="a2"),
            page("u", T, event_id="a3"),
        ][::-1],
        closed(PAGE, CONNECT, PAGE),
        users=[1, 1, 1],
        from_start=[None, 0.0, 0.0],
        batches=3,
    ),
    Case(
        "one page event cannot be both step 1 and step 3 of page → connect → page",
        [page("u", T), track("u", T + S, "connect")],
        closed(PAGE, CONNECT, PAGE),
        users=[1, 1, 0],
    ),
    Case(
        "page → connect → page completes with a second page view",
        [page("u", T), track("u", T + S, "connect"), page("u", T + 2 * S)],
        closed(PAGE, CONNECT, PAGE),
        users=[1, 1, 1],
        from_previous=[None, 1.0, 1.0],
    ),
    Case(
        "page → connect → page: the page before connect cannot be step 3",
        [page("u", T), page("u", T + S), track("u", T + 2 * S, "connect")],
        closed(PAGE, CONNECT, PAGE),
        users=[1, 1, 0],
        from_previous=[None, 1.0, None],  # the latest start (T + 1 s) reaches step 2
    ),
    Case(
        "an event matching two steps is used once (event/track then track/connect)",
        [track("u", T, "connect")],
        closed(ANY_TRACK, CONNECT),
        users=[1, 0],
    ),
    Case(
        "two same-millisecond connects satisfy event/track and track/connect",
        [track("u", T, "connect", event_id="b2"), track("u", T, "connect", event_id="b1")],
        closed(ANY_TRACK, CONNECT),
        users=[1, 1],
        batches=2,
    ),
    Case(
        "event/page matches every page view; page/home only its own name",
        [page("u", T, event="home"), page("v", T, event="pricing"), page("v", T + S, event="home")],
        closed(PAGE, step("page", "home")),
        users=[2, 1],
    ),
    Case(
        "a track step needs the event name; type and name both match",
        [ev("u", T, "transaction", "swap"), track("u", T + S, "swap"), track("v", T, "swap")],
        closed(step("transaction", "swap"), SWAP),
        users=[1, 1],
    ),
    Case(
        "repeated step connect → connect → connect needs three distinct events",
        [track("u", T, "connect"), track("u", T, "connect"), track("v", T, "connect")],
        closed(CONNECT, CONNECT, CONNECT),
        users=[2, 1, 0],
    ),
    Case(
        "five steps page → connect → page → connect → page (overlapping, closed)",
        [page("u", T + i * S) if i % 2 == 0 else track("u", T + i * S, "connect") for i in range(5)]
        + [page("v", T), track("v", T + S, "connect"), page("v", T + 2 * S)],
        closed(PAGE, CONNECT, PAGE, CONNECT, PAGE),
        users=[2, 2, 2, 1, 1],
        from_start=[None, 1.0, 2.0, 3.0, 4.0],
    ),
    Case(
        "ten steps, each its own event (closed)",
        [track("u", T + i * S, f"s{i}") for i in range(10)]
        + [track("v", T + i * S, f"s{i}") for i in range(9)],
        closed(*[step("track", f"s{i}") for i in range(10)]),
        users=[2] * 9 + [1],
        from_start=[None, *[float(i) for i in range(1, 10)]],
    ),
    Case(
        "ten identical steps need ten distinct events (closed)",
        [track("u", T + i * S, "connect") for i in range(10)]
        + [track("v", T + i * S, "connect") for i in range(9)],
        closed(*[CONNECT] * 10),
        users=[2] * 9 + [1],
        from_previous=[None, *[1.0] * 9],
    ),
    Case(
        "ten steps (open): any order, one event for several steps",
        [track("u", T + (9 - i) * S, f"s{i}") for i in range(10)]
        + [track("v", T, "s0"), track("v", T, "s2")],
        opened(*[step("track", f"s{i}") for i in range(9)], step("event", "track")),
        users=[2, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        dropped_off=[None, 1, 0, 0, 0, 0, 0, 0, 0, 0],
    ),
    # --- breakdown ---
    Case(
        "users without a breakdown value are '(none)'; first touch may be a non-step event",
        [
            page("u1", T, device="mobile"),
            page("u2", T, device="mobile"),
            track("u2", T + S, "connect"),
            page("u3", T),
            ev("u4", T - S, "identify", device="desktop"),
            page("u4", T, device="mobile"),
            track("u4", T + S, "connect"),
        ],
        closed(PAGE, CONNECT, breakdown="device"),
        users=[2, 1, 1, 1, 0, 1],
        breakdown=["mobile", "(none)", "desktop"] * 2,
        extra={"total": [4, 4, 4, 2, 2, 2]},
    ),
    Case(
        "first touch ignores events before date_from and empty values; same-ms ties take the smallest",
        [
            page("u1", at(0, -1), device="tablet"),
            page("u1", T),
            page("u1", T + S, device="mobile"),
            page("u2", T, device="mobile"),
            page("u2", T, device="desktop"),
        ],
        closed(PAGE, CONNECT, breakdown="device"),
        users=[1, 1, 0, 0],
        breakdown=["desktop", "mobile"] * 2,
    ),
    Case(
        "top-N keeps the N values with most step-1 users (ties alphabetical), the rest are 'Others'",
        [page(f"a{i}", T, utm_source="alpha") for i in range(3)]
        + [page(f"c{i}", T, utm_source="charlie") for i in range(2)]
        + [page(f"b{i}", T, utm_source="bravo") for i in range(2)]
        + [page("d", T, utm_source="delta"), track("d", T + S, "connect"), page("n", T)],
        closed(PAGE, CONNECT, breakdown="utm_source", breakdown_top_n=2),
        users=[3, 2, 4, 0, 0, 1],
        breakdown=["alpha", "bravo", "Others"] * 2,
        extra={"total": [9, 9, 9, 1, 1, 1], "conversion_from_start": [1.0, 1.0, 1.0, 0.0, 0.0, 0.25]},
    ),
    Case(
        "'Others' comes last even when it is bigger than the kept values",
        [page("a", T, utm_source="z")] + [page(f"x{i}", T, utm_source=f"s{i}") for i in range(3)],
        opened(PAGE, CONNECT, breakdown="utm_source", breakdown_top_n=1),
        users=[1, 3, 0, 0],
        breakdown=["s0", "Others"] * 2,
        dropped_off=[None, None, 1, 3],
    ),
    # --- open funnels ---
    Case(
        "open funnel: any order counts; stops at the first step never fired; dropped_off_users",
        [
            track("u1", T, "swap"),
            track("u1", T + 10 * S, "connect"),
            page("u1", T + 20 * S),
            page("u2", T),
            track("u2", T + S, "swap"),
            track("u3", T, "connect"),
            page("u4", T),
            track("u4", T + 5 * S, "connect"),
        ],
        opened(PAGE, CONNECT, SWAP),
        users=[3, 2, 1],
        dropped_off=[None, 1, 1],
        from_previous=[None, -2.5, -10.0],
        from_start=[None, -2.5, -20.0],
    ),
    Case(
        "open funnel: one event may count for several steps",
        [track("u", T, "connect")],
        opened(ANY_TRACK, CONNECT),
        users=[1, 1],
        dropped_off=[None, 0],
        from_start=[None, 0.0],
    ),
    Case(
        "open funnel: later steps count up to the window past date_to, not before date_from",
        [
            page("u", at(0, DAY_MS - S)),
            track("u", at(1, 59 * S), "connect"),
            page("v", T),
            track("v", at(0, -1), "connect"),
            page("w", T),
            track("w", at(1, 60 * S), "connect"),  # scan ends at 00:00:59.999 the next day
        ],
        opened(PAGE, CONNECT),
        users=[3, 1],
        dropped_off=[None, 2],
    ),
    Case(
        "open funnel: step 1's first time is within the date range; later ones anywhere in the scan",
        [page("u", T), page("u", at(1, S)), track("u", T - 5 * S, "connect")],
        opened(PAGE, CONNECT),
        users=[1, 1],
        from_previous=[None, -5.0],
    ),
    Case(
        "open funnel: a user whose only step-1 event is after date_to, in the window tail, does not enter",
        [page("u", at(1, 30 * S)), track("u", at(1, 40 * S), "connect"), page("control", T)],
        opened(PAGE, CONNECT),
        users=[1, 0],
        dropped_off=[None, 1],
    ),
    Case(
        "open funnel: nor when its later steps fired inside the date range",
        [
            track("u", T, "connect"),
            track("u", T + S, "swap"),
            page("u", at(1, 60 * S - 1)),  # the last millisecond of the scan
            page("control", T),
        ],
        opened(PAGE, CONNECT, SWAP),
        users=[1, 0, 0],
        dropped_off=[None, 1, 0],
    ),
    # --- filters ---
    Case(
        "numeric filters read JSON numbers and numeric strings; other values never match",
        [
            track("n1", T, "swap", props={"price": "100"}),
            track("n2", T, "swap", props={"price": "1e2"}),
            track("n3", T, "swap", props={"price": 150}),
            track("n4", T, "swap", props={"price": 100.5}),
            track("n5", T, "swap", props={"price": "abc"}),
            track("n6", T, "swap", props={"price": True}),
            track("n7", T, "swap"),
            track("n8", T, "swap", props={"price": "+100"}),
            track("n9", T, "swap", props={"price": 99}),
        ],
        closed(step("track", "swap", ("price", "gte", "100")), step("track", "never")),
        users=[4, 0],
    ),
    Case(
        "numeric filters on a standard column holding numeric text",
        [page("a", T, version="2.5"), page("b", T, version="10"), page("c", T, version="x"), page("d", T)],
        closed(step("event", "page", ("version", "gt", "2")), CONNECT),
        users=[2, 0],
    ),
    Case(
        "lt / lte at the boundary",
        [track(f"u{p}", T, "swap", props={"price": p}) for p in (9, 10, 11)],
        closed(step("track", "swap", ("price", "lte", "10"), ("price", "lt", "11")), CONNECT),
        users=[2, 0],
    ),
    Case(
        "in / notIn take |-separated values; notIn matches missing values",
        [
            track("e", T, "swap", props={"chain": "ethereum"}),
            track("b", T, "swap", props={"chain": "base"}),
            track("p", T, "swap", props={"chain": "polygon"}),
            track("m", T, "swap"),
            track("e", T + S, "connect", props={"chain": "ethereum"}),
            track("b", T + S, "connect", props={"chain": "base"}),
            track("p", T + S, "connect", props={"chain": "polygon"}),
            track("m", T + S, "connect"),
        ],
        closed(
            step("track", "swap", ("chain", "in", "ethereum|base")),
            step("track", "connect", ("chain", "notIn", "ethereum|polygon")),
        ),
        users=[2, 1],
    ),
    Case(
        "string operators see integers and booleans as JSON text, floats and objects as ''",
        [
            track("i", T, "swap", props={"v": 1}),
            track("t", T, "swap", props={"v": True}),
            track("f", T, "swap", props={"v": 1.0}),
            track("o", T, "swap", props={"v": {"a": 1}}),
            track("s", T, "swap", props={"v": "1"}),
        ],
        closed(step("track", "swap", ("v", "in", "1|true")), CONNECT),
        users=[3, 0],
    ),
    Case(
        "startsWith / endsWith / includes / equals / notEquals on columns and properties",
        [
            page("a", T, page_path="/swap/eth", props={"provider": "MetaMask"}),
            page("b", T, page_path="/swap", props={"provider": "Rabby"}),
            page("c", T, page_path="/earn/eth", props={"provider": "MetaMask"}),
            page("d", T, props={"provider": "MetaMask"}),
        ],
        closed(
            step(
                "event",
                "page",
                ("page_path", "startsWith", "/swap"),
                ("page_path", "endsWith", "eth"),
                ("provider", "includes", "Mask"),
                ("provider", "equals", "MetaMask"),
                ("page_path", "notEquals", "/earn/eth"),
            ),
            CONNECT,
        ),
        users=[1, 0],
    ),
    Case(
        "numeric text must be the whole value: '100\\n' and ' 100' are not numbers",
        [
            track("a", T, "swap", props={"price": "100"}),
            track("a", T + S, "connect", version="100"),
            track("b", T, "swap", props={"price": "100"}),
            track("b", T + S, "connect", version="100\n"),
            track("c", T, "swap", props={"price": "100\n"}),
            track("c", T + S, "connect", version="100"),
            track("d", T, "swap", props={"price": " 100"}),
            track("d", T + S, "connect", version="100"),
        ],
        closed(
            step("track", "swap", ("price", "gte", "100")),
            step("track", "connect", ("version", "lte", "100")),
        ),
        users=[2, 1],
    ),
    Case(
        "backslashes, quotes and control characters in values are matched literally",
        [
            track("a", T, "swap", props={"path": "C:\\tmp\\"}, utm_source="it's"),
            track("b", T, "swap", props={"path": "C:\tmp"}, utm_source="it's"),
            track("c", T, "swap", props={"path": "C:\\tmp\\x"}, utm_source="it\\'s"),
            track("a", T + S, "connect", props={"k\\ey": "tab\there"}),
        ],
        closed(
            step("track", "swap", ("path", "startsWith", "C:\\tmp\\"), ("utm_source", "in", "it's|x\\")),
            step("track", "connect", ("k\\ey", "equals", "tab\there")),
        ),
        users=[1, 1],
    ),
    Case(
        "a filter narrows one step only; the other step still matches",
        [page("u", T, device="desktop"), page("u", T + S, device="mobile"), track("u", T + 2 * S, "connect")],
        closed(step("event", "page", ("device", "equals", "mobile")), CONNECT),
        users=[1, 1],
        from_previous=[None, 1.0],
    ),
    # --- medians ---
    Case(
        "median of an even count is the mean of the two middle values",
        [page(f"u{i}", T) for i in range(4)]
        + [track(f"u{i}", T + d * S, "connect") for i, d in enumerate((1, 2, 3, 100))],
        closed(PAGE, CONNECT, window=1000),
        users=[4, 4],
        from_previous=[None, 2.5],
        from_start=[None, 2.5],
    ),
    Case(
        "median of an odd count is the middle value; medians are over users reaching the step",
        [page(f"u{i}", T) for i in range(4)]
        + [track(f"u{i}", T + d, "connect") for i, d in enumerate((1, 7, 1500))]
        + [track("u3", T + 2000 * S, "connect")],
        closed(PAGE, CONNECT, window=1000),
        users=[4, 3],
        from_previous=[None, 0.007],
    ),
    Case(
        "median path: the latest start among those reaching the furthest step",
        [page("u", T), page("u", T + 10 * S), track("u", T + 20 * S, "connect")],
        closed(PAGE, CONNECT),
        users=[1, 1],
        from_start=[None, 10.0],
    ),
    Case(
        "median path: a later start that reaches less is not chosen",
        [
            page("u", T),
            track("u", T + 5 * S, "connect"),
            page("u", T + 40 * S),
            track("u", T + 50 * S, "swap"),
        ],
        closed(PAGE, CONNECT, SWAP),
        users=[1, 1, 1],
        from_previous=[None, 5.0, 45.0],
        from_start=[None, 5.0, 50.0],
    ),
    Case(
        "median path: each later step at the earliest time possible",
        [
            page("u", T),
            track("u", T + 10 * S, "connect"),
            track("u", T + 20 * S, "connect"),
            track("u", T + 30 * S, "swap"),
        ],
        closed(PAGE, CONNECT, SWAP),
        users=[1, 1, 1],
        from_previous=[None, 10.0, 20.0],
        from_start=[None, 10.0, 30.0],
    ),
    Case(
        "ratios are rounded to 4 decimals; dropoff is null at step 1 and over zero users",
        [page(f"u{i}", T) for i in range(3)] + [track("u0", T + S, "connect")],
        closed(PAGE, CONNECT, SWAP, step("track", "refund")),
        users=[3, 1, 0, 0],
        extra={
            "conversion_from_start": [1.0, 0.3333, 0.0, 0.0],
            "conversion_from_previous": [None, 0.3333, 0.0, None],
            "dropoff_from_previous": [None, 0.6667, 1.0, None],
        },
    ),
    # --- strict order: each step the user's very next event ---
    Case(
        "strict: another event between two steps breaks the chain (closed would reach)",
        [page("u", T), track("u", T + S, "mint"), track("u", T + 2 * S, "connect")],
        strict(PAGE, CONNECT),
        users=[1, 0],
    ),
    Case(
        "strict: an event of a type no step mentions counts too",
        [page("u", T), ev("u", T + S, "identify"), track("u", T + 2 * S, "connect")],
        strict(PAGE, CONNECT),
        users=[1, 0],
    ),
    Case(
        "strict: a repeated step-1 event starts a new chain",
        [page("u", T), page("u", T + 10 * S), track("u", T + 15 * S, "connect")],
        strict(PAGE, CONNECT),
        users=[1, 1],
        from_previous=[None, 5.0],
    ),
    Case(
        "strict: the latest start that reaches furthest is the path",
        [
            page("u", T),
            track("u", T + S, "connect"),
            page("u", T + 2 * S),
            track("u", T + 4 * S, "connect"),
            track("u", T + 5 * S, "swap"),
        ],
        strict(PAGE, CONNECT, SWAP),
        users=[1, 1, 1],
        from_previous=[None, 2.0, 1.0],
        from_start=[None, 2.0, 3.0],
    ),
    Case(
        "strict: steps in one millisecond chain up in step order",
        [track("u", T, "connect"), page("u", T)],
        strict(PAGE, CONNECT),
        users=[1, 1],
        from_previous=[None, 0.0],
    ),
    Case(
        "strict: another event in the same millisecond as a step counts as before it",
        [page("u", T), track("u", T + S, "connect"), track("u", T + S, "mint")],
        strict(PAGE, CONNECT),
        users=[1, 0],
    ),
    Case(
        "strict: the window still applies",
        [page("u", T), track("u", T + 61 * S, "connect")],
        strict(PAGE, CONNECT),
        users=[1, 0],
    ),
    Case(
        "strict, stitched: an event under another key of the same person is in between",
        [
            page("", T, anonymous_id="a"),
            track("u", T + S, "mint"),
            track("", T + 2 * S, "connect", anonymous_id="a"),
            ev("u", T + 10 * S, "identify", anonymous_id="a"),
        ],
        strict(PAGE, CONNECT),
        users=[1, 0],
    ),
    Case(
        "strict, raw: the same events, each key on its own",
        [
            page("", T, anonymous_id="a"),
            track("u", T + S, "mint"),
            track("", T + 2 * S, "connect", anonymous_id="a"),
            ev("u", T + 10 * S, "identify", anonymous_id="a"),
        ],
        strict(PAGE, CONNECT, identity="raw"),
        users=[1, 1],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_edge_case(store: EventStore, case: Case) -> None:
    load(store, case.events, case.batches)
    sql, reference = both(store, case.query, case.events)
    for label, response in (("reference", reference), ("sql", sql)):
        assert column(response, "users") == case.users, label
        expected = {
            "median_seconds_from_previous": case.from_previous,
            "median_seconds_from_start": case.from_start,
            "breakdown": case.breakdown,
            "dropped_off_users": case.dropped_off,
            **case.extra,
        }
        for name, values in expected.items():
            if values is not None:
                assert column(response, name) == values, (label, name)
    assert sql["data"] == reference["data"]
