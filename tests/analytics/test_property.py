"""Property tests: the SQL funnel (`run_funnel` on chDB) equals the plain-Python oracle (`reference_funnel`).

Each example is a query and 1–15 users' events (≤ 8 each, ≤ 10 for 5–10-step funnels), shuffled, with event
ids in random order, inserted over 1–3 inserts. A user's timestamps come either from a small per-example pool
(so same-millisecond ties are common) or from a walk through the funnel (event j mostly matching step j,
gaps of 0, 1 ms, 999/1000/1001 ms, ...) that gets users deep into long funnels. Times sit on day edges and
window edges (±1 ms), so `date_from`, the end of `date_to` and the window boundary all matter; windows range
from 1 s to 14 days. Steps come from a small vocabulary where some overlap (`event/page` and `page/home`,
`event/track` and `track/connect`, page → connect → page, one step repeated) and some are exclusive; filters
use all 11 operators on standard columns and on JSON properties of every kind (strings, numeric strings at
the edge of NUMBER_PATTERN, integers, floats, booleans, objects, null, missing); breakdowns use small top-N.

Identities (`with_identities`): events become anonymous or carry both ids, drawn from small pools so that
several users claim one anonymous id; identifies and aliases (user → user, anonymous → user) are added at
times around the events', so chains, cycles and claims that arrive after later ones are common; the query
is stitched or raw, and the oracle applies the same linking rules.

The whole `data` list must be equal: users, totals, ratios and medians (medians are exact ms / 1000 on both
sides, so no tolerance is needed).

By default each test runs a fixed (derandomized) set of examples sized for the suite's time budget; set
`FUNNELS_PROPERTY_EXAMPLES=2000` (for instance) for a longer, randomized run that uses Hypothesis' example
database, and `--hypothesis-show-statistics` to see how far the examples' users got.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnels.analytics.query import NUMERIC_OPERATORS, OPERATORS, FunnelQuery
from funnels.analytics.reference import reference_funnel
from funnels.events import Event
from funnels.store.events import EventStore
from tests.analytics.conftest import DAY_MS, at, both, day, ev, funnel_query, load

# A failing example is shrunk for up to 5 minutes (Hypothesis' own limit): let it finish and report.
pytestmark = pytest.mark.timeout(900)

_EXAMPLES = os.environ.get("FUNNELS_PROPERTY_EXAMPLES")
PROFILE = settings(
    derandomize=not _EXAMPLES,
    database=settings.default.database if _EXAMPLES else None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def examples(default: int) -> int:
    """`default` examples (derandomized), or FUNNELS_PROPERTY_EXAMPLES (randomized) when that is set."""
    return int(_EXAMPLES) if _EXAMPLES else default


# Stored (type, event) kinds, and the step specs that may match them.
KINDS = [("page", "page"), ("page", "home"), ("track", "connect"), ("track", "swap"), ("transaction", "swap")]
KINDS += [("identify", "identify"), ("track", "mint"), ("transaction", "approve"), ("signature", "sign")]
OVERLAPPING_STEP_KINDS = [
    ("event", "page"),  # any page view: overlaps page/page and page/home
    ("page", "home"),
    ("page", "page"),
    ("track", "connect"),
    ("track", "swap"),
    ("event", "track"),  # any track event: overlaps track/connect and track/swap
    ("transaction", "swap"),
    ("event", "transaction"),
]
# No two of these can match one event (when each is used once): distinct stored (type, event) pairs.
EXCLUSIVE_STEP_KINDS = [
    ("page", "home"),
    ("page", "page"),
    ("track", "connect"),
    ("track", "swap"),
    ("transaction", "swap"),
    ("event", "identify"),
    ("track", "mint"),
    ("transaction", "approve"),
    ("event", "signature"),
]
# Overlapping templates: one event may match several steps.
TEMPLATES = [
    [("event", "page"), ("track", "connect"), ("event", "page")],
    [("event", "track"), ("track", "connect"), ("track", "swap")],
    [("track", "connect"), ("event", "track")],
    [("track", "swap"), ("track", "swap"), ("track", "swap")],
    [("event", "page"), ("page", "home"), ("track", "connect")],
    [("page", "page"), ("event", "page")],
    [("event", "page"), ("track", "connect"), ("event", "page"), ("event", "track")],
    [("event", "track"), ("event", "track"), ("track", "swap"), ("track", "connect")],
]

# Millisecond offsets into a day: window edges for 1 s / 2 s / 60 s windows, and the day's last ms.
OFFSETS = (0, 1, 999, 1000, 1001, 1999, 2000, 2001, 60_000, 60_001, DAY_MS - 1001, DAY_MS - 1000, DAY_MS - 1)
DAYS = (-1, 0, 0, 0, 1, 1, 2, 3)  # relative to date_from
WINDOWS = (1, 2, 60, 86_400, 86_400, 1_209_600, 1_209_600)
# Gaps between a walking user's events: shrinking goes towards the first (1 s), not towards ties.
STEP_GAPS = st.sampled_from([1000, 1, 999, 1001, 0, 0, 2000, 1000, 1, 60_000])

PROPERTY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "chain": st.sampled_from(["ethereum", "polygon", "base", "", "Ethereum", "O'Brien", "C:\\tmp"]),
    "price": st.one_of(
        st.sampled_from([0, 1, 2, 100, 150, -1, 10]),
        st.sampled_from([2.5, 100.0, 1e2, -0.5]),
        st.sampled_from(["100", "1e2", "2.5", "abc", "+5", " 1", "-1", "10", "", "100\n", "1e400"]),
        st.booleans(),
    ),
    "flag": st.one_of(st.booleans(), st.sampled_from(["true", "1", 1, 0])),
    "meta": st.sampled_from([{"a": 1}, [1, 2], None, "x"]),
    # Spellings at the edge of NUMBER_PATTERN: only some are numbers.
    "amount": st.sampled_from(
        [
            "100",
            "1e2",
            "100\n",
            " 100",
            "+100",
            "1_000",
            "0x10",
            "１００",
            "100.",
            ".5",
            "NaN",
            "inf",
            "-0",
            "00100",
        ]
    ),
}
COLUMN_VALUES = {
    "device": ["", "mobile", "desktop"],
    "utm_source": ["", "twitter", "farcaster", "telegram"],
    "version": ["", "1", "2.5", "10", "1e1", "x", "-1", "10\n"],
    "page_path": ["", "/swap", "/swap/eth", "/earn"],
    "referrer": ["", "https://x.com/", "https://t.me/"],  # a String column; most others are LowCardinality
}
NUMBERS = ["0", "1", "2.5", "100", "1e2", "-1", "10", "1.5e1", "1e400"]
# Text values per operand: some that match its values (whole, prefix, suffix, substring, |-lists), some not.
TEXTS = {
    "device": ["mobile", "desktop", "mobile|desktop", "m", "e", "", "|mobile"],
    "utm_source": ["twitter", "twitter|farcaster", "tele", "r", ""],
    "version": ["1", "2.5", "10|x", "1e1", "x", "", "1"],
    "page_path": ["/swap", "/swap/eth", "/earn|/swap", "eth", ""],
    "chain": ["ethereum", "ethereum|base", "O'Brien", "C:\\tmp", "ethereum|C:\\tmp", "\\", "eth", "e", ""],
    "price": ["100", "1", "2.5", "100.0", "abc", "true", "", "10|100", "-1"],
    "flag": ["true", "false", "1", "true|1", "", "t"],
    "meta": ["", "x", '{"a":1}', "[1,2]"],
    "absent": ["", "x"],
    "amount": ["100", "100\n", "1e2", "+100", ""],
    "referrer": ["https://x.com/", "https://", "t.me", ""],
}


@st.composite
def filters(draw: st.DrawFn) -> dict[str, str]:
    operand = draw(st.sampled_from(list(TEXTS)))
    operator = draw(st.sampled_from(OPERATORS + NUMERIC_OPERATORS))  # numeric ones twice as often
    value = draw(st.sampled_from(NUMBERS if operator in NUMERIC_OPERATORS else TEXTS[operand]))
    return {"operand": operand, "operator": operator, "value": value}


Kinds = list[tuple[str, str]]


def exclusive_kinds(low: int = 2, high: int = 4) -> st.SearchStrategy[Kinds]:
    return st.lists(st.sampled_from(EXCLUSIVE_STEP_KINDS), min_size=low, max_size=high, unique=True)


def overlapping_kinds(low: int = 2, high: int = 3) -> st.SearchStrategy[Kinds]:
    templates = st.sampled_from([t for t in TEMPLATES if low <= len(t) <= high])  # some of each length
    return st.one_of(
        templates, st.lists(st.sampled_from(OVERLAPPING_STEP_KINDS), min_size=low, max_size=high)
    )


def long_kinds(low: int = 5, high: int = 10) -> st.SearchStrategy[Kinds]:
    """5–10 steps: exclusive ones, any mix with repeats and overlapping kinds, or one step repeated."""
    vocabulary = EXCLUSIVE_STEP_KINDS + OVERLAPPING_STEP_KINDS
    anything = st.lists(st.sampled_from(vocabulary), min_size=low, max_size=high)
    repeated = st.tuples(st.sampled_from(vocabulary), st.integers(low, high)).map(lambda kn: [kn[0]] * kn[1])
    return st.one_of(exclusive_kinds(low, high), anything, repeated)


def stored_kinds(type_: str, event: str) -> Kinds:
    """The stored (type, event) kinds a step kind matches (to make events that are likely to match)."""
    return [kind for kind in KINDS if (kind[0] == event if type_ == "event" else kind == (type_, event))]


@st.composite
def cases(
    draw: st.DrawFn,
    kinds: st.SearchStrategy[Kinds],
    funnel_types: list[str],
    max_events: int = 8,
    walk: bool | None = None,
    filter_counts: tuple[int, ...] = (0, 0, 0, 0, 1, 1, 2),
    bucket_names: bool = False,
    attributions: bool = False,
) -> tuple[FunnelQuery, list[Event], int]:
    """(query, events, number of inserts). Events are shuffled and their ids are in random order.

    Two ways to draw a user's events (`walk` None: either): from a small per-example pool of timestamps, so
    same-millisecond ties are common; or as a walk through the funnel, event j mostly matching step j, each
    a small gap after the previous one (window edges ±1 ms, sometimes 0), so users get deep into funnels.

    `bucket_names`: always break down, and let real values be spelled like the buckets the response makes
    up ("(none)" for users without a value, "Others" for the merged rest).

    `attributions`: always break down, by a column or an event property (`properties.<key>`, of every kind
    of JSON value), attributed by first touch, last touch or a step's event (`step:K`)."""
    step_kinds = draw(kinds)
    steps = []
    for type_, event in step_kinds:
        spec: dict[str, Any] = {"type": type_, "event": event}
        if count := draw(st.sampled_from(filter_counts)):
            spec["filters"] = [draw(filters()) for _ in range(count)]
        steps.append(spec)
    start, span = draw(st.sampled_from([0, 1])), draw(st.sampled_from([0, 1, 2]))
    breakdowns = (
        ["device", "utm_source", "utm_source"]
        if bucket_names
        else [None, None, "device", "utm_source", "referrer"]
    )
    if attributions:
        breakdowns = ["device", "utm_source", *(f"properties.{key}" for key in PROPERTY_VALUES)]
    breakdown = draw(st.sampled_from(breakdowns))
    attribution = None
    if attributions:
        attribution = draw(
            st.sampled_from(["first_touch", "last_touch", *(f"step:{k}" for k in range(1, len(steps) + 1))])
        )
    column_values = COLUMN_VALUES
    if bucket_names:
        column_values = COLUMN_VALUES | {
            "device": [*COLUMN_VALUES["device"], "(none)"],
            "utm_source": [*COLUMN_VALUES["utm_source"], "Others", "Others"],
        }
    query = funnel_query(
        steps,
        date_from=day(start),
        date_to=day(start + span),
        window_seconds=draw(st.sampled_from(WINDOWS)),
        funnel_type=draw(st.sampled_from(funnel_types)),
        breakdown=breakdown,
        breakdown_top_n=draw(st.integers(1, 2 if bucket_names else 3)) if breakdown else None,
        breakdown_attribution=attribution,
    )

    home = start + draw(st.sampled_from([0, 0, 1, 2]))  # most times on one day, so windows can hold chains
    home = min(home, start + span)
    times = st.builds(
        at, st.sampled_from([home, home, home] + [start + d for d in DAYS]), st.sampled_from(OFFSETS)
    )
    walk = draw(st.booleans()) if walk is None else walk
    pool = draw(st.lists(times, min_size=1, max_size=6, unique=True))
    matching = [kind for type_, event in step_kinds for kind in stored_kinds(type_, event)]
    any_kind = st.sampled_from(KINDS)
    raw = []
    for user in range(draw(st.integers(1, 15))):
        count = draw(st.integers(1, max_events))
        if walk:
            # Usually start inside the date range (or just before it, or just after it).
            first_day = draw(st.sampled_from([home, home, home, start - 1, start + span + 1]))
            user_times = [at(first_day, draw(st.sampled_from(OFFSETS)))]
            for _ in range(count - 1):
                user_times.append(user_times[-1] + draw(STEP_GAPS))
            user_kinds = []
            for j in range(count):
                kinds_j = stored_kinds(*step_kinds[j % len(step_kinds)])
                off_script = not kinds_j or draw(st.integers(0, 9)) == 9
                user_kinds.append(draw(any_kind if off_script else st.sampled_from(kinds_j)))
        else:
            user_times = [draw(st.sampled_from(pool)) for _ in range(count)]
            mostly_matching = st.one_of(st.sampled_from(matching), any_kind) if matching else any_kind
            user_kinds = [draw(mostly_matching) for _ in range(count)]
        for ts, (type_, event) in zip(user_times, user_kinds, strict=True):
            props = {key: draw(values) for key, values in PROPERTY_VALUES.items() if draw(st.booleans())}
            columns = {name: draw(st.sampled_from(values)) for name, values in column_values.items()}
            raw.append((f"u{user}", ts, type_, event, props, columns))
    ids = draw(st.permutations(range(len(raw))))
    events = [
        ev(user, ts, type_, event, props=props, event_id=f"e{ids[i]:04d}", **columns)
        for i, (user, ts, type_, event, props, columns) in enumerate(raw)
    ]
    return query, draw(st.permutations(events)), draw(st.integers(1, 3))


ANONYMOUS_IDS = ["a0", "a1", "a2"]


@st.composite
def with_identities(
    draw: st.DrawFn, base: st.SearchStrategy[tuple[FunnelQuery, list[Event], int]]
) -> tuple[FunnelQuery, list[Event], int]:
    """A case whose events have anonymous ids, links and aliases, queried stitched or raw."""
    query, events, batches = draw(base)
    user_ids = sorted({event.user_id for event in events})
    anonymous_ids = st.sampled_from(ANONYMOUS_IDS + [f"a-{user}" for user in user_ids])
    # Each user's browser: mostly its own anonymous id, sometimes one that other users share.
    own = {user: draw(st.one_of(st.just(f"a-{user}"), anonymous_ids)) for user in user_ids}
    rewritten = []
    for event in events:
        anonymous = own[event.user_id] if draw(st.integers(0, 4)) else draw(anonymous_ids)
        match draw(st.sampled_from(["user", "anonymous", "anonymous", "both"])):
            case "anonymous":
                event = replace(event, user_id="", anonymous_id=anonymous, user_key=anonymous)
            case "both":
                event = replace(event, anonymous_id=anonymous)
        rewritten.append(event)
    times = sorted({event.ts_ms for event in events})
    claimants = st.sampled_from([*user_ids, "u9"])
    for _ in range(draw(st.integers(0, 6))):
        ts = draw(st.sampled_from(times)) + draw(st.sampled_from([0, 0, -1, 1, -60_000, 1000]))
        if draw(st.integers(0, 2)) == 0:
            rewritten.append(ev(draw(claimants), ts, "identify", anonymous_id=draw(anonymous_ids)))
        else:  # mostly user → user, so that chains and cycles form
            previous = draw(st.one_of(claimants, claimants, anonymous_ids))
            rewritten.append(ev(draw(claimants), ts, "alias", props={"previousId": previous}))
    ids = draw(st.permutations(range(len(rewritten))))  # ties in time are broken by id: any order
    rewritten = [replace(event, event_id=f"e{ids[i]:04d}") for i, event in enumerate(rewritten)]
    identity = draw(st.sampled_from(["stitched", "stitched", "raw"]))
    return replace(query, identity=identity), draw(st.permutations(rewritten)), batches


def check(store: EventStore, case: tuple[FunnelQuery, list[Event], int]) -> None:
    query, events, batches = case
    load(store, events, batches)
    sql, reference = both(store, query, events)
    assert sql["meta"] == reference["meta"]
    assert sql["data"] == reference["data"]
    # Coverage labels (shown with --hypothesis-show-statistics): how far the examples' users got.
    reached = max((row["step"] for row in reference["data"] if row["users"]), default=0)
    hypothesis.target(reached / len(query.steps), label="fraction of the funnel reached")
    hypothesis.event(
        f"{query.funnel_type}: furthest step reached {'= last' if reached == len(query.steps) else reached}"
    )


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(200))
@given(
    case=st.one_of(
        cases(exclusive_kinds(), ["closed"]),
        cases(st.one_of(exclusive_kinds(), overlapping_kinds(2, 4)), ["open"]),
    )
)
def test_open_and_exclusive_closed_funnels_equal_reference(store: EventStore, case: Any) -> None:
    check(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(150))
@given(case=cases(overlapping_kinds(2, 4), ["closed"]))
def test_overlapping_closed_funnels_equal_reference(store: EventStore, case: Any) -> None:
    """page → connect → page and friends: one event may match several steps but serves only one."""
    check(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(60))
@given(case=cases(long_kinds(), ["closed", "open"], max_events=10, walk=True, filter_counts=(0,) * 15 + (1,)))
def test_five_to_ten_steps_equal_reference(store: EventStore, case: Any) -> None:
    """The spec allows up to 10 steps, overlapping or not, in both funnel types; users walk deep into them."""
    check(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(100))
@given(
    case=cases(
        st.one_of(exclusive_kinds(2, 3), overlapping_kinds(2, 3)), ["closed", "open"], bucket_names=True
    )
)
def test_breakdown_values_spelled_like_buckets_equal_reference(store: EventStore, case: Any) -> None:
    """A real breakdown value "Others" or "(none)" (e.g. utm_source=Others) next to the made-up buckets."""
    check(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(150))
@given(
    case=st.one_of(
        cases(
            st.one_of(exclusive_kinds(2, 3), overlapping_kinds(2, 3)),
            ["closed", "open", "strict"],
            attributions=True,
        ),
        with_identities(cases(exclusive_kinds(2, 3), ["closed", "open", "strict"], attributions=True)),
    )
)
def test_breakdowns_by_any_property_and_attribution_equal_reference(store: EventStore, case: Any) -> None:
    """`breakdown=properties.<key>` (strings, numbers, booleans, objects, missing) and
    `breakdown_attribution` first_touch, last_touch and step:K, in every funnel type, raw and stitched."""
    check(store, case)
    query, _, _ = case
    hypothesis.event(f"attribution {query.breakdown_attribution.split(':')[0]}, {query.funnel_type}")


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(150))
@given(
    case=with_identities(
        st.one_of(
            cases(exclusive_kinds(), ["closed", "open"]),
            cases(overlapping_kinds(2, 4), ["closed"]),
            cases(exclusive_kinds(2, 3), ["closed", "open"], bucket_names=True),
        )
    )
)
def test_stitched_and_raw_identities_equal_reference(store: EventStore, case: Any) -> None:
    """Anonymous ids, identifies, aliases (second claimants, chains, cycles), in any arrival order."""
    check(store, case)
    query, events, _ = case
    raw = reference_funnel(replace(query, identity="raw"), events)
    stitched = reference_funnel(replace(query, identity="stitched"), events)
    hypothesis.event(f"stitching changes the answer: {raw['data'] != stitched['data']}")


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(60))
@given(case=with_identities(cases(exclusive_kinds(), ["closed", "open"])))
def test_a_stitched_funnel_after_each_insert_equals_reference(store: EventStore, case: Any) -> None:
    """The persons dictionary is reloaded only after an insert that may change a link: queried after each
    of the 1–3 inserts, the stitched funnel equals the oracle on the events stored so far."""
    query, events, batches = case
    query = replace(query, identity="stitched")
    load(store, [])
    size = max(1, -(-len(events) // batches))
    for start in range(0, len(events), size):
        store.insert_events(events[start : start + size])
        sql, reference = both(store, query, events[: start + size])
        assert sql["data"] == reference["data"]


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(120))
@given(
    case=st.one_of(
        cases(st.one_of(exclusive_kinds(), overlapping_kinds(2, 4)), ["strict"]),
        cases(long_kinds(), ["strict"], max_events=10, walk=True, filter_counts=(0,) * 15 + (1,)),
        cases(st.one_of(exclusive_kinds(2, 3), overlapping_kinds(2, 3)), ["strict"], bucket_names=True),
    )
)
def test_strict_funnels_equal_reference(store: EventStore, case: Any) -> None:
    """Strict order: each step the user's very next event (any event of the user counts), ties and
    overlapping steps included, long funnels walked deep, with breakdowns."""
    check(store, case)


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(80))
@given(case=with_identities(cases(st.one_of(exclusive_kinds(), overlapping_kinds(2, 3)), ["strict"])))
def test_strict_stitched_and_raw_equal_reference(store: EventStore, case: Any) -> None:
    """A person's events from all their keys form one sequence: another key's event breaks the chain."""
    check(store, case)
