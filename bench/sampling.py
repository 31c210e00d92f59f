"""`sample=` (issue 16, item 4): the closed 3-step funnel with medians answered from a sample of users next to
the exact one, interleaved in one process on one table, raw and stitched; prints the speed-up of each rate and
how far the sampled estimates are from the exact answer (in units of their stated intervals). Not a test.

    nice -n 19 .venv/bin/python bench/sampling.py [--events 10000000] [--users 1000000] [--repeat 5]
        [--anonymous 0.3] [--rates 0.1,0.01] [--reuse]

Data: `bench/run.py`'s generator (10 events per user over 44 days, 50% page, 30% connect, 20% swap; the
swap step filters on a JSON property), written once to bench/data as Parquet and imported with `funnels
import`'s importer into bench/data/sampling-dir (no OPTIMIZE: the table as imported). `--reuse`: time the
table the last run imported. Each query runs once untimed first (caches, the persons dictionary's load).
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
from typing import Any

import orjson
from bench.run import BASE, DATA, FUNNEL, generate, timed

from funnels.analytics.funnel import buckets_from_rows, build_response, run_funnel
from funnels.analytics.query import FunnelQuery, parse_funnel_query
from funnels.analytics.sql import Tables, funnel_sql
from funnels.services import Services

HASHED = "events_by_hash"  # the experiment's copy of `events`, ordered by the user key's hash


def time_hash_layout(
    svc: Services, closed: dict[str, str], rates: list[float], repeat: int
) -> dict[str, object]:
    """What a layout change would buy (raw only): a copy of the events ordered by (sipHash64(user_key),
    user_key, ts, event_id) with `SAMPLE BY sipHash64(user_key)`, so a sample is a contiguous range of the
    sort key and ClickHouse reads only its granules. The exact funnel on the copy, next to the exact one on
    `events` (what the layout costs everyone) and to `SAMPLE r` on the copy (what sampling could gain),
    interleaved. A SAMPLE BY on the key's hash cannot sample persons whole: stitched funnels would still
    need the filter."""
    svc.events.execute(f"DROP TABLE IF EXISTS {HASHED}")
    svc.events.execute(
        f"CREATE TABLE {HASHED} AS events ENGINE = MergeTree PARTITION BY toYYYYMM(ts) "
        "ORDER BY (sipHash64(user_key), user_key, ts, event_id) SAMPLE BY sipHash64(user_key)"
    )
    svc.events.execute(f"INSERT INTO {HASHED} SELECT * FROM events")
    exact = parse_funnel_query({**closed, "identity": "raw"})

    def on(query: FunnelQuery, events: str) -> dict[str, object]:
        sql, params = funnel_sql(query, Tables(events=events))
        return build_response(query, buckets_from_rows(query, svc.events.query(sql, params).rows), {})

    runs = {"events exact": lambda: run_funnel(svc.events, exact), "hashed exact": lambda: on(exact, HASHED)}
    for rate in rates:
        sampled = parse_funnel_query({**closed, "identity": "raw", "sample": str(rate)})
        runs[f"hashed SAMPLE {rate}"] = lambda q=sampled, r=rate: on(q, f"{HASHED} SAMPLE {r}")
    assert runs["hashed exact"]()["data"] == runs["events exact"]()["data"]  # also the warm-ups
    for rate in rates:  # SAMPLE r is the filter's own sample: the same users, so the same answer
        sampled = parse_funnel_query({**closed, "identity": "raw", "sample": str(rate)})
        assert runs[f"hashed SAMPLE {rate}"]()["data"] == run_funnel(svc.events, sampled)["data"]
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            times[name] += timed(run, 1)
    medians = {name: statistics.median(values) for name, values in times.items()}
    results: dict[str, object] = {
        f"layout: {name} ms": round(value * 1000) for name, value in medians.items()
    }
    results["layout: hashed exact × events exact"] = round(
        medians["hashed exact"] / medians["events exact"], 2
    )
    for rate in rates:
        results[f"layout: SAMPLE {rate} speed-up over events exact"] = round(
            medians["events exact"] / medians[f"hashed SAMPLE {rate}"], 2
        )
    return results


def misses(exact: dict[str, Any], sampled: dict[str, Any]) -> dict[str, object]:
    """Per step: the exact users, the sampled estimate, whether the exact count is inside the estimate's
    interval, and the same for the conversion from the start."""
    rows = []
    for whole, part in zip(exact["data"], sampled["data"], strict=True):
        low, high = part["users_interval"]
        rate = part["conversion_from_start_interval"]
        rows.append(
            {
                "exact": whole["users"],
                "estimate": part["users"],
                "interval": [low, high],
                "inside": low <= whole["users"] <= high,
                "conversion exact": whole["conversion_from_start"],
                "conversion sampled": part["conversion_from_start"],
                "conversion inside": rate is not None
                and rate[0] <= (whole["conversion_from_start"] or 0) <= rate[1],
            }
        )
    return {"steps": rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--anonymous", type=float, default=0.3)
    parser.add_argument("--rates", default="0.1,0.01")
    parser.add_argument("--reuse", action="store_true", help="time the table the last run imported")
    parser.add_argument("--layout", action="store_true", help="also time a hash-ordered SAMPLE BY copy (raw)")
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",")]
    data_dir = DATA / "sampling-dir"
    results: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "events": args.events,
        "users": args.users,
        "anonymous": args.anonymous,
    }
    if not args.reuse:
        source = DATA / f"events-{args.events}-{args.users}-anonymous{args.anonymous:g}.parquet"
        if not source.exists():
            started = time.perf_counter()
            generate(source, args.events, args.users, args.anonymous)
            print(f"generated {source.name} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        shutil.rmtree(data_dir, ignore_errors=True)
    svc = Services.open(data_dir)
    try:
        if not args.reuse:
            from funnels.ingest.importer import import_files

            report = import_files(svc.events, [source])
            results["import_events_per_s"] = round(report.imported / report.seconds)
        closed = {**BASE, "steps": orjson.dumps(FUNNEL).decode()}
        for identity in ("raw", "stitched"):
            exact = parse_funnel_query({**closed, "identity": identity})
            sampled = {
                rate: parse_funnel_query({**closed, "identity": identity, "sample": str(rate)})
                for rate in rates
            }
            exact_body = run_funnel(svc.events, exact)  # untimed warm-ups, and the answers compared
            bodies = {rate: run_funnel(svc.events, query) for rate, query in sampled.items()}
            times: dict[str, list[float]] = {"exact": [], **{str(rate): [] for rate in rates}}
            for _ in range(args.repeat):  # interleaved, so background load hits all alike
                times["exact"] += timed(lambda q=exact: run_funnel(svc.events, q), 1)
                for rate, query in sampled.items():
                    times[str(rate)] += timed(lambda q=query: run_funnel(svc.events, q), 1)
            medians = {key: statistics.median(values) for key, values in times.items()}
            results[f"closed, {identity}, exact ms"] = round(medians["exact"] * 1000)
            results[f"closed, {identity}, exact users"] = [row["users"] for row in exact_body["data"]]
            for rate in rates:
                results[f"closed, {identity}, sample {rate} ms"] = round(medians[str(rate)] * 1000)
                results[f"closed, {identity}, sample {rate} speed-up"] = round(
                    medians["exact"] / medians[str(rate)], 2
                )
                results[f"closed, {identity}, sample {rate} vs exact"] = misses(exact_body, bodies[rate])
        if args.layout:
            results |= time_hash_layout(svc, closed, rates, args.repeat)
    finally:
        svc.close()
    print(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
