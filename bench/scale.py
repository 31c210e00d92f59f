"""Issue 16, item 3: the closed funnel at 10M, 30M and 100M events, measured as a new user would see it.

    .venv/bin/python bench/scale.py [--sizes 10M,30M,100M] [--repeat 3] [--drop-caches] [--keep]

For each size: events are generated in chunks of 5M into one Parquet file (10 events per user over the
bench's 44 days, the same mix and JSON properties as `bench/run.py`; the generator holds one chunk at a
time), imported with `funnels import` into a fresh data directory (the import rate is events over its wall
time, and over the time the command reports), and then, in a new process each time (a restarted server): the first closed funnel after opening
the store (`run_funnel`, raw, 3 steps with the `chain = ethereum` filter, medians), then one warm-up, then
`--repeat` runs interleaved with the bare `windowFunnel` level count of `bench/run.py` on the same table
(same process, the table as imported: no OPTIMIZE). Both must give the same users per step. The process's
peak resident memory (`ru_maxrss`) is read after opening the store and after the queries; the difference
bounds the queries' own peak. `--drop-caches` empties the page cache before the first query (root only),
for a cold first query; without it the files are in the page cache as after an import. Figures go to
bench/data/scale.json; directories and Parquet files are removed unless `--keep`.

Not a test: it prints figures for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
import run  # bench/run.py: the generator, the funnel and windowFunnel's SQL

CHUNK = 5_000_000
VENV = Path(sys.executable).parent


def generate(path: Path, events: int) -> float:
    """`events` events for `events // 10` users, written chunk by chunk; returns the seconds it took."""
    started = time.perf_counter()
    rng = np.random.default_rng(16)
    writer = None
    try:
        for first in range(0, events, CHUNK):
            table, _, _ = run.events_table(rng, first, min(CHUNK, events - first), events // 10)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=1_000_000)
    finally:
        if writer is not None:
            writer.close()
    return time.perf_counter() - started


def measure_queries(data_dir: Path, repeat: int) -> dict[str, object]:
    """In this (new) process: the first funnel after opening, then warm runs interleaved with windowFunnel."""
    from funnels.analytics.funnel import run_funnel
    from funnels.analytics.query import parse_funnel_query
    from funnels.services import Services

    closed = {**run.BASE, "steps": orjson.dumps(run.FUNNEL).decode(), "identity": "raw"}
    query = parse_funnel_query(closed)
    wf_sql, wf_params = run.window_funnel_sql(closed)
    opened = time.perf_counter()
    svc = Services.open(data_dir)
    open_s = time.perf_counter() - opened
    rss_open = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        started = time.perf_counter()
        users = [row["users"] for row in run_funnel(svc.events, query)["data"]]
        first_s = time.perf_counter() - started
        svc.events.query(wf_sql, wf_params)  # windowFunnel's warm-up
        run_funnel(svc.events, query)  # the funnel's
        funnel_s: list[float] = []
        wf_s: list[float] = []
        for _ in range(repeat):
            funnel_s += run.timed(lambda: run_funnel(svc.events, query), 1)
            wf_s += run.timed(lambda: svc.events.query(wf_sql, wf_params), 1)
        levels = {int(level): int(count) for level, count in svc.events.query(wf_sql, wf_params).rows}
        assert users == [sum(c for lv, c in levels.items() if lv >= k) for k in (1, 2, 3)], (users, levels)
    finally:
        svc.close()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    warm = statistics.median(funnel_s)
    return {
        "users per step": users,
        "open_s": round(open_s, 2),
        "first_query_s": round(first_s, 2),
        "funnel_s": round(warm, 2),
        "window_funnel_s": round(statistics.median(wf_s), 2),
        "ratio": round(warm / statistics.median(wf_s), 2),
        "first_over_warm": round(first_s / warm, 2),
        "rss_after_open_gb": round(rss_open / 2**30, 2),
        "rss_peak_gb": round(rss_peak / 2**30, 2),
    }


def measure(events: int, repeat: int, drop_caches: bool, keep: bool) -> dict[str, object]:
    source = run.DATA / f"scale-{events}.parquet"
    data_dir = run.DATA / f"scale-dir-{events}"
    run.DATA.mkdir(exist_ok=True)
    result: dict[str, object] = {"events": events, "users": events // 10}
    if not source.exists():
        result["generate_s"] = round(generate(source, events), 1)
    shutil.rmtree(data_dir, ignore_errors=True)
    started = time.perf_counter()
    imported = subprocess.run(
        [str(VENV / "funnels"), "import", "--data-dir", str(data_dir), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    own = float(re.search(r"in ([0-9.]+)s", imported.stdout + imported.stderr).group(1))  # type: ignore[union-attr]
    result["import_s"] = round(seconds, 1)  # the command's wall time: its start and the store's opening too
    result["import_events_per_s"] = round(events / seconds)
    result["import_own_events_per_s"] = round(events / own)  # the rate the command reports
    if drop_caches:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    queries = subprocess.run(
        [sys.executable, __file__, "--queries", str(data_dir), "--repeat", str(repeat)],
        check=True,
        capture_output=True,
        text=True,
    )
    result |= json.loads(queries.stdout)
    if not keep:
        shutil.rmtree(data_dir, ignore_errors=True)
        source.unlink()
    return result


def size(text: str) -> int:
    units = {"K": 1_000, "M": 1_000_000}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10M,30M,100M")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--drop-caches", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the Parquet files and data directories")
    parser.add_argument("--queries", type=Path, help=argparse.SUPPRESS)  # the query phase's own process
    args = parser.parse_args()
    if args.queries:
        print(json.dumps(measure_queries(args.queries, args.repeat)))
        return
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    sizes: list[dict[str, object]] = []
    for text in args.sizes.split(","):
        sizes.append(measure(size(text), args.repeat, args.drop_caches, args.keep))
        print(json.dumps(sizes[-1]), flush=True)
    results = {"machine": machine, "sizes": sizes}
    (run.DATA / "scale.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
