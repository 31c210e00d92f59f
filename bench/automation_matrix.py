"""The automation benchmark over topologies (issue 11, item 7): SQLite on one node, and PostgreSQL with 1 and
2 `funnels serve` nodes and 1, 2 and 4 `funnels worker` processes; then, with 1M pending jobs, due-time
precision on SQLite and on PostgreSQL with 2 nodes and 2 workers. Each run is `bench/automation.py` in a
subprocess (its own JSON in bench/data/matrix/); this prints one Markdown table of them all.

    .venv/bin/python bench/automation_matrix.py [--state-url postgresql://postgres@127.0.0.1:5432/funnels_bench]
                                                 [--events 50000] [--instances 5000] [--seconds 10] [--pending 1000000]
    .venv/bin/python bench/automation_matrix.py --table      # only print the table of the runs already made

Not a test. The PostgreSQL database named in --state-url is dropped and re-created by every run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
OUT = HERE / "data" / "matrix"
# (name, bench/automation.py arguments beyond the sizes)
TOPOLOGIES: list[tuple[str, list[str]]] = [
    ("sqlite-1n", []),
    *[(f"pg-{n}n-{w}w", ["--nodes", str(n), "--workers", str(w)]) for n in (1, 2) for w in (1, 2, 4)],
]
DUE_RUNS: list[tuple[str, list[str]]] = [
    ("sqlite-1n-due", []),
    ("pg-2n-2w-due", ["--nodes", "2", "--workers", "2"]),
]


def run(name: str, extra: list[str], args: argparse.Namespace) -> None:
    state = ["--state-url", args.state_url] if name.startswith("pg") else []
    command = [
        sys.executable,
        str(HERE / "automation.py"),
        *extra,
        *state,
        "--out",
        str(OUT / f"{name}.json"),
    ]
    print(f"== {name}: {' '.join(command[2:])}", flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def cell(result: dict[str, Any], *path: str) -> Any:
    value: Any = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return "–"
        value = value[key]
    return value


def results(runs: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    """The JSON of each of these runs that has been made, in their order."""
    paths = [OUT / f"{name}.json" for name, _ in runs]
    return [json.loads(path.read_text()) for path in paths if path.exists()]


def table() -> list[str]:
    """One row per topology run: throughput, CPU, and latency at the light and the offered rate."""
    lines = [
        "| topology | batched events/s | events per server CPU-s (with PostgreSQL's) "
        "| 20/s ack → webhook p50 / p99 ms | 500/s: accepted/s, ack → webhook p50 / p99 / max ms "
        "| CPU per event at 500/s: server; PostgreSQL | CPU stolen |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results(TOPOLOGIES):
        put, light, heavy = r.get("throughput", {}), r.get("latency_light", {}), r.get("latency", {})
        light_ms, heavy_ms = light.get("latency_ms", {}), heavy.get("latency_ms", {})
        lines.append(
            f"| {r['topology']} | {cell(put, 'events_per_s'):,} "
            f"| {cell(put, 'events_per_cpu_s'):,} ({cell(put, 'events_per_cpu_s_with_database'):,}) "
            f"| {light_ms.get('p50')} / {light_ms.get('p99')} "
            f"| {cell(heavy, 'achieved_rate')}, {heavy_ms.get('p50')} / {heavy_ms.get('p99')} / "
            f"{heavy_ms.get('max')} ({heavy.get('delivered')} of {heavy.get('offered')} delivered) "
            f"| {cell(heavy, 'server_cpu_ms_per_event')}; {cell(heavy, 'database_cpu_ms_per_event')} ms "
            f"| {cell(r, 'steal_share')} |"
        )
    lines += [
        "",
        "| topology | pending jobs | due → receipt p50 / max ms | claim query | next-due query | idle cores |",
        "|---|---|---|---|---|---|",
    ]
    for r in results(DUE_RUNS):
        due = r["due"]
        lines.append(
            f"| {r['topology']} | {due['pending']:,} | {due['late_ms'].get('p50')} / {due['late_ms'].get('max')} "
            f"({due['delivered']}/{due['due_jobs']} delivered) | {due['claim_query_ms']} ms "
            f"| {due['next_due_query_ms']} ms | {due['idle_server_cores']} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--state-url", default="postgresql://postgres@127.0.0.1:5432/funnels_bench")
    parser.add_argument("--events", default="50000")
    parser.add_argument("--instances", default="5000")
    parser.add_argument("--seconds", default="10")
    parser.add_argument("--pending", default="1000000")
    parser.add_argument("--table", action="store_true", help="print the table of the runs already made")
    parser.add_argument("--only", nargs="+", metavar="RUN", help="these runs only (e.g. sqlite pg-2n-2w)")
    args = parser.parse_args()
    if not args.table:
        OUT.mkdir(parents=True, exist_ok=True)
        sizes = ["--events", args.events, "--instances", args.instances, "--seconds", args.seconds]
        wanted = set(args.only or [name for name, _extra in [*TOPOLOGIES, *DUE_RUNS]])
        for name, extra in TOPOLOGIES:
            if name in wanted:
                run(name, [*extra, *sizes, "--light-seconds", "5", "--parts", "12"], args)
        for name, extra in DUE_RUNS:
            if name not in wanted:
                continue
            run(
                name, [*extra, "--instances", args.instances, "--pending", args.pending, "--parts", "3"], args
            )
    print("\n".join(table()))


if __name__ == "__main__":
    main()
