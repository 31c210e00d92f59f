"""The dashboard's lookups (`/v0/events/names`, `/properties`, `/values`, `/v0/funnels`' date extent) on the
events of `bench/run.py` (same generator: 50% page views, 30% connect, 20% swap, 44 days), imported into a
fresh data directory and `OPTIMIZE`d. Each lookup runs once untimed, then `--repeat` times; medians. Names
are also timed without the `names_by_day` projection (the same SQL with `optimize_use_projections = 0`),
which is what the projection saves.

    .venv/bin/python bench/catalog.py [--events 2000000] [--users 200000] [--repeat 7]

Not a test: it prints figures for docs/benchmarks.md and writes them to bench/data/catalog.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from funnels.analytics import catalog
from funnels.ingest.importer import import_files
from funnels.services import Services
from funnels.store.events import EventStore

sys.path.insert(0, str(Path(__file__).parent))
from run import DATA, generate  # bench/run.py, a script beside this one

NO_PROJECTION = " SETTINGS optimize_use_projections = 0"


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm caches, as in a running server
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 1)


def names_without_projection(store: EventStore, query: catalog.NamesQuery) -> None:
    for sql, params in (catalog.types_sql(query), catalog.names_sql(query)):
        store.query(sql + NO_PROJECTION, params)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=0, help="default: events / 10")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    users = args.users or args.events // 10

    source = DATA / f"events-{args.events}-{users}.parquet"
    if not source.exists():
        generate(source, args.events, users)
    data_dir = DATA / "dir-catalog"
    shutil.rmtree(data_dir, ignore_errors=True)
    svc = Services.open(data_dir)
    results: dict[str, Any] = {"events": args.events, "users": users}
    try:
        started = time.perf_counter()
        report = import_files(svc.events, [source])
        results["import_s"] = round(time.perf_counter() - started, 1)
        svc.events.execute("OPTIMIZE TABLE events FINAL")  # a settled table, as after background merges
        store = svc.events
        everything = catalog.parse_names_query({})
        ten_days = catalog.parse_names_query({"date_from": "2026-04-01", "date_to": "2026-04-10", "q": "sw"})
        lookups: dict[str, Callable[[], Any]] = {
            "names, all time": lambda: catalog.seen_names(store, everything),
            "names, all time, without the projection": lambda: names_without_projection(store, everything),
            "names, 10 days, q=sw": lambda: catalog.seen_names(store, ten_days),
            "names, 10 days, q=sw, without the projection": lambda: names_without_projection(store, ten_days),
            "properties, track swap": lambda: catalog.seen_operands(
                store, catalog.parse_operands_query({"type": "track", "event": "swap"})
            ),
            "properties, any page": lambda: catalog.seen_operands(
                store, catalog.parse_operands_query({"type": "event", "event": "page"})
            ),
            "values, swap chain (property)": lambda: catalog.seen_values(
                store, catalog.parse_values_query({"type": "track", "event": "swap", "operand": "chain"})
            ),
            "values, page device q=mo (column)": lambda: catalog.seen_values(
                store,
                catalog.parse_values_query(
                    {"type": "event", "event": "page", "operand": "device", "q": "mo"}
                ),
            ),
            "properties, an event never seen": lambda: catalog.seen_operands(
                store, catalog.parse_operands_query({"type": "track", "event": "never"})
            ),
            "extent (for /v0/funnels)": lambda: catalog.seen_extent(store),
        }
        assert report.imported == args.events, report.errors[:3]
        results["ms"] = {name: median_ms(fn, args.repeat) for name, fn in lookups.items()}
        results["rows_read"] = {
            "names, all time": catalog.seen_names(store, everything)["statistics"]["rows_read"],
        }
    finally:
        svc.close()
    DATA.mkdir(exist_ok=True)
    (DATA / "catalog.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
