"""A plain-Python reference implementation of the funnel semantics: small, obviously correct, slow.

It is the test oracle for the SQL path (tests/analytics). It works on `Event` objects directly, tries every
chain of distinct events for closed funnels (no cleverness), and shares only `build_response` with the SQL
path, which turns per-bucket numbers into the response rows.
"""

from __future__ import annotations

import statistics as stats
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta

import orjson

from funnels.analytics.funnel import Bucket, build_response
from funnels.analytics.people import PeopleQuery, Person, build_people
from funnels.analytics.query import NUMERIC_OPERATORS, Filter, FunnelQuery, Step, parse_number
from funnels.analytics.time_to_convert import (
    AUTO_EDGES_MS,
    PERCENTILES,
    Group,
    TimeToConvertQuery,
    build_time_to_convert,
)
from funnels.analytics.trends import TrendsQuery, build_trends
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


def held_values(query: FunnelQuery, event: Event) -> tuple[str, ...]:
    """The values `hold_constant` compares, as string filters see them (a column's text, a property's)."""
    return tuple(
        property_text(event.properties.get(held.removeprefix("properties.")))
        if held.startswith("properties.")
        else event.columns.get(held, "")
        for held in query.hold_constant
    )


def closed_path(query: FunnelQuery, events: list[Event], value: tuple[str, ...] | None = None) -> Path:
    """The chosen path: among chains of distinct events reaching the furthest step, the latest start, then
        the earliest time for each following step (lexicographically). With `hold_constant`, only chains whose
    events all have the same held values (`value`, when given: only chains of those). With exclusions, only
    admissible chains: no event matching an exclusion (of any held value) in (time of its from_step, time of
    its to_step] (every chain is tried, and one that breaks an exclusion is not extended: each of its
    extensions breaks it too)."""
    n = len(query.steps)
    matches = [[step_matches(step, e) for step in query.steps] for e in events]
    excluded = [[e.ts_ms for e in events if step_matches(x.step, e)] for x in query.exclusions]
    held = [held_values(query, e) for e in events]
    best: tuple[int, Path] = (0, ())

    def admissible(path: Path) -> bool:
        """No exclusion ending at the path's last step has an event in (t_from, t_to]."""
        k = len(path)
        return not any(
            path[x.from_step - 1] < ts <= path[-1]
            for x, times in zip(query.exclusions, excluded, strict=True)
            if x.to_step == k
            for ts in times
        )

    def better(path: Path) -> bool:
        if len(path) != len(best[1]):
            return len(path) > len(best[1])
        return (-path[0], *path[1:]) < (-best[1][0], *best[1][1:])

    def extend(path: Path, used: frozenset[int], first: int) -> None:
        nonlocal best
        if better(path):
            best = (len(path), path)
        k = len(path)
        if k == n:
            return
        for index, event in enumerate(events):
            if index in used or not matches[index][k] or held[index] != held[first]:
                continue
            if event.ts_ms < path[-1] or event.ts_ms - path[0] > query.window_ms:
                continue
            if admissible((*path, event.ts_ms)):
                extend((*path, event.ts_ms), used | {index}, first)

    for index, event in enumerate(events):
        if value is not None and held[index] != value:
            continue
        if matches[index][0] and query.from_ms <= event.ts_ms <= query.to_end_ms:
            extend((event.ts_ms,), frozenset({index}), index)
    return best[1]


def strict_path(query: FunnelQuery, events: list[Event], value: tuple[str, ...] | None = None) -> Path:
    """The chosen strict path: runs of consecutive events of the user (all of them, in (time, mask) order:
    within a millisecond, events matching no step first, then by the bitmask of the steps they match) that
    match steps 1..k in order, step 1 in the date range, within the window; the furthest, then the latest
    start, then the earliest times. With `value` (`hold_constant`), an event of other held values matches no
    step: it is still an event of the user, between the steps it stands between (and first in its
    millisecond, as every event matching no step)."""
    n = len(query.steps)

    def mask(event: Event) -> int:
        if value is not None and held_values(query, event) != value:
            return 0
        return sum(1 << k for k, step in enumerate(query.steps) if step_matches(step, event))

    ordered = sorted((event.ts_ms, mask(event)) for event in events)
    best: Path = ()
    for start, (ts, bits) in enumerate(ordered):
        if not bits & 1 or not query.from_ms <= ts <= query.to_end_ms:
            continue
        path: Path = (ts,)
        for k in range(1, n):
            if start + k >= len(ordered):
                break
            t, b = ordered[start + k]
            if not b & (1 << k) or t - ts > query.window_ms:
                break
            path = (*path, t)
        if len(path) != len(best):
            if len(path) > len(best):
                best = path
        elif (-path[0], *path[1:]) < (-best[0], *best[1:]):
            best = path
    return best


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


def breakdown_text(query: FunnelQuery, event: Event) -> str:
    """An event's breakdown value: its column, or its property as filters read it ('' for none)."""
    assert query.breakdown
    key = query.breakdown_property
    return event.columns.get(query.breakdown, "") if key is None else property_text(event.properties.get(key))


def attributed(query: FunnelQuery, events: list[Event], path: Path) -> str:
    """The user's group: first touch, the earliest event with a value (ties: the smallest value); last
    touch, the latest (ties: the largest); `step:K`, the smallest value among step K's events at the path's
    step-K time. "(none)" without one (or short of step K)."""
    k = query.attribution_step
    if k is None:
        valued = [(e.ts_ms, breakdown_text(query, e)) for e in events]
        valued = [pair for pair in valued if pair[1]]
        if not valued:
            return "(none)"
        return (max(valued) if query.breakdown_attribution == "last_touch" else min(valued))[1]
    if len(path) < k:
        return "(none)"
    step = query.steps[k - 1]
    values = [breakdown_text(query, e) for e in events if e.ts_ms == path[k - 1] and step_matches(step, e)]
    return min((value for value in values if value), default="(none)")


def person_values(query: FunnelQuery, events: Iterable[Event], links: dict[str, str]) -> dict[str, str]:
    """With `breakdown=person.<key>`, each user's (stitched: person's) value of the identified model's
    property: `<key>` on their latest identify event with a non-empty value (ties in one millisecond: the
    largest value), among identify events up to the end of the scan, however early. With `aggregate_by`,
    each group's own value (by its primary id): the identify events stored under that id as they are,
    stitched or raw, not a member's."""
    key = query.breakdown_person
    assert key is not None
    latest: dict[str, tuple[int, str]] = {}
    for event in events:
        value = property_text(event.properties.get(key))
        if event.type != "identify" or event.ts_ms > query.scan_end_ms or not value:
            continue
        user = event.user_key if query.aggregate_by else person_of(links, event.user_key)
        latest[user] = max(latest.get(user, (event.ts_ms, value)), (event.ts_ms, value))
    return {user: value for user, (_, value) in latest.items()}


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


def user_path(query: FunnelQuery, events: list[Event]) -> tuple[Path, str]:
    """A user's path and breakdown value ("" without a breakdown). With `hold_constant`, the funnel runs on
    each held value's events alone and the best path wins: the furthest, then the latest start, then the
    earliest times (strict or with exclusions, each value's chains among all the user's events: another
    value's event breaks a strict chain, and any value's exclusion event disqualifies); by first or last touch the value is the user's over all their events, with `step:K`
    the winning path's own (among equal paths, a value before "(none)", then the smallest)."""
    find_path = {"open": open_path, "strict": strict_path}.get(query.funnel_type, closed_path)
    find_value_path = strict_path if query.funnel_type == "strict" else closed_path
    if not query.hold_constant:
        path = find_path(query, events)
        return path, attributed(query, events, path) if query.breakdown and path else ""
    by_value: dict[tuple[str, ...], list[Event]] = defaultdict(list)
    for event in events:
        by_value[held_values(query, event)].append(event)
    candidates = []
    for value, group in by_value.items():
        # Strict: the other values' events stand between steps; exclusions: any value's exclusion event
        # disqualifies. Both see all the user's events, with chains of this value only.
        whole = query.funnel_type == "strict" or bool(query.exclusions)
        path = find_value_path(query, events, value) if whole else find_path(query, group)
        if path:
            own = attributed(query, group, path) if query.breakdown and query.attribution_step else ""
            candidates.append(((-len(path), -path[0], *path[1:]), (own == "(none)", own), path))
    if not candidates:
        return (), ""
    _rank, (_none, own), path = min(candidates)
    if not query.breakdown:
        return path, ""
    return path, own if query.attribution_step else attributed(query, events, path)


Memberships = Mapping[str, Iterable[str]]  # with aggregate_by: a member's id → the groups' primary ids


def events_by_user(
    query: FunnelQuery, events: Iterable[Event], memberships: Memberships | None = None
) -> dict[str, list[Event]]:
    """The scanned events of each user: its person (stitched) or user key (raw); with `aggregate_by`, of
    each group that user is a member of (`memberships`, by the person's or the key's id: a member of two
    groups brings its events to both, a user in no group is not counted), all members' events together.
    With `sample`, only the users (persons, groups) whose key's `siphash64` is under the sample's bound."""
    events = list(events)
    links = identity_links(events) if query.stitched else {}
    by_user: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if query.from_ms <= event.ts_ms <= query.scan_end_ms:
            user = person_of(links, event.user_key)
            if query.aggregate_by is None:
                by_user[user].append(event)
                continue
            for group in set((memberships or {}).get(user, ())):
                by_user[group].append(event)
    bound = query.sample_threshold
    if bound is not None:
        return defaultdict(list, {user: found for user, found in by_user.items() if siphash64(user) < bound})
    return by_user


def reference_groups(
    query: FunnelQuery, events: Iterable[Event], memberships: Memberships | None = None
) -> dict[str, list[Path]]:
    """Each breakdown group's users' paths (one group, `""`, without a breakdown), in rank order: the top
    `breakdown_top_n` values by step-1 users, then the rest merged into `Others`."""
    events = list(events)
    by_user = events_by_user(query, events, memberships)
    persons = None
    if query.breakdown_person is not None:
        persons = person_values(query, events, identity_links(events) if query.stitched else {})
    paths: dict[str, list[Path]] = defaultdict(list)
    for user, user_events in by_user.items():
        path, value = user_path(query, user_events)
        if path:
            value = persons.get(user, "(none)") if persons is not None else value
            paths[value].append(path)
    ranked = sorted(paths, key=lambda value: (-len(paths[value]), value))
    kept, rest = ranked[: query.breakdown_top_n], ranked[query.breakdown_top_n :]
    groups: dict[str, list[Path]] = {value: paths[value] for value in kept}
    if rest:  # a real value spelled "Others" shares the bucket, at its own rank (as the SQL groups by label)
        groups.setdefault("Others", [])
        groups["Others"] = groups["Others"] + [path for value in rest for path in paths[value]]
    return groups


def reference_funnel(
    query: FunnelQuery, events: Iterable[Event], memberships: Memberships | None = None
) -> dict[str, object]:
    """The `GET /v0/funnel` response computed in plain Python over these events."""
    groups = reference_groups(query, events, memberships)
    n = len(query.steps)

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


def percentile(values: list[int], level: float) -> float | None:
    """The inclusive percentile (linear interpolation between closest ranks: position level × (n − 1) in the
    sorted values, as Excel's PERCENTILE.INC and R's type 7), with ClickHouse's float steps."""
    if not values:
        return None
    ordered = sorted(values)
    h = level * (len(ordered) - 1) + 1
    k = int(h)
    if k >= len(ordered):
        return float(ordered[-1])
    if k < 1:
        return float(ordered[0])
    return ordered[k - 1] + (h - k) * (ordered[k] - ordered[k - 1])


def reference_time_to_convert(
    query: TimeToConvertQuery, events: Iterable[Event], memberships: Memberships | None = None
) -> dict[str, object]:
    """The `GET /v0/funnel/time_to_convert` response computed in plain Python over these events."""
    groups = reference_groups(query.funnel, events, memberships)
    values = {
        name: [p[query.to_step - 1] - p[query.from_step - 1] for p in paths if len(p) >= query.to_step]
        for name, paths in groups.items()
    }
    everything = [v for group in values.values() for v in group]
    if query.bins is None:
        edges = AUTO_EDGES_MS
    elif not everything:
        edges = (0, 1)
    else:
        lo, hi = min(everything), max(everything)
        count = min(query.bins, hi - lo + 1)
        width = -(-(hi - lo + 1) // count)
        edges = tuple(lo + k * width for k in range(count + 1))
    shaped = [
        Group(
            name=name,
            users=len(group),
            mean_ms=float(sum(group)) / float(len(group)) if group else None,
            percentiles_ms=tuple(percentile(group, level) for level in PERCENTILES),
            counts=tuple(
                sum(1 for v in group if (i == 0 or edges[i - 1] <= v) and (i == len(edges) or v < edges[i]))
                for i in range(len(edges) + 1)
            ),
        )
        for name, group in values.items()
    ]
    return build_time_to_convert(query, edges, shaped, {})


def reference_trends(
    query: TrendsQuery, events: Iterable[Event], now_ms: int, memberships: Memberships | None = None
) -> dict[str, object]:
    """The `GET /v0/funnel/trends` response computed in plain Python over these events: each user in the
    period of their path's first step, converted when the path reaches the last step."""
    groups = reference_groups(query.funnel, events, memberships)
    n = len(query.funnel.steps)
    counts: dict[tuple[str, int], tuple[int, int]] = {}
    for name, paths in groups.items():
        for path in paths:
            day = datetime.fromtimestamp(path[0] / 1000, UTC).date()
            if query.interval == "week":
                key = (day - timedelta(days=day.weekday()) - date(1970, 1, 1)).days
            elif query.interval == "month":
                key = day.year * 12 + day.month - 1
            else:
                key = (day - date(1970, 1, 1)).days
            entered, converted = counts.get((name, key), (0, 0))
            counts[(name, key)] = (entered + 1, converted + (len(path) == n))
    return build_trends(query, counts, list(groups), now_ms, {})


_M64 = 0xFFFF_FFFF_FFFF_FFFF


def siphash64(text: str) -> int:
    """ClickHouse's `sipHash64` of a string: SipHash-2-4 with a zero key, the order of people's pages."""
    data = text.encode()
    v = [0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573]

    def rotl(x: int, b: int) -> int:
        return ((x << b) | (x >> (64 - b))) & _M64

    def sip_round() -> None:
        v[0] = (v[0] + v[1]) & _M64
        v[1] = rotl(v[1], 13) ^ v[0]
        v[0] = rotl(v[0], 32)
        v[2] = (v[2] + v[3]) & _M64
        v[3] = rotl(v[3], 16) ^ v[2]
        v[0] = (v[0] + v[3]) & _M64
        v[3] = rotl(v[3], 21) ^ v[0]
        v[2] = (v[2] + v[1]) & _M64
        v[1] = rotl(v[1], 17) ^ v[2]
        v[2] = rotl(v[2], 32)

    end = len(data) - len(data) % 8
    words = [int.from_bytes(data[i : i + 8], "little") for i in range(0, end, 8)]
    words.append(((len(data) & 0xFF) << 56) | int.from_bytes(data[end:], "little"))
    for word in words:
        v[3] ^= word
        sip_round()
        sip_round()
        v[0] ^= word
    v[2] ^= 0xFF
    for _ in range(4):
        sip_round()
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def reference_people(
    query: PeopleQuery, events: Iterable[Event], memberships: Memberships | None = None
) -> dict[str, object]:
    """The `GET /v0/funnel/people` response computed in plain Python over these events: every user (the
    person's key, stitched: the user id its keys link to; with `aggregate_by`, the group's primary id) whose
    path's length the outcome selects, in the order of the hash of that key, the page after the cursor."""
    funnel = query.funnel
    events = list(events)
    by_user = events_by_user(funnel, events, memberships)
    n = len(funnel.steps)
    persons = None
    if funnel.breakdown_person is not None:
        persons = person_values(funnel, events, identity_links(events) if funnel.stitched else {})
    people = []
    entered: dict[str, int] = defaultdict(int)  # step-1 users per value, to rank the funnel's buckets
    for user, user_events in by_user.items():
        path, value = user_path(funnel, user_events)
        if path and persons is not None:
            value = persons.get(user, "(none)")
        if path:
            entered[value] += 1
        if path and query.selects(len(path)):
            times = (*path, *(None,) * (n - len(path)))
            people.append(
                Person(siphash64(user), user, len(path), times, value if funnel.breakdown else "(none)")
            )
    if query.breakdown_value is not None:  # the funnel's buckets, as `reference_groups` ranks them
        kept = sorted(entered, key=lambda v: (-entered[v], v))[: funnel.breakdown_top_n]
        people = [
            p for p in people if (p.breakdown if p.breakdown in kept else "Others") == query.breakdown_value
        ]
    people.sort(key=lambda person: person.key)
    after = [p for p in people if query.after is None or p.key > query.after]
    return build_people(query, len(people), after[: query.limit + 1], {})
