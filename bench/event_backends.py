"""The closed 3-step funnel (medians), raw and stitched, on the event store of a data directory `bench/run.py`
left (bench/data/dir), through each event-store backend: the direct chDB session (`ChdbEventStore`, the
embedded default) and the server backend on clickhouse-connect's chDB interface (`ServerEventStore.on_chdb`),
both in this process on the same directory, interleaved query by query. Prints median ms; not a test.

    .venv/bin/python bench/run.py --events 2000000 --users 200000 --anonymous 0.3 --repeat 1   # the data
    .venv/bin/python bench/event_backends.py [--repeat 15] [--backend both|direct]

`--backend direct` times the direct session only, and runs on an older checkout too (before the
interface existed: `PYTHONPATH=<old checkout>/src`), for a before/after A/B in alternating processes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run import BASE, DATA, FUNNEL

from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import parse_funnel_query


def open_direct(path: Path) -> Any:
    try:
        from funnels.store.chdb_events import ChdbEventStore
    except ImportError:  # a checkout from before the event-store interface
        from funnels.store.events import EventStore as ChdbEventStore  # type: ignore[attr-defined,no-redef]
    return ChdbEventStore(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--backend", choices=("both", "direct"), default="both")
    parser.add_argument("--events-dir", type=Path, default=DATA / "dir" / "events")
    args = parser.parse_args()
    stores = {"direct chDB session": open_direct(args.events_dir)}
    if args.backend == "both":
        from funnels.store.server_events import ServerEventStore

        # The same directory's tables (database `default`), a second handle on the one engine.
        stores["clickhouse-connect chDB interface"] = ServerEventStore.on_chdb(
            args.events_dir, database="default"
        )
    closed = {**BASE, "steps": orjson.dumps(FUNNEL).decode()}
    queries = {
        "raw": parse_funnel_query({**closed, "identity": "raw"}),
        "stitched": parse_funnel_query(closed),
    }
    answers = set()
    for store in stores.values():  # one untimed warm-up each (caches, the dictionary's load)
        for query in queries.values():
            answers.add(orjson.dumps(run_funnel(store, query)["data"]))
    assert len(answers) == len(queries), "the backends' answers differ"
    times: dict[str, list[float]] = {f"{name}, {q}": [] for name in stores for q in queries}
    for _ in range(args.repeat):
        for qname, query in queries.items():
            for name, store in stores.items():
                started = time.perf_counter()
                run_funnel(store, query)
                times[f"{name}, {qname}"].append(time.perf_counter() - started)
    print(
        json.dumps({key: round(statistics.median(value) * 1000, 1) for key, value in times.items()}, indent=2)
    )
    for store in stores.values():
        store.close()


if __name__ == "__main__":
    main()
