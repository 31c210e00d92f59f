"""`make bench`: generate 10M events for 1M users, import them from Parquet, time `/v0/funnel` next to a bare
`windowFunnel` level count on the same data in the same run. Not a test: it prints figures for
docs/benchmarks.md (and writes them to bench/data/results.json).

    .venv/bin/python bench/run.py [--events 10000000] [--users 1000000] [--repeat 5] [--anonymous 0.3]
        [--identified 0.5] [--analyses-only]

`--anonymous F`: a fraction F of the users start anonymous. Each such user gets an identify time (uniform
over the span); their events before it carry only an anonymous id, the rest both ids, and one identify
event links the two. Every funnel is then timed stitched (the default) and raw in the same run.

Then the strict funnel, the closed funnel with exclusion steps and with a property held constant next to
the closed one (issue 14, items 5, 4 and 6; target ≤ 2×), and issue 14's analyses of the closed funnel
(`/v0/funnel/time_to_convert`, `/v0/funnel/trends`), each interleaved with the plain closed funnel (target ≤
2× it) and with the funnel of its own parameters; then the funnel's variants (a breakdown by an event
property with each attribution, compare=previous_period), each interleaved with the closed funnel; then the
closed funnel by organization (`aggregate_by`, issue 14 item 8: ~10 users per organization, made in the state
store), interleaved with the closed funnel, and by organization broken down by the organization's own plan
(`aggregate_by` + `breakdown=person.plan`, items 7+8: identify events under 9 in 10 organizations' ids, added
to the data once), interleaved with both.
`--identified F` (default 0.5): a fraction F of the users have 1–3 identify events setting a `plan` trait,
at times uniform over the year before the span and the span itself (most of them before `date_from`, as a
customer base identified long ago): the breakdown by that person property (`breakdown=person.plan`, issue 14
item 7) is timed next to the breakdown by an event property and the plain closed funnel, interleaved
(`time_person`). `--analyses-only` times just those (strict and exclusions included), on the data directory the last full
run left in bench/data/dir.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from funnels.analytics.compare import parse_compared_query, run_compared
from funnels.analytics.funnel import run_funnel
from funnels.analytics.people import parse_people_query, run_people
from funnels.analytics.query import parse_funnel_query
from funnels.analytics.sql import Binder, step_sql
from funnels.analytics.time_to_convert import parse_time_to_convert_query, run_time_to_convert
from funnels.analytics.trends import parse_trends_query, run_trends
from funnels.events import Event
from funnels.services import Services
from funnels.store import identity as stored_identity
from funnels.store.events import LINKS_TABLE, PERSONS_DICTIONARY
from funnels.store.groups import load_groups

DATA = Path(__file__).parent / "data"
START_MS = 1_775_001_600_000  # 2026-04-01
SPAN_DAYS = 44
FUNNEL = [
    {"type": "event", "event": "page", "name": "page::0"},
    {"type": "track", "event": "connect", "name": "connect::1"},
    {
        "type": "track",
        "event": "swap",
        "name": "swap::2",
        "filters": [{"operand": "chain", "operator": "equals", "value": "ethereum"}],
    },
]
BASE = {"date_from": "2026-04-01", "date_to": "2026-04-30", "window_seconds": "1209600"}


def generate(
    path: Path, events: int, users: int, anonymous: float = 0.0, identified: float = 0.0, seed: int = 42
) -> None:
    """A Parquet file of `events` events: 50% page views, 30% connect, 20% swap, uniform users and times;
    with `anonymous`, that fraction of users starts anonymous and is identified once; with `identified`,
    that fraction of users has 1–3 identify events with a `plan` (module docstring)."""
    rng = np.random.default_rng(seed)
    table, user, ts = events_table(rng, 0, events, users)
    if anonymous > 0:
        table = _with_anonymous_users(table, user, ts, users, anonymous, rng)
    if identified > 0:
        table = _with_plans(table, users, identified, rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=1_000_000)


def events_table(
    rng: np.random.Generator, first: int, events: int, users: int
) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """`events` events numbered from `first` (their message ids): 50% page views, 30% connect, 20% swap
    (half on ethereum), users uniform over `users`, times uniform over the span; also each event's user
    number and time (ms), for the variants that add identities."""
    kind = rng.integers(0, 100, events)
    kind = np.where(kind < 50, 0, np.where(kind < 80, 1, 2))
    take = lambda values, idx: pa.array(values).take(pa.array(idx))  # noqa: E731
    props = [
        '{"path":"/"}',
        '{"provider_name":"MetaMask"}',
        '{"chain":"ethereum","price":120.5}',
        '{"chain":"base","price":18}',
    ]
    prop_idx = np.where(kind < 2, kind, 2 + rng.integers(0, 2, events))
    user = rng.integers(0, users, events)
    ts = START_MS + rng.integers(0, SPAN_DAYS * 86_400_000, events)
    columns = {
        "message_id": pc.binary_join_element_wise(
            "m", pa.array(np.arange(first, first + events)).cast(pa.string()), ""
        ),
        "type": take(["page", "track", "track"], kind),
        "event": take(["page", "connect", "swap"], kind),
        "user_id": pc.binary_join_element_wise("u", pa.array(user).cast(pa.string()), ""),
        "timestamp": pa.array(ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "properties": take(props, prop_idx),
        "device": take(["desktop", "mobile", "tablet"], rng.integers(0, 3, events)),
        "utm_source": take(["google", "twitter", "", "newsletter", ""], rng.integers(0, 5, events)),
        "location": take(["US", "DE", "GB", "IN", "BR"], rng.integers(0, 5, events)),
    }
    return pa.table(columns), user, ts


def _with_anonymous_users(
    table: pa.Table, user: np.ndarray, ts: np.ndarray, users: int, fraction: float, rng: np.random.Generator
) -> pa.Table:
    """The users below `fraction` of the id range start anonymous: before their identify time their events
    carry only `a<n>`, after it both ids; one identify event per such user (at that time) links them."""
    starts_anonymous = user < int(users * fraction)
    identified_at = START_MS + rng.integers(0, SPAN_DAYS * 86_400_000, users)
    before = starts_anonymous & (ts < identified_at[user])
    anonymous_ids = pc.binary_join_element_wise("a", pa.array(user).cast(pa.string()), "")
    no_id = pa.array(np.full(len(user), ""), pa.string())
    table = table.set_column(
        table.schema.get_field_index("user_id"),
        "user_id",
        pc.if_else(pa.array(before), no_id, table.column("user_id")),
    )
    table = table.append_column("anonymous_id", pc.if_else(pa.array(starts_anonymous), anonymous_ids, no_id))
    n = np.arange(int(users * fraction))
    text = pa.array(n).cast(pa.string())
    identifies = {
        "message_id": pc.binary_join_element_wise("i", text, ""),
        "type": pa.array(np.full(len(n), "identify")),
        "event": pa.array(np.full(len(n), "identify")),
        "user_id": pc.binary_join_element_wise("u", text, ""),
        "timestamp": pa.array(identified_at[n], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "properties": pa.array(np.full(len(n), "{}")),
        "device": pa.array(np.full(len(n), "")),
        "utm_source": pa.array(np.full(len(n), "")),
        "location": pa.array(np.full(len(n), "")),
        "anonymous_id": pc.binary_join_element_wise("a", text, ""),
    }
    return pa.concat_tables([table, pa.table(identifies, schema=table.schema)])


YEAR_MS = 365 * 86_400_000


def _with_plans(table: pa.Table, users: int, fraction: float, rng: np.random.Generator) -> pa.Table:
    """1–3 identify events (under the user id) for a random `fraction` of the users, each with a `plan`
    trait, at times uniform from a year before the span to its end (so most are before `date_from`)."""
    chosen = np.flatnonzero(rng.random(users) < fraction)
    who = np.repeat(chosen, rng.integers(1, 4, len(chosen)))
    text = pa.array(who).cast(pa.string())
    plans = ['{"plan":"free"}', '{"plan":"pro"}', '{"plan":"team"}', '{"plan":"enterprise"}']
    blank = pa.array(np.full(len(who), ""), pa.string())
    columns = {name: blank for name in table.schema.names}
    columns |= {
        "message_id": pc.binary_join_element_wise("p", pa.array(np.arange(len(who))).cast(pa.string()), ""),
        "type": pa.array(np.full(len(who), "identify")),
        "event": pa.array(np.full(len(who), "identify")),
        "user_id": pc.binary_join_element_wise("u", text, ""),
        "timestamp": pa.array(
            START_MS - YEAR_MS + rng.integers(0, YEAR_MS + SPAN_DAYS * 86_400_000, len(who)), pa.int64()
        ).cast(pa.timestamp("ms", tz="UTC")),
        "properties": pa.array(plans).take(pa.array(rng.integers(0, len(plans), len(who)))),
    }
    return pa.concat_tables([table, pa.table(columns, schema=table.schema)])


def window_funnel_sql(query_params: dict[str, str]) -> tuple[str, dict[str, object]]:
    """The bare ClickHouse windowFunnel level count for the same steps, with the same bound conditions."""
    query = parse_funnel_query(query_params)
    params: dict[str, object] = {}
    bind = Binder(params)
    conditions = [step_sql(step, bind) for step in query.steps]
    to_end = bind(query.to_end_ms, "Int64")
    conditions[0] = f"{conditions[0]} AND toUnixTimestamp64Milli(ts) <= {to_end}"
    sql = (
        f"SELECT level, count() FROM (SELECT user_key, windowFunnel({bind(query.window_ms, 'UInt64')})"
        f"(toUInt64(toUnixTimestamp64Milli(ts)), {', '.join(conditions)}) AS level FROM events "
        f"WHERE ts >= fromUnixTimestamp64Milli({bind(query.from_ms, 'Int64')}, 'UTC') "
        f"AND ts <= fromUnixTimestamp64Milli({bind(query.scan_end_ms, 'Int64')}, 'UTC') GROUP BY user_key) "
        "GROUP BY level ORDER BY level"
    )
    return sql, params


def text_import_rates(source: Path, rows: int) -> dict[str, int]:
    """Import rate of the same events as NDJSON and as CSV (`rows` of them, timestamps as epoch ms)."""
    from funnels.ingest.importer import import_files

    sample = pq.read_table(source).slice(0, rows)
    sample = sample.set_column(
        sample.schema.get_field_index("timestamp"), "timestamp", sample.column("timestamp").cast(pa.int64())
    )
    ndjson, csv = DATA / f"{source.stem}-{rows}.ndjson", DATA / f"{source.stem}-{rows}.csv"
    if not ndjson.exists():
        with ndjson.open("wb") as out:
            for row in sample.to_pylist():  # NDJSON carries properties as an object, CSV as JSON text
                out.write(orjson.dumps({**row, "properties": orjson.loads(row["properties"])}) + b"\n")
    if not csv.exists():
        pacsv.write_csv(sample, csv)
    rates = {}
    for path in (ndjson, csv):
        data_dir = DATA / "dir-text"
        shutil.rmtree(data_dir, ignore_errors=True)
        svc = Services.open(data_dir)
        try:
            report = import_files(svc.events, [path])
        finally:
            svc.close()
        assert report.imported == rows and report.skipped == 0, (path, report.skipped, report.errors[:3])
        rates[f"import_{path.suffix[1:]}_events_per_s"] = round(report.imported / report.seconds)
    return rates


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def time_analyses(svc: Services, closed: dict[str, str], repeat: int) -> dict[str, object]:
    """Issue 14's analyses of the closed funnel (time to convert, trends, people), raw and stitched, each run
    interleaved with the plain closed funnel (the target's 1.00×) and with the funnel of its own parameters
    (the same breakdown: what the analysis adds to the per-user SQL they share); checks that their users
    agree with the funnel's."""
    now_ms = int(time.time() * 1000)
    analyses: dict[str, tuple[Callable[[dict[str, Any]], Any], Callable[[Any, Any], dict[str, Any]], dict[str, str]]] = {
        "time to convert 1→3, auto bins": (parse_time_to_convert_query, run_time_to_convert, {"from_step": "1", "to_step": "3"}),
        "time to convert 1→3, 100 bins": (parse_time_to_convert_query, run_time_to_convert, {"from_step": "1", "to_step": "3", "bins": "100"}),
        "time to convert 1→3 + breakdown utm_source": (parse_time_to_convert_query, run_time_to_convert, {"from_step": "1", "to_step": "3", "breakdown": "utm_source"}),
        "trends by day": (parse_trends_query, lambda store, q: run_trends(store, q, now_ms), {"interval": "day"}),
        "trends by week + breakdown utm_source": (parse_trends_query, lambda store, q: run_trends(store, q, now_ms), {"interval": "week", "breakdown": "utm_source"}),
        "people reached step 2, a page of 100": (parse_people_query, run_people, {"step": "2"}),
        "people dropped at step 3, a page of 10,000 after a cursor": (parse_people_query, run_people, {"step": "3", "outcome": "dropped", "limit": "10000", "cursor": "8000000000000000"}),
    }  # fmt: skip
    results: dict[str, object] = {}
    for identity in ("raw", "stitched"):
        plain = parse_funnel_query({**closed, "identity": identity})
        for name, (parse, run, extra) in analyses.items():
            query = parse({**closed, **extra, "identity": identity})
            own = query.funnel  # the funnel of the same parameters (with the breakdown, if any)
            funnel_rows = run_funnel(svc.events, own)["data"]
            body = run(svc.events, query)  # untimed warm-up, and the check
            last = [row["users"] for row in funnel_rows if row["step"] == 3]
            if "outcome" in extra:
                second = [row["users"] for row in funnel_rows if row["step"] == 2]
                assert body["users"] == sum(second) - sum(last), name
            elif "step" in extra:
                assert body["users"] == sum(row["users"] for row in funnel_rows if row["step"] == 2), name
            elif "from_step" in extra:
                assert [group["users"] for group in body["data"]] == last, name
            else:
                first = [row["users"] for row in funnel_rows if row["step"] == 1]
                assert sum(row["entered"] for row in body["data"]) == sum(first), name
                assert sum(row["converted"] for row in body["data"]) == sum(last), name
            times: dict[str, list[float]] = {"analysis": [], "own": [], "plain": []}
            for _ in range(repeat):  # interleaved, so background load hits all alike
                times["analysis"] += timed(lambda q=query, r=run: r(svc.events, q), 1)
                times["own"] += timed(lambda f=own: run_funnel(svc.events, f), 1)
                times["plain"] += timed(lambda f=plain: run_funnel(svc.events, f), 1)
            medians = {key: statistics.median(values) for key, values in times.items()}
            results[f"{name}, {identity} ms"] = round(medians["analysis"] * 1000)
            results[f"{name}, {identity} × closed"] = round(medians["analysis"] / medians["plain"], 2)
            if "breakdown" in extra:
                results[f"{name}, {identity} × its funnel"] = round(medians["analysis"] / medians["own"], 2)
    return results


def time_strict(svc: Services, closed: dict[str, str], repeat: int) -> dict[str, object]:
    """The strict funnel (`funnel_type=strict`, which folds every event of a user, not only step events)
    next to the closed funnel of the same parameters (the target's 1.00×), raw and stitched, with and
    without a breakdown, interleaved; checks that strict never counts more users than closed."""
    results: dict[str, object] = {}
    for identity in ("raw", "stitched"):
        for label, extra in (
            ("strict 3 steps", {}),
            ("strict + breakdown utm_source", {"breakdown": "utm_source"}),
        ):
            plain = parse_funnel_query({**closed, **extra, "identity": identity})
            strict = parse_funnel_query({**closed, **extra, "identity": identity, "funnel_type": "strict"})
            strict_users = [row["users"] for row in run_funnel(svc.events, strict)["data"]]  # warm-up, check
            closed_users = [row["users"] for row in run_funnel(svc.events, plain)["data"]]
            if not extra:
                assert all(s <= c for s, c in zip(strict_users, closed_users, strict=True)), label
                results[f"{label}, {identity} users"] = strict_users
            times: dict[str, list[float]] = {"strict": [], "closed": []}
            for _ in range(repeat):  # interleaved, so background load hits both alike
                times["strict"] += timed(lambda q=strict: run_funnel(svc.events, q), 1)
                times["closed"] += timed(lambda q=plain: run_funnel(svc.events, q), 1)
            medians = {key: statistics.median(values) for key, values in times.items()}
            results[f"{label}, {identity} ms"] = round(medians["strict"] * 1000)
            results[f"{label}, {identity} × closed"] = round(medians["strict"] / medians["closed"], 2)
    return results


def time_variants(svc: Services, closed: dict[str, str], repeat: int) -> dict[str, object]:
    """Issue 14's variants of the closed funnel, each interleaved with the plain closed funnel (target ≤ 2×):
    a breakdown by an event property with each attribution (next to the breakdown by a column they replace),
    and the comparison with the previous period (two funnels). Raw and stitched."""
    variants: dict[str, dict[str, str]] = {
        "breakdown utm_source (a column)": {"breakdown": "utm_source"},
        "breakdown properties.chain, first touch": {"breakdown": "properties.chain"},
        "breakdown properties.chain, last touch": {"breakdown": "properties.chain", "breakdown_attribution": "last_touch"},
        "breakdown properties.chain, step:3": {"breakdown": "properties.chain", "breakdown_attribution": "step:3"},
        "compare=previous_period": {"compare": "previous_period"},
    }  # fmt: skip
    results: dict[str, object] = {}
    for identity in ("raw", "stitched"):
        plain = parse_funnel_query({**closed, "identity": identity})
        for label, extra in variants.items():
            query = parse_compared_query({**closed, **extra, "identity": identity})
            body = run_compared(svc.events, query)  # untimed warm-up, and the check
            total = sum(row["users"] for row in body["data"] if row["step"] == 1)
            assert total == run_funnel(svc.events, plain)["data"][0]["users"], label
            times: dict[str, list[float]] = {"variant": [], "closed": []}
            for _ in range(repeat):  # interleaved, so background load hits both alike
                times["variant"] += timed(lambda q=query: run_compared(svc.events, q), 1)
                times["closed"] += timed(lambda q=plain: run_funnel(svc.events, q), 1)
            medians = {key: statistics.median(values) for key, values in times.items()}
            results[f"{label}, {identity} ms"] = round(medians["variant"] * 1000)
            results[f"{label}, {identity} × closed"] = round(medians["variant"] / medians["closed"], 2)
    return results


def time_person(svc: Services, closed: dict[str, str], repeat: int) -> dict[str, object]:
    """The breakdown by a person property (`person.plan`: the value on each user's latest identify, read
    from identify events of any time before the scan's end and joined to the funnel's users) next to the
    breakdown by an event property (`properties.chain`, first touch) and the plain closed funnel (the
    target's 1.00×; ≤ 2×), all three interleaved, raw and stitched; checks that the groups add up to the
    funnel's users at every step."""
    results: dict[str, object] = {}
    for identity in ("raw", "stitched"):
        plain = parse_funnel_query({**closed, "identity": identity})
        person = parse_funnel_query({**closed, "identity": identity, "breakdown": "person.plan"})
        event = parse_funnel_query({**closed, "identity": identity, "breakdown": "properties.chain"})
        closed_users = [row["users"] for row in run_funnel(svc.events, plain)["data"]]
        for query in (person, event):  # untimed warm-up, and the check (top 8 keep every group)
            rows = run_funnel(svc.events, query)["data"]
            by_step = [sum(row["users"] for row in rows if row["step"] == k) for k in (1, 2, 3)]
            assert by_step == closed_users, (query.breakdown, by_step, closed_users)
        results[f"person.plan groups, {identity}"] = {
            row["breakdown"]: row["users"]
            for row in run_funnel(svc.events, person)["data"]
            if row["step"] == 1
        }
        times: dict[str, list[float]] = {"person": [], "event": [], "closed": []}
        for _ in range(repeat):  # interleaved, so background load hits all alike
            times["person"] += timed(lambda q=person: run_funnel(svc.events, q), 1)
            times["event"] += timed(lambda q=event: run_funnel(svc.events, q), 1)
            times["closed"] += timed(lambda q=plain: run_funnel(svc.events, q), 1)
        medians = {key: statistics.median(values) for key, values in times.items()}
        for key, label in (("person", "breakdown person.plan"), ("event", "breakdown properties.chain")):
            results[f"{label}, {identity} ms"] = round(medians[key] * 1000)
            results[f"{label}, {identity} × closed"] = round(medians[key] / medians["closed"], 2)
        results[f"closed, {identity} ms (interleaved with the breakdowns)"] = round(medians["closed"] * 1000)
        results[f"breakdown person.plan, {identity} × properties.chain"] = round(
            medians["person"] / medians["event"], 2
        )
    return results


EXCLUSIONS = {
    # a swap on base between the connect and the ethereum swap (an exclusion no step matches)
    "exclusions: swap on base, 2 → 3": [
        {
            "type": "track",
            "event": "swap",
            "filters": [{"operand": "chain", "operator": "equals", "value": "base"}],
            "from_step": 2,
            "to_step": 3,
        }
    ],
    # another page view between the page and the connect: step 1's own event, so every one re-arms
    "exclusions: page, 1 → 2": [{"type": "event", "event": "page", "from_step": 1, "to_step": 2}],
}


def time_exclusions(svc: Services, closed: dict[str, str], repeat: int) -> dict[str, object]:
    """The closed funnel with exclusion steps (`exclusions`) next to the plain closed funnel (the target's
    1.00×; ≤ 2×), raw and stitched, interleaved; checks that exclusions keep step 1 and never add users."""
    results: dict[str, object] = {}
    for identity in ("raw", "stitched"):
        plain = parse_funnel_query({**closed, "identity": identity})
        closed_users = [row["users"] for row in run_funnel(svc.events, plain)["data"]]
        for label, exclusions in EXCLUSIONS.items():
            query = parse_funnel_query(
                {**closed, "identity": identity, "exclusions": orjson.dumps(exclusions)}
            )
            users = [row["users"] for row in run_funnel(svc.events, query)["data"]]  # warm-up, check
            assert users[0] == closed_users[0], label
            assert all(u <= c for u, c in zip(users, closed_users, strict=True)), label
            results[f"{label}, {identity} users"] = users
            times: dict[str, list[float]] = {"exclusions": [], "closed": []}
            for _ in range(repeat):  # interleaved, so background load hits both alike
                times["exclusions"] += timed(lambda q=query: run_funnel(svc.events, q), 1)
                times["closed"] += timed(lambda q=plain: run_funnel(svc.events, q), 1)
            medians = {key: statistics.median(values) for key, values in times.items()}
            results[f"{label}, {identity} ms"] = round(medians["exclusions"] * 1000)
            results[f"{label}, {identity} × closed"] = round(medians["exclusions"] / medians["closed"], 2)
    return results


HELD: dict[str, dict[str, object]] = {
    "hold_constant properties.chain": {},
    # strict and exclusions: each value's fold over all the user's events, once per value (`_by_value`)
    "strict + hold_constant properties.chain": {"funnel_type": "strict"},
    "exclusions (swap on base, 2 → 3) + hold_constant properties.chain": {
        "exclusions": orjson.dumps(EXCLUSIONS["exclusions: swap on base, 2 → 3"]).decode()
    },
    "exclusions (page, 1 → 2) + hold_constant properties.chain": {
        "exclusions": orjson.dumps(EXCLUSIONS["exclusions: page, 1 → 2"]).decode()
    },
}


def time_held(svc: Services, closed: dict[str, str], repeat: int) -> dict[str, object]:
    """The funnel holding `properties.chain` constant (closed; strict; with exclusions) next to the plain
    closed funnel (≤ 2×) and to the same funnel without it, raw and stitched, interleaved; checks it keeps
    step 1's users and never adds any."""
    results: dict[str, object] = {}
    for label, extra in HELD.items():
        for identity in ("raw", "stitched"):
            plain = parse_funnel_query({**closed, "identity": identity})
            own = parse_funnel_query({**closed, **extra, "identity": identity})
            query = parse_funnel_query(
                {**closed, **extra, "identity": identity, "hold_constant": '["properties.chain"]'}
            )
            own_users = [row["users"] for row in run_funnel(svc.events, own)["data"]]
            users = [row["users"] for row in run_funnel(svc.events, query)["data"]]  # warm-up, check
            assert users[0] == own_users[0] and all(u <= c for u, c in zip(users, own_users, strict=True))
            results[f"{label}, {identity} users"] = users
            times: dict[str, list[float]] = {"held": [], "closed": [], "own": []}
            for _ in range(repeat):  # interleaved, so background load hits all alike
                times["held"] += timed(lambda q=query: run_funnel(svc.events, q), 1)
                times["closed"] += timed(lambda q=plain: run_funnel(svc.events, q), 1)
                if extra:
                    times["own"] += timed(lambda q=own: run_funnel(svc.events, q), 1)
            medians = {key: statistics.median(values) for key, values in times.items() if values}
            results[f"{label}, {identity} ms"] = round(medians["held"] * 1000)
            results[f"{label}, {identity} × closed"] = round(medians["held"] / medians["closed"], 2)
            if extra:
                results[f"{label}, {identity} × without hold_constant"] = round(
                    medians["held"] / medians["own"], 2
                )
    return results


def add_organizations(svc: Services, users: int, per_group: int = 10) -> str:
    """Memberships for `aggregate_by`: organizations of `per_group` consecutive users (`u0`…), every eleventh
    user in none and every hundredth also in the next organization, made as identify would make them
    (instances, ids, relationships, through `funnels.store.identity`); returns the model's name."""
    model = "organization"
    with svc.state.write() as connection:
        if stored_identity.memberships_generation(connection, model).startswith("0:"):
            pairs = []
            for group in range(-(-users // per_group)):
                key = stored_identity.create_instance(connection, model, f"org{group}", None, "{}", START_MS)
                stored_identity.claim_ids(connection, model, [f"org{group}"], key, 0)
            for user in range(users):
                if user % 11 == 0:
                    continue
                key = stored_identity.create_instance(
                    connection, "customer", f"u{user}", None, "{}", START_MS
                )
                stored_identity.claim_ids(connection, "customer", [f"u{user}"], key, 0)
                pairs.append(
                    stored_identity.Relationship(model, f"org{user // per_group}", "customer", f"u{user}")
                )
                if user % 100 == 1:
                    second = f"org{(user // per_group + 1) % -(-users // per_group)}"
                    pairs.append(stored_identity.Relationship(model, second, "customer", f"u{user}"))
            stored_identity.relate(connection, pairs, START_MS)
    return model


def time_grouped(svc: Services, closed: dict[str, str], repeat: int, users: int) -> dict[str, object]:
    """The closed funnel by organization (`aggregate_by`: ~10 users each) next to the plain closed funnel
    (≤ 2×), raw and stitched, interleaved; the memberships' first load (state store → event store) timed
    apart, as the first query after a relationship changes pays it."""
    started = time.perf_counter()
    model = add_organizations(svc, users)
    results: dict[str, object] = {
        "aggregate_by: making the memberships s": round(time.perf_counter() - started, 1)
    }
    started = time.perf_counter()
    load_groups(svc.state, svc.events, model)
    results["aggregate_by: first load ms"] = round((time.perf_counter() - started) * 1000)
    results["aggregate_by: unchanged load ms"] = round(
        statistics.median(timed(lambda: load_groups(svc.state, svc.events, model), 5)) * 1000
    )
    for identity in ("raw", "stitched"):
        plain = parse_funnel_query({**closed, "identity": identity})
        query = parse_funnel_query({**closed, "identity": identity, "aggregate_by": model})
        groups = [row["users"] for row in run_funnel(svc.events, query)["data"]]  # warm-up
        results[f"aggregate_by organization, {identity} groups"] = groups
        times: dict[str, list[float]] = {"grouped": [], "closed": []}
        for _ in range(repeat):  # interleaved, so background load hits both alike
            times["grouped"] += timed(
                lambda q=query: (load_groups(svc.state, svc.events, model), run_funnel(svc.events, q)), 1
            )
            times["closed"] += timed(lambda q=plain: run_funnel(svc.events, q), 1)
        medians = {key: statistics.median(values) for key, values in times.items()}
        results[f"aggregate_by organization, {identity} ms"] = round(medians["grouped"] * 1000)
        results[f"aggregate_by organization, {identity} × closed"] = round(
            medians["grouped"] / medians["closed"], 2
        )
    return results


def add_organization_plans(svc: Services, model: str, users: int, per_group: int = 10) -> int:
    """1–3 identify events of each organization of `add_organizations` (stored under its primary id,
    `org<N>`, as `POST /api/v1/identify` stores them) with a `plan`, at times uniform from a year before the
    span to its end, for 9 organizations in 10 (the rest have none: `(none)`); inserted once (a later run on
    the same data directory finds them). Returns how many the events table holds."""
    stored = svc.events.query(
        "SELECT count() FROM events WHERE type = 'identify' AND startsWith(user_key, 'org')"
    ).first()
    if stored and int(stored[0]):
        return int(stored[0])
    rng = np.random.default_rng(8)
    groups = -(-users // per_group)
    chosen = [group for group in range(groups) if group % 10]
    who = np.repeat(chosen, rng.integers(1, 4, len(chosen)))
    times = START_MS - YEAR_MS + rng.integers(0, YEAR_MS + SPAN_DAYS * 86_400_000, len(who))
    plans = rng.choice(["free", "team", "business", "enterprise"], len(who))
    events = [
        Event(
            event_id=f"orgplan{index}",
            type="identify",
            event="identify",
            user_key=f"org{group}",
            user_id=f"org{group}",
            ts_ms=int(ts),
            received_ms=int(ts),
            properties={"plan": str(plan)},
        )
        for index, (group, ts, plan) in enumerate(zip(who, times, plans, strict=True))
    ]
    for start in range(0, len(events), 100_000):
        svc.events.insert_events(events[start : start + 100_000])
    return len(events)


def time_grouped_person(svc: Services, closed: dict[str, str], repeat: int, users: int) -> dict[str, object]:
    """The closed funnel by organization broken down by the organization's own plan (`aggregate_by` with
    `breakdown=person.plan`: each group joined by its hash to its latest identify's plan) next to the same
    funnel by organization without a breakdown and the plain closed funnel (≤ 2×), raw and stitched,
    interleaved; checks that the plans add up to the organizations at every step."""
    model = add_organizations(svc, users)
    results: dict[str, object] = {
        "aggregate_by + person.plan: organization identifies": add_organization_plans(svc, model, users)
    }
    load_groups(svc.state, svc.events, model)
    for identity in ("raw", "stitched"):
        plain = parse_funnel_query({**closed, "identity": identity})
        grouped = parse_funnel_query({**closed, "identity": identity, "aggregate_by": model})
        person = parse_funnel_query(
            {**closed, "identity": identity, "aggregate_by": model, "breakdown": "person.plan"}
        )
        groups = [row["users"] for row in run_funnel(svc.events, grouped)["data"]]  # warm-up, and the check
        rows = run_funnel(svc.events, person)["data"]
        assert [sum(row["users"] for row in rows if row["step"] == k) for k in (1, 2, 3)] == groups
        results[f"aggregate_by + person.plan, {identity} groups"] = {
            row["breakdown"]: row["users"] for row in rows if row["step"] == 1
        }
        times: dict[str, list[float]] = {"person": [], "grouped": [], "closed": []}
        for _ in range(repeat):  # interleaved, so background load hits all alike
            times["person"] += timed(lambda q=person: run_funnel(svc.events, q), 1)
            times["grouped"] += timed(lambda q=grouped: run_funnel(svc.events, q), 1)
            times["closed"] += timed(lambda q=plain: run_funnel(svc.events, q), 1)
        medians = {key: statistics.median(values) for key, values in times.items()}
        label = "aggregate_by organization + breakdown person.plan"
        results[f"{label}, {identity} ms"] = round(medians["person"] * 1000)
        results[f"{label}, {identity} × closed"] = round(medians["person"] / medians["closed"], 2)
        results[f"{label}, {identity} × aggregate_by"] = round(medians["person"] / medians["grouped"], 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--anonymous", type=float, default=0.0, help="fraction of users starting anonymous")
    parser.add_argument(
        "--identified", type=float, default=0.5, help="fraction of users with identify events setting a plan"
    )
    parser.add_argument(
        "--analyses-only",
        action="store_true",
        help="time only strict and the funnel's analyses (time to convert, trends) on the data the last run imported",
    )
    args = parser.parse_args()
    if args.analyses_only:
        svc = Services.open(DATA / "dir")
        try:
            closed = {**BASE, "steps": orjson.dumps(FUNNEL).decode()}
            timings = (
                time_strict(svc, closed, min(args.repeat, 5))
                | time_exclusions(svc, closed, min(args.repeat, 5))
                | time_held(svc, closed, min(args.repeat, 5))
                | time_analyses(svc, closed, min(args.repeat, 5))
                | time_variants(svc, closed, min(args.repeat, 5))
                | time_person(svc, closed, min(args.repeat, 5))
                | time_grouped(svc, closed, min(args.repeat, 5), args.users)
                | time_grouped_person(svc, closed, min(args.repeat, 5), args.users)
            )
            print(json.dumps(timings, indent=2, ensure_ascii=False))
        finally:
            svc.close()
        return

    suffix = f"-anonymous{args.anonymous:g}" if args.anonymous else ""
    suffix += f"-identified{args.identified:g}" if args.identified else ""
    source = DATA / f"events-{args.events}-{args.users}{suffix}.parquet"
    if not source.exists():
        started = time.perf_counter()
        generate(source, args.events, args.users, args.anonymous, args.identified)
        print(f"generated {source.name} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    data_dir = DATA / "dir"
    shutil.rmtree(data_dir, ignore_errors=True)
    svc = Services.open(data_dir)
    try:
        from funnels.ingest.importer import import_files

        report = import_files(svc.events, [source])
        import_rate = report.imported / report.seconds
        svc.events.execute("OPTIMIZE TABLE events FINAL")  # a settled table, as after background merges
        svc.events.execute(f"OPTIMIZE TABLE {LINKS_TABLE} FINAL")
        links = svc.events.query(f"SELECT count() FROM {LINKS_TABLE}").first()

        results: dict[str, object] = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "events": report.imported,
            "users": args.users,
            "anonymous": args.anonymous,
            "identified": args.identified,
            "identity_links": int(links[0]) if links else 0,
            "import_events_per_s": round(import_rate),
        }
        queries = {
            "closed 3 steps (medians)": {**BASE, "steps": orjson.dumps(FUNNEL).decode()},
            "open 3 steps": {**BASE, "steps": orjson.dumps(FUNNEL).decode(), "funnel_type": "open"},
            "closed + breakdown utm_source": {
                **BASE,
                "steps": orjson.dumps(FUNNEL).decode(),
                "breakdown": "utm_source",
            },
            "closed, overlapping steps (page → connect → page)": {
                **BASE,
                "steps": orjson.dumps([FUNNEL[0], FUNNEL[1], {**FUNNEL[0], "name": "page::2"}]).decode(),
            },
        }
        closed = queries["closed 3 steps (medians)"]
        wf_sql, wf_params = window_funnel_sql(closed)
        raw = parse_funnel_query({**closed, "identity": "raw"})  # windowFunnel counts user keys too
        stitched = parse_funnel_query(closed)
        # One untimed warm-up each (caches, query compilation, the dictionary's load), as a server would be.
        run_funnel(svc.events, raw)
        run_funnel(svc.events, stitched)
        svc.events.query(wf_sql, wf_params)
        raw_times, stitched_times, wf_times = [], [], []
        for _ in range(args.repeat):  # interleaved, so background load hits all alike
            raw_times += timed(lambda: run_funnel(svc.events, raw), 1)
            stitched_times += timed(lambda: run_funnel(svc.events, stitched), 1)
            wf_times += timed(lambda: svc.events.query(wf_sql, wf_params), 1)
        levels = {int(level): int(count) for level, count in svc.events.query(wf_sql, wf_params).rows}
        users = [row["users"] for row in run_funnel(svc.events, raw)["data"]]
        assert users == [sum(c for lv, c in levels.items() if lv >= k) for k in (1, 2, 3)], (users, levels)
        results["closed_ms_median"] = round(statistics.median(raw_times) * 1000)
        results["window_funnel_ms_median"] = round(statistics.median(wf_times) * 1000)
        results["ratio"] = round(statistics.median(raw_times) / statistics.median(wf_times), 2)
        results["stitched_closed_ms_median"] = round(statistics.median(stitched_times) * 1000)
        results["stitched_ratio_to_raw"] = round(
            statistics.median(stitched_times) / statistics.median(raw_times), 2
        )
        results["closed users raw"] = users
        results["closed users stitched"] = [row["users"] for row in run_funnel(svc.events, stitched)["data"]]
        results["dictionary_reload_ms"] = round(
            statistics.median(
                timed(lambda: svc.events.execute(f"SYSTEM RELOAD DICTIONARY {PERSONS_DICTIONARY}"), 3)
            )
            * 1000
        )
        for name, params in list(queries.items())[1:]:
            for identity in ("raw", "stitched"):
                query = parse_funnel_query({**params, "identity": identity})
                results[f"{name}, {identity} ms"] = round(
                    statistics.median(timed(lambda q=query: run_funnel(svc.events, q), 3)) * 1000
                )
        results |= time_strict(svc, closed, min(args.repeat, 5))
        results |= time_exclusions(svc, closed, min(args.repeat, 5))
        results |= time_held(svc, closed, min(args.repeat, 5))
        results |= time_analyses(svc, closed, min(args.repeat, 5))
        results |= time_variants(svc, closed, min(args.repeat, 5))
        results |= time_person(svc, closed, min(args.repeat, 5))
        results |= time_grouped(svc, closed, min(args.repeat, 5), args.users)
        results |= time_grouped_person(svc, closed, min(args.repeat, 5), args.users)
    finally:
        svc.close()
    results |= text_import_rates(source, rows=min(1_000_000, args.events))
    DATA.mkdir(exist_ok=True)
    (DATA / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
