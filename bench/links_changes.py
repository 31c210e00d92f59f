"""What the check for other processes' link changes costs a stitched funnel on the server backend: the
check alone (`_links_elsewhere`, a read of `identity_links_changes`), and the stitched closed 3-step funnel
with and without it, interleaved. Runs on clickhouse-connect's chDB interface over the target that
`bench/events_copy.py` left (bench/data/copy/target); `--writers N` first adds N writers' rows (N processes
that changed links). Prints median ms; not a test.

    .venv/bin/python bench/events_copy.py --events 3000000 --users 300000 --anonymous 0.3   # the data
    .venv/bin/python bench/links_changes.py [--repeat 15] [--writers 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run import BASE, DATA, FUNNEL

from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import parse_funnel_query
from funnels.store.server_events import LINKS_CHANGES, ServerEventStore


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--writers", type=int, default=1000)
    args = parser.parse_args()
    store = ServerEventStore.on_chdb(DATA / "copy" / "target")
    if args.writers:
        store.execute(
            f"INSERT INTO {LINKS_CHANGES} SELECT concat('bench', toString(number % {{writers:UInt32}})), number "
            "FROM numbers({rows:UInt32})",
            {"writers": args.writers, "rows": args.writers * 20},  # 20 changes each, not merged yet
        )
    check = []
    for _ in range(args.repeat * 20):
        started = time.perf_counter()
        store._links_elsewhere()
        check.append((time.perf_counter() - started) * 1000)
    query = parse_funnel_query({**BASE, "steps": orjson.dumps(FUNNEL).decode()})
    timings: dict[str, list[float]] = {"with the check": [], "without it": []}
    told = store._links_elsewhere
    for _ in range(args.repeat):
        for name in timings:
            store._links_elsewhere = told if name == "with the check" else lambda: store._persons_elsewhere  # type: ignore[method-assign]
            started = time.perf_counter()
            run_funnel(store, query)
            timings[name].append((time.perf_counter() - started) * 1000)
    print(f"the check alone ({args.writers} writers): {statistics.median(check):.2f} ms")
    for name, values in timings.items():
        print(f"stitched funnel, {name}: {statistics.median(values):.1f} ms")
    store.close()


if __name__ == "__main__":
    main()
