"""Identity stitching under live traffic (issue 12): what the shipper's batches cost with the identity-links
view, and a stitched funnel's latency while linked batches keep arriving. Not a test: it prints figures for
docs/benchmarks.md (and writes them to bench/data/stitching_live.json).

    .venv/bin/python bench/stitching_live.py [--links 300000] [--ship-events 200000] [--queries 25]
                                             [--batch-size 200] [--new-links 0] [--active 5000]

Setup: a fresh data directory holding `--links` visitors who landed anonymously and signed up (a page view
with the anonymous id alone, an identify with both ids, a connect with both), and as many who never did,
inserted in blocks of 50,000 with the view on: `--links` identity links, the dictionary's size.

1. Shipping. `--ship-events` events of visitors who have identified (analytics.js then sends both ids on
   every event: each event repeats a known link) are appended to the event log, then shipped by the
   `Shipper` in its batches of 10,000; events/s = events ÷ the time of `flush()`. First from visitors drawn
   from all `--links` of them (the worst case for the store's memory of recent keys: most of a batch's
   keys are not in it), then from `--active` of them (a site's visitors active at one time).
2. A stitched funnel under a stream. A thread appends `--batch-size` such events to the log and ships them
   every 0.2 s (the shipper's interval), `--new-links` of them in each batch the identify of a visitor not
   seen before (a new link). Meanwhile the closed 3-step funnel (page → connect → swap) runs stitched
   `--queries` times, back to back; its latency (median, p90) and how many of the queries reloaded the
   persons dictionary first. Then the same funnel with the stream stopped, as the floor.

Last, the lookup a batch makes for keys the store does not remember (`EventStore._stored_links`, by the
links table's primary key) is timed for 10, 100 and 1,000 random keys, and the dictionary's reload.
So is a People view's lookup of the keys linked to a user (`keys_linked_to`, by the keys-by-user table)
next to the scan of every link it replaces (`keys_linked_to_by_scan_ms`, the same SQL as before).
`longest_stall_ms`: the longest the process stood still (see `Stalls`); over 500, run again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import parse_funnel_query
from funnels.events import Event
from funnels.services import Services
from funnels.store import eventlog
from funnels.store.events import ARROW_SCHEMA, LINKS_TABLE, PERSONS_DICTIONARY, EventStore

DATA = Path(__file__).parent / "data"
START_MS = 1_775_001_600_000  # 2026-04-01
SPAN_MS = 30 * 86_400_000
STREAM_MS = START_MS + SPAN_MS  # streamed events come after every stored one
STEPS = [
    {"type": "event", "event": "page", "name": "page::0"},
    {"type": "track", "event": "connect", "name": "connect::1"},
    {"type": "track", "event": "swap", "name": "swap::2"},
]
QUERY = {"date_from": "2026-04-01", "date_to": "2026-05-15", "steps": orjson.dumps(STEPS).decode()}


def history(links: int, seed: int = 7) -> pa.Table:
    """`links` visitors who landed anonymously (`a<n>`) and signed up as `u<n>` (page, identify, connect),
    and `links` who stayed anonymous (`b<n>`: page, then a swap for half of them)."""
    rng = np.random.default_rng(seed)
    n = np.arange(links)
    text = pa.array(n).cast(pa.string())
    landed = START_MS + rng.integers(0, SPAN_MS, links)
    anonymous = pc.binary_join_element_wise("a", text, "")
    user = pc.binary_join_element_wise("u", text, "")
    other = pc.binary_join_element_wise("b", text, "")
    empty = pa.array(np.full(links, ""))

    def rows(kind: str, event: str, user_id: pa.Array, anonymous_id: pa.Array, ts: np.ndarray) -> pa.Table:
        key = pc.if_else(pc.equal(user_id, ""), anonymous_id, user_id)
        columns = {
            "event_id": pc.binary_join_element_wise(f"{event}-", key, ""),
            "type": pa.array(np.full(links, kind)),
            "event": pa.array(np.full(links, event)),
            "user_key": key,
            "user_id": user_id,
            "anonymous_id": anonymous_id,
            "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "received_at": pa.array(ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "properties": pa.array(np.full(links, "{}")),
            "log_seq": pa.array(np.zeros(links, np.uint64)),
        }
        return pa.table({**columns, **{f.name: empty for f in ARROW_SCHEMA if f.name not in columns}})

    table = pa.concat_tables(
        [
            rows("page", "page", empty, anonymous, landed),
            rows("identify", "identify", user, anonymous, landed + 60_000),
            rows("track", "connect", user, anonymous, landed + 120_000),
            rows("page", "page", empty, other, landed + 5_000),
            rows("track", "swap", empty, other, landed + 180_000).filter(pa.array(n % 2 == 0)),
        ]
    )
    return table.select(ARROW_SCHEMA.names).cast(ARROW_SCHEMA)


class Stream:
    """Events as analytics.js sends them once visitors have identified: both ids on each, later than
    anything stored; `new_links` of each batch identify a visitor not seen before."""

    def __init__(self, links: int, new_links: int, active: int = 0, seed: int = 11) -> None:
        self.rng = np.random.default_rng(seed)
        self.active, self.new_links = active or links, new_links  # visitors drawn from the first `active`
        self.count, self.next_new = 0, links

    def batch(self, size: int) -> list[Event]:
        events = []
        for visitor in self.rng.integers(0, self.active, size - self.new_links):
            events.append(self._event(int(visitor), "track", "connect"))
        for _ in range(self.new_links):
            events.append(self._event(self.next_new, "identify", "identify"))
            self.next_new += 1
        return events

    def _event(self, visitor: int, kind: str, name: str) -> Event:
        self.count += 1
        ts = STREAM_MS + self.count
        return Event(
            event_id=f"live-{self.count}",
            type=kind,
            event=name,
            user_key=f"u{visitor}",
            user_id=f"u{visitor}",
            anonymous_id=f"a{visitor}",
            ts_ms=ts,
            received_ms=ts,
        )


class Stalls:
    """The longest time this process stood still (stopped by another process, say, as a benchmark next to
    it may do): a thread notes the time every 20 ms, so a gap well over that means no thread ran. A run
    with a stall over half a second measured the pause, not the code: run it again."""

    def __init__(self) -> None:
        self.longest, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.02):
            now = time.monotonic()
            self.longest, last = max(self.longest, now - last), now

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return round(self.longest * 1000)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def append(svc: Services, events: list[Event]) -> None:
    with svc.state.write() as connection:
        eventlog.append(connection, events)


def ship_rate(svc: Services, stream: Stream, events: int) -> float:
    for offset in range(0, events, 10_000):
        append(svc, stream.batch(min(10_000, events - offset)))
    started = time.perf_counter()
    shipped = svc.shipper.flush()
    seconds = time.perf_counter() - started
    assert shipped == events, (shipped, events)
    return events / seconds


def reloads(store: EventStore) -> int:
    """How many times a query has (re)loaded the persons dictionary so far. Code from before the counter
    (run with PYTHONPATH pointing at an older src/ to measure "before") moves its generation on each."""
    loads = getattr(store, "persons_loads", None)
    return int(store._persons_generation if loads is None else loads)


def under_stream(svc: Services, stream: Stream, batch_size: int, queries: int) -> dict[str, object]:
    stop = threading.Event()
    shipped = [0]

    def feed() -> None:
        while not stop.is_set():
            append(svc, stream.batch(batch_size))
            shipped[0] += svc.shipper.ship_once()
            stop.wait(0.2)

    query = parse_funnel_query(QUERY)
    run_funnel(svc.events, query)  # warm: caches, the dictionary's first load
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    time.sleep(0.5)
    times, reloaded = [], 0
    try:
        for _ in range(queries):
            before = reloads(svc.events)
            times.append(timed(lambda: run_funnel(svc.events, query)))
            reloaded += reloads(svc.events) != before
    finally:
        stop.set()
        feeder.join()
    svc.shipper.flush()
    run_funnel(svc.events, query)
    quiet = [timed(lambda: run_funnel(svc.events, query)) for _ in range(7)]
    return {
        "stitched_ms_median_under_stream": round(statistics.median(times) * 1000),
        "stitched_ms_p90_under_stream": round(sorted(times)[int(len(times) * 0.9)] * 1000),
        "queries_that_reloaded": f"{reloaded} of {queries}",
        "events_streamed": shipped[0],
        "stitched_ms_median_quiet": round(statistics.median(quiet) * 1000),
    }


# What `keys_linked_to` ran before the keys-by-user table: every link grouped by key, for one user's keys.
SCAN_KEYS_LINKED_TO = (
    f"SELECT key FROM {LINKS_TABLE} GROUP BY key HAVING min(claim).3 IN {{users:Array(String)}} "
    "ORDER BY key LIMIT {limit:UInt32}"
)


def people_lookup(store: EventStore, links: int) -> dict[str, object]:
    """A People view's lookup of the keys linked to a user (`keys_linked_to`), and the scan it replaces."""
    users = [[f"u{n}"] for n in np.random.default_rng(3).integers(0, links, 7)]
    indexed = [timed(lambda u=user: store.keys_linked_to(u, 50)) for user in users]
    scans = [
        timed(lambda u=user: store.query(SCAN_KEYS_LINKED_TO, {"users": u, "limit": 50})) for user in users
    ]
    assert all(store.keys_linked_to(user, 50) == [user[0].replace("u", "a")] for user in users)
    return {
        "keys_linked_to_ms": round(statistics.median(indexed) * 1000, 1),
        "keys_linked_to_by_scan_ms": round(statistics.median(scans) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--links", type=int, default=300_000)
    parser.add_argument("--ship-events", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--new-links", type=int, default=0, help="new identifies per streamed batch")
    parser.add_argument("--active", type=int, default=5_000, help="visitors of the second shipping run")
    args = parser.parse_args()

    data_dir = DATA / "dir-stitching-live"
    shutil.rmtree(data_dir, ignore_errors=True)
    svc = Services.open(data_dir)
    try:
        table = history(args.links)
        for offset in range(0, table.num_rows, 50_000):
            svc.events.insert_arrow(table.slice(offset, 50_000))
        svc.events.execute(f"OPTIMIZE TABLE {LINKS_TABLE} FINAL")
        links = svc.events.query(f"SELECT count() FROM {LINKS_TABLE}").first()
        results: dict[str, object] = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}",
            "stored_events": table.num_rows,
            "identity_links": int(links[0]) if links else 0,
            "batch_size": args.batch_size,
            "new_links_per_batch": args.new_links,
        }
        stalls = Stalls()
        stream = Stream(args.links, new_links=0)
        results["ship_events_per_s"] = round(ship_rate(svc, stream, args.ship_events))
        active = Stream(args.links, new_links=0, active=args.active, seed=12)
        active.count = stream.count  # later events, ids of their own
        results[f"ship_events_per_s_{args.active}_active"] = round(ship_rate(svc, active, args.ship_events))
        stream.count = active.count
        stream.new_links = args.new_links
        results |= under_stream(svc, stream, args.batch_size, args.queries)
        reload = f"SYSTEM RELOAD DICTIONARY {PERSONS_DICTIONARY}"
        results["dictionary_reload_ms"] = round(
            statistics.median(timed(lambda: svc.events.execute(reload)) for _ in range(3)) * 1000
        )
        lookup = getattr(svc.events, "_stored_links", None)  # absent before: nothing was looked up
        for keys in (10, 100, 1000) if lookup else ():
            sample = [f"a{n}" for n in np.random.default_rng(keys).integers(0, args.links, keys)]
            results[f"lookup_{keys}_keys_ms"] = round(
                statistics.median(timed(lambda k=sample: lookup(k)) for _ in range(5)) * 1000, 1
            )
        if lookup:  # code from before keeps argMin states, which the scan's SQL cannot read
            results |= people_lookup(svc.events, args.links)
        results["longest_stall_ms"] = stalls.stop()
    finally:
        svc.close()
    DATA.mkdir(exist_ok=True)
    (DATA / "stitching_live.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
