"""A plain-Python reference implementation of the funnel semantics: small, obviously correct, slow.

It is the test oracle for the SQL path (tests/analytics). It works on `Event` objects directly, tries every
chain of distinct events for closed funnels (no cleverness), and shares only `build_response` with the SQL
path, which turns per-bucket numbers into the response rows.
"""

from __future__ import annotations

import statistics as stats
from collections import defaultdict
from collections.abc import Iterable

import orjson

from funnels.analytics.funnel import Bucket, build_response
from funnels.analytics.query import NUMERIC_OPERATORS, Filter, FunnelQuery, Step, parse_number
from funnels.events import Event

Path = tuple[int, ...]  # the ms time of each reached step


def property_text(value: object) -> str:
    """What string operators see of a JSON property: strings, integers and booleans; else ''."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or (isinstance(value, int) and not isinstance(value, bool)):
        return orjson.dumps(value).decode()
    return ""


def property_number(value: object) -> float | None:
    """What numeric operators see: JSON numbers, and strings that spell a number; else nothing."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return parse_number(value)
    return None


def filter_matches(item: Filter, event: Event) -> bool:
    if item.is_column:
        text = event.columns.get(item.operand, "")
        number = parse_number(text)
    else:
        raw = event.properties.get(item.operand)
        text, number = property_text(raw), property_number(raw)
    if item.operator in NUMERIC_OPERATORS:
        if number is None:
            return False
        return {
            "gt": number > item.number,
            "lt": number < item.number,
            "gte": number >= item.number,
            "lte": number <= item.number,
        }[item.operator]
    return {
        "equals": lambda: text == item.value,
        "notEquals": lambda: text != item.value,
        "in": lambda: text in item.values,
        "notIn": lambda: text not in item.values,
        "startsWith": lambda: text.startswith(item.value),
        "endsWith": lambda: text.endswith(item.value),
        "includes": lambda: item.value in text,
    }[item.operator]()


def step_matches(step: Step, event: Event) -> bool:
    if event.type != step.stored_type:
        return False
    if step.stored_event is not None and event.event != step.stored_event:
        return False
    return all(filter_matches(item, event) for item in step.filters)


def closed_path(query: FunnelQuery, events: list[Event]) -> Path:
    """The chosen path: among chains of distinct events reaching the furthest step, the latest start, then
    the earliest time for each following step (lexicographically)."""
    n = len(query.steps)
    matches = [[step_matches(step, e) for step in query.steps] for e in events]
    best: tuple[int, Path] = (0, ())

    def better(path: Path) -> bool:
        if len(path) != len(best[1]):
            return len(path) > len(best[1])
        return (-path[0], *path[1:]) < (-best[1][0], *best[1][1:])

    def extend(path: Path, used: frozenset[int]) -> None:
        nonlocal best
        if better(path):
            best = (len(path), path)
        k = len(path)
        if k == n:
            return
        for index, event in enumerate(events):
            if index in used or not matches[index][k]:
                continue
            if event.ts_ms < path[-1] or event.ts_ms - path[0] > query.window_ms:
                continue
            extend((*path, event.ts_ms), used | {index})

    for index, event in enumerate(events):
        if matches[index][0] and query.from_ms <= event.ts_ms <= query.to_end_ms:
            extend((event.ts_ms,), frozenset({index}))
    return best[1]


def open_path(query: FunnelQuery, events: list[Event]) -> Path:
    """First time of each step; step 1 inside the date range; stops at the first step never fired."""
    path: list[int] = []
    for k, step in enumerate(query.steps):
        upper = query.to_end_ms if k == 0 else query.scan_end_ms
        times = [e.ts_ms for e in events if step_matches(step, e) and e.ts_ms <= upper]
        if not times:
            break
        path.append(min(times))
    return tuple(path)


def first_touch(query: FunnelQuery, events: list[Event]) -> str:
    assert query.breakdown
    valued = [(e.ts_ms, e.columns.get(query.breakdown, "")) for e in events]
    valued = [pair for pair in valued if pair[1]]
    return min(valued)[1] if valued else "(none)"


def identity_links(events: Iterable[Event]) -> dict[str, str]:
    """Each key (an anonymous id, or an alias' previousId) → the user id of its earliest claim by
    (time, event id, user id). A claim is an event with a user id naming a key other than that user id."""
    claims: dict[str, tuple[int, str, str]] = {}
    for event in events:
        if not event.user_id:
            continue
        keys = {event.anonymous_id}
        previous = event.properties.get("previousId")
        if event.type == "alias" and isinstance(previous, str):
            keys.add(previous)
        for key in keys - {"", event.user_id}:
            claim = (event.ts_ms, event.event_id, event.user_id)
            if key not in claims or claim < claims[key]:
                claims[key] = claim
    return {key: claim[2] for key, claim in claims.items()}


def person_of(links: dict[str, str], user_key: str) -> str:
    """The person a user key belongs to: its link followed at most twice (anonymous → user → user)."""
    once = links.get(user_key, user_key)
    return links.get(once, once)


def reference_funnel(query: FunnelQuery, events: Iterable[Event]) -> dict[str, object]:
    """The `GET /v0/funnel` response computed in plain Python over these events."""
    events = list(events)
    links = identity_links(events) if query.stitched else {}
    by_user: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if query.from_ms <= event.ts_ms <= query.scan_end_ms:
            by_user[person_of(links, event.user_key)].append(event)
    find_path = open_path if query.funnel_type == "open" else closed_path
    paths: dict[str, list[Path]] = defaultdict(list)
    for user_events in by_user.values():
        path = find_path(query, user_events)
        if path:
            value = first_touch(query, user_events) if query.breakdown else ""
            paths[value].append(path)
    n = len(query.steps)
    ranked = sorted(paths, key=lambda value: (-len(paths[value]), value))
    kept, rest = ranked[: query.breakdown_top_n], ranked[query.breakdown_top_n :]
    groups: dict[str, list[Path]] = {value: paths[value] for value in kept}
    if rest:  # a real value spelled "Others" shares the bucket, at its own rank (as the SQL groups by label)
        groups.setdefault("Others", [])
        groups["Others"] = groups["Others"] + [path for value in rest for path in paths[value]]

    def median(values: list[int]) -> float | None:
        return float(stats.median(values)) if values else None

    buckets = [
        Bucket(
            name=value,
            users=tuple(sum(1 for p in group if len(p) >= k) for k in range(1, n + 1)),
            median_from_previous_ms=(
                None,
                *(median([p[k] - p[k - 1] for p in group if len(p) > k]) for k in range(1, n)),
            ),
            median_from_start_ms=(
                None,
                *(median([p[k] - p[0] for p in group if len(p) > k]) for k in range(1, n)),
            ),
        )
        for value, group in groups.items()
    ]
    return build_response(query, buckets, {})
