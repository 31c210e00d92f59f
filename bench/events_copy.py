"""`funnels events copy` on a bench dataset: time, rate and peak memory (resident, the command and its
reading child summed, sampled every 20 ms from /proc) of the copy and of the checks after it, then the bytes per event on disk of the target
(`system.parts`). The target is the server backend on clickhouse-connect's chDB interface (a `chdb://`
URL): no ClickHouse server can be installed here. Prints one JSON line; not a test.

    .venv/bin/python bench/events_copy.py --events 3000000 --users 300000 --anonymous 0.3
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run import DATA, generate

BIN = Path(sys.executable).parent


def tree_rss_kb(pid: int) -> int:
    """The resident memory of a process and all its descendants, in KiB (0 once it is gone)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--users", type=int, default=300_000)
    parser.add_argument("--anonymous", type=float, default=0.3)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    args = parser.parse_args()
    root = DATA / "copy"
    shutil.rmtree(root, ignore_errors=True)
    parquet = root / "events.parquet"
    generate(parquet, args.events, args.users, args.anonymous)
    subprocess.run(
        [str(BIN / "funnels"), "import", str(parquet), "--data-dir", str(root / "dir")],
        check=True,
        timeout=3600,
    )
    command = [
        str(BIN / "funnels"),
        "events",
        "copy",
        "--data-dir",
        str(root / "dir"),
        "--to",
        f"chdb://{root / 'target'}",
        "--batch-rows",
        str(args.batch_rows),
    ]
    started = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    checking: list[float] = []  # when the copy ended and the checks began (its stderr says so)

    def follow() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if "checking the copy" in line:
                checking.append(time.perf_counter() - started)

    threading.Thread(target=follow, daemon=True).start()
    peak = {"copy": 0, "checks": 0}
    while process.poll() is None:
        phase = "checks" if checking else "copy"
        peak[phase] = max(peak[phase], tree_rss_kb(process.pid))
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    assert process.returncode == 0 and checking, process.returncode

    from funnels.store.server_events import ServerEventStore

    target = ServerEventStore.on_chdb(root / "target")
    rows, on_disk = (
        int(value)
        for value in target.query(
            "SELECT sum(rows), sum(bytes_on_disk) FROM system.parts WHERE active AND "
            "database = currentDatabase() AND table = 'events'"
        ).rows[0]
    )
    links = int(
        target.query(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND database = currentDatabase() "
            "AND table IN ('identity_links', 'identity_keys_by_user')"
        ).rows[0][0]
    )
    target.close()
    print(
        json.dumps(
            {
                "events": rows,
                "batch_rows": args.batch_rows,
                "copy_seconds": round(checking[0], 1),
                "events_per_s": round(rows / checking[0]),
                "check_seconds": round(seconds - checking[0], 1),
                "peak_rss_mib_copy": round(peak["copy"] / 1024),
                "peak_rss_mib_checks": round(peak["checks"] / 1024),
                "events_bytes_per_event": round(on_disk / rows, 1),
                "links_bytes_per_event": round(links / rows, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
