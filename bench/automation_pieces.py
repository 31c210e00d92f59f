"""CPU of each piece of the automation path, in one process, for comparing commits.

The full benchmark (bench/automation.py) measures the server's CPU per event end to end, but how work is
batched there (group commit, the shipper's 0.2 s interval, the delivery process's rounds) depends on
timing, so two runs of one commit differ by ±10% on a shared machine. Here each piece runs alone and in
order, through the app in process (FastAPI's TestClient: no HTTP server, no shipper thread, no delivery
process), so the work done is the same from run to run and process CPU time measures it (PostgreSQL's own
CPU, with `--state-url`, is not in it):

1. identify 5,000 customers (`POST /api/v1/identify`, batches of 1,000): CPU per identify;
2. 50,000 events of part 1's mix (`POST /api/v1/events`, batches of 1,000): CPU per event;
3. ship the event log into the event store (`Shipper.flush`): CPU per event shipped;
4. deliver the immediate webhooks they scheduled to a real receiver (`Worker.run_until_idle`): CPU per job.

    .venv/bin/python bench/automation_pieces.py                  # this tree
    PYTHONPATH=<worktree>/src .venv/bin/python bench/automation_pieces.py --tree <worktree>   # another commit
    .venv/bin/python bench/automation_pieces.py --batch 1 --events 5000 \
        --state-url postgresql://postgres@127.0.0.1:5432/funnels_bench      # single events, on PostgreSQL

`--tree` takes the receiver and the config from that tree's bench/automation.py, so both commits are
measured with their own. Not a test: it prints one line of figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import orjson
from fastapi.testclient import TestClient

from funnels.app import create_app
from funnels.auth import create_key
from funnels.services import Services

BATCH = 1_000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", type=Path, default=Path(__file__).parent.parent, help="whose bench config")
    parser.add_argument("--instances", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1_000, help="events per request (1: single events)")
    parser.add_argument(
        "--state-url", help="a PostgreSQL database, dropped and re-created (its name must contain 'bench')"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree / "bench"))
    from automation import MIX, Receiver, bench_config

    if args.state_url:
        from automation import recreate_database

        recreate_database(args.state_url)

    work = Path(tempfile.mkdtemp(prefix="funnels-pieces-"))
    receiver = Receiver()
    config = work / "config.json"
    config.write_text(json.dumps(bench_config(receiver.url)))
    # (older commits' Services.open has no state_url: pass it only when asked)
    state = {"state_url": args.state_url} if args.state_url else {}
    svc = Services.open(work / "dir", config_path=config, **state)
    headers = {"Authorization": f"Bearer {create_key(svc.state, svc.clock, ['admin'])}"}
    rng = random.Random(7)
    people = [
        {
            "model": "customer",
            "ids": [f"c{i}", f"c{i}@example.com"],
            "displayName": f"Customer c{i}",
            "properties": {"plan": "free", "timezone": "Europe/Berlin"},
        }
        for i in range(args.instances)
    ]
    names = rng.choices(list(MIX), list(MIX.values()), k=args.events)
    events = [
        {
            "name": name,
            "ids": [f"c{rng.randrange(args.instances)}"],
            "model": "customer",
            "properties": {"n": i, "path": "/pricing", "source": "bench"},
        }
        for i, name in enumerate(names)
    ]
    try:
        with TestClient(create_app(svc, run_shipper=False, run_worker=False)) as client:
            cpu = [time.process_time()]
            for path, items, batch in (
                ("/api/v1/identify", people, BATCH),
                ("/api/v1/events", events, args.batch),
            ):
                for start in range(0, len(items), batch):
                    body = orjson.dumps(items[start : start + batch])
                    client.post(path, content=body, headers=headers).raise_for_status()
                cpu.append(time.process_time())
            shipped = svc.shipper.flush()
            cpu.append(time.process_time())
            delivered = svc.worker.run_until_idle()
            cpu.append(time.process_time())
    finally:
        receiver.close()
        svc.close()
    per = [b - a for a, b in itertools.pairwise(cpu)]
    print(
        f"identify {per[0] / args.instances * 1000:.3f} ms · event {per[1] / args.events * 1000:.4f} ms · "
        f"ship {per[2] / shipped * 1000:.4f} ms/event ({shipped:,}) · "
        f"deliver {per[3] / max(delivered, 1) * 1000:.3f} ms/job ({delivered:,})"
    )


if __name__ == "__main__":
    main()
