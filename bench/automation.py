"""The automation benchmark (issue 3 §7), against a real `funnels serve` subprocess and a real HTTP receiver.

1. Throughput: identify `--instances` customers, then send `--events` events to `/api/v1/events` in
   batches of 1,000 from a few keep-alive clients; a 3-step funnel whose steps schedule webhooks (most
   events are non-step events or repeats). Events/s, and events per server CPU-second (the server's
   utime + stime from /proc over the run).
2. Latency: single `ping` events at a steady `--rate` for `--seconds` (first at a light `--light-rate`),
   each the first step of a funnel for a fresh instance with an immediate webhook; latency = webhook
   receipt − the client's 200, both on this process's monotonic clock (the receiver runs here).
3. Due-time precision: stop the server, insert `--pending` far-future jobs into `action_jobs` plus
   `--due-jobs` jobs due a few seconds after the restart, restart, measure receipt − due (wall clock).
   Also the plans and times of the worker's queries (and the shipper's prune) at that size.

    .venv/bin/python bench/automation.py [--instances 20000] [--events 100000] [--rate 500] [--seconds 20]
                                         [--pending 1000000] [--due-jobs 20]   (--help for all options)

Not a test: it prints figures for docs/benchmarks.md and writes them to bench/data/automation.json.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson

DATA = Path(__file__).parent / "data"
WORK = DATA / "automation"
BIN = Path(sys.executable).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BATCH = 1_000
# The throughput mix: half non-step events, the rest the funnel's steps in random order (so most step
# events are repeats or come before their turn, as in real traffic).
MIX: dict[str, float] = {"page_view": 0.5, "sign_up": 0.2, "activate": 0.15, "convert": 0.15}
IMMEDIATE_STEPS = {("onboarding", 1), ("onboarding", 3), ("latency", 1)}  # the others wait a day


def bench_config(receiver: str) -> dict[str, Any]:
    """onboarding: sign_up → activate → convert, webhooks at steps 1 and 3 now and one a day after step 2;
    latency: `ping`, one immediate webhook naming the event's `n` in its URL."""

    def hook(path: str) -> dict[str, Any]:
        return {"url": f"{receiver}/{path}", "body": {"id": "{{ ids[0] }}", "step": "{{ step }}"}}

    return {
        "models": [{"name": "customer"}],
        "funnels": [
            {
                "id": "onboarding",
                "forModels": "customer",
                "steps": [
                    {"event": "sign_up", "actions": {"type": "webhook", "args": hook("signed-up")}},
                    {
                        "event": "activate",
                        "actions": {"type": "webhook", "delay": "1d", "args": hook("nudge")},
                    },
                    {"event": "convert", "actions": {"type": "webhook", "args": hook("converted")}},
                ],
            },
            {
                "id": "latency",
                "forModels": "customer",
                "steps": {
                    "event": "ping",
                    "actions": {
                        "type": "webhook",
                        "args": {"url": receiver + "/ping?n={{ eventProperties.n }}"},
                    },
                },
            },
        ],
        "delivery": {"timeout": "5s"},
        "network": {"allow": ["127.0.0.1/32"]},  # the receiver is on loopback, refused otherwise
    }


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the receiver ------------------------------------------------------------------------------------


class Receiver:
    """A threaded HTTP server on 127.0.0.1, in a process of its own (so the load generator's threads do not
    slow it down, nor it them), that answers 200 and records when each request arrived: by its
    `Idempotency-Key` and by its `n` query parameter, on the machine's monotonic clock (the same in every
    process, so comparable with the senders' times) and the wall clock. This process asks it over HTTP
    (`/_bench/…`) what it has received."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        parent, child = context.Pipe()
        self.process = context.Process(target=_serve_receiver, args=(child,), daemon=True)
        self.process.start()
        self.url = f"http://127.0.0.1:{parent.recv()}"
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def count(self, path: str) -> int:
        return int(self.client.get("/_bench/count", params={"path": path}).json())

    def by_n(self, prefix: str) -> dict[str, float]:
        """n → monotonic time of arrival, for every `n` starting with `prefix`."""
        return dict(self.client.get("/_bench/by-n", params={"prefix": prefix}).json())

    def by_key(self, keys: Sequence[str]) -> dict[str, tuple[float, float]]:
        """Idempotency key → (monotonic, wall) time of the first arrival, for those of `keys` received."""
        answer = self.client.post("/_bench/by-key", content=orjson.dumps(list(keys))).json()
        return {key: (mono, wall) for key, (mono, wall) in answer.items()}

    def wait_for(self, ready: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.join(10)


def _serve_receiver(report_port: Any) -> None:
    """The receiver process: serve until terminated."""
    lock = threading.Lock()
    by_key: dict[str, tuple[float, float]] = {}  # key → (monotonic, wall) of the first receipt
    by_n: dict[str, float] = {}  # n → monotonic
    paths: dict[str, int] = {}

    def record(target: str, key: str, mono: float, wall: float) -> None:
        parts = urlsplit(target)
        with lock:
            if key in by_key:
                return
            by_key[key] = (mono, wall)
            paths[parts.path] = paths.get(parts.path, 0) + 1
            if n := parse_qs(parts.query).get("n"):
                by_n[n[0]] = mono

    def stats(target: str, body: bytes) -> Any:
        parts = urlsplit(target)
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        with lock:
            if parts.path == "/_bench/count":
                return paths.get(query["path"], 0)
            if parts.path == "/_bench/by-n":
                return {n: mono for n, mono in by_n.items() if n.startswith(query["prefix"])}
            return {key: by_key[key] for key in orjson.loads(body) if key in by_key}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the worker's client expects

        def do_POST(self) -> None:
            mono, wall = time.monotonic(), time.time()
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            answer = b""
            if self.path.startswith("/_bench/"):
                answer = orjson.dumps(stats(self.path, body))
            else:
                record(self.path, self.headers.get("Idempotency-Key", ""), mono, wall)
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    report_port.send(server.server_address[1])
    server.serve_forever()


# --- the server --------------------------------------------------------------------------------------


class Server:
    """`funnels serve --config` on a free port over a data directory, as a subprocess."""

    def __init__(
        self, data_dir: Path, config: Path, key: str, separate_worker: bool = False, delivery: str = "process"
    ) -> None:
        self.data_dir, self.config, self.key = data_dir, config, key
        self.separate_worker = separate_worker  # `serve --delivery off` plus a `funnels worker` process
        self.delivery = "off" if separate_worker else delivery  # serve's --delivery
        self.port, self.url = 0, ""
        self.process: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.started_s = 0.0

    def start(self) -> float:
        """Start on a free port and wait for /healthz; returns how long that took."""
        started = time.monotonic()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            str(BIN / "funnels"),
            "serve",
            "--config",
            str(self.config),
            "--data-dir",
            str(self.data_dir),
            "--delivery",
            self.delivery,
        ]
        with (self.data_dir.parent / "server.log").open("ab") as log:
            self.process = subprocess.Popen([*command, "--port", str(self.port)], stdout=log, stderr=log)
            if self.separate_worker:
                worker = [
                    str(BIN / "funnels"),
                    "worker",
                    "--config",
                    str(self.config),
                    "--data-dir",
                    str(self.data_dir),
                ]
                self.worker = subprocess.Popen(worker, stdout=log, stderr=log)
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; see server.log")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - started > 60:
                raise RuntimeError("the server did not answer /healthz within 60 s")
            time.sleep(0.05)
        self.started_s = time.monotonic() - started
        return self.started_s

    def cpu_s(self) -> float:
        """The server's user + system CPU seconds so far: all its threads, its delivery process (a child)
        and the separate worker process's (`--separate-worker`)."""
        assert self.process is not None
        pids = [process.pid for process in (self.process, self.worker) if process is not None]
        return sum(cpu_s(pid) for pid in pids + children(self.process.pid))

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down cleanly: worker, shipper, stores), SIGKILL after 60 s."""
        if self.worker is not None and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            self.worker.wait(60)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise RuntimeError("the server did not stop within 60 s of SIGTERM; killed") from None


def stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name (field 3 onwards); [] if the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def cpu_s(pid: int) -> float:
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS if fields else 0.0


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (the server's delivery process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := stat_fields(int(entry.name))) and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def post_all(
    server: Server, path: str, bodies: Sequence[bytes], threads: int
) -> tuple[float, list[bytes], list[float]]:
    """POST every body from `threads` keep-alive clients; wall seconds, the response bodies and each
    request's round trip in ms."""
    responses: list[bytes] = [b""] * len(bodies)
    round_trips = [0.0] * len(bodies)
    cursor = iter(range(len(bodies)))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def send() -> None:
        with server.client() as client:
            while True:
                with lock:
                    index = next(cursor, None)
                if index is None or errors:
                    return
                try:
                    sent = time.monotonic()
                    response = client.post(path, content=bodies[index])
                    response.raise_for_status()
                    round_trips[index] = (time.monotonic() - sent) * 1000
                    responses[index] = response.content
                except BaseException as error:
                    errors.append(error)
                    return

    started = time.monotonic()
    workers = [threading.Thread(target=send) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return time.monotonic() - started, responses, round_trips


def batches(items: Sequence[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(list(items[start : start + BATCH])) for start in range(0, len(items), BATCH)]


def tally(responses: Sequence[bytes]) -> dict[str, int]:
    """Statuses, satisfied steps and scheduled jobs (and how many of those are due now) over all results."""
    counts: dict[str, int] = {"satisfied": 0, "scheduled": 0, "scheduled_now": 0}
    for body in responses:
        for result in orjson.loads(body)["results"]:
            counts[result["status"]] = counts.get(result["status"], 0) + 1
            counts["satisfied"] += len(result["satisfied"])
            for job in result["scheduled"]:
                counts["scheduled"] += 1
                counts["scheduled_now"] += (job["funnel"], job["step"]) in IMMEDIATE_STEPS
    return counts


# --- 1. throughput -----------------------------------------------------------------------------------


def identify_all(server: Server, prefix: str, count: int, threads: int) -> float:
    people = [
        {
            "model": "customer",
            "ids": [f"{prefix}{i}", f"{prefix}{i}@example.com"],
            "displayName": f"Customer {prefix}{i}",
            "properties": {"plan": "free", "timezone": "Europe/Berlin"},
        }
        for i in range(count)
    ]
    seconds, responses, _ = post_all(server, "/api/v1/identify", batches(people), threads)
    assert tally(responses).get("processed") == count, tally(responses)
    return seconds


def throughput(server: Server, receiver: Receiver, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(7)
    identify_s = identify_all(server, "c", args.instances, args.threads)
    print(f"  identified {args.instances:,} instances in {identify_s:.1f}s", flush=True)
    events = [
        {
            "name": name,
            "ids": [f"c{rng.randrange(args.instances)}"],
            "model": "customer",
            "properties": {"n": i, "path": "/pricing", "source": "bench"},
        }
        for i, name in enumerate(rng.choices(list(MIX), list(MIX.values()), k=args.events))
    ]
    bodies = batches(events)
    cpu_before, started = server.cpu_s(), time.monotonic()
    seconds, responses, round_trips = post_all(server, "/api/v1/events", bodies, args.threads)
    cpu = server.cpu_s() - cpu_before
    counts = tally(responses)
    # The immediate webhooks the run scheduled: wait for the worker to deliver them all.
    expected = counts["scheduled_now"]

    def delivered() -> int:
        return receiver.count("/signed-up") + receiver.count("/converted")

    drained = receiver.wait_for(lambda: delivered() >= expected, args.drain_timeout)
    drain_s = time.monotonic() - started
    cpu_all = server.cpu_s() - cpu_before
    return {
        "instances": args.instances,
        "events": args.events,
        "batch": BATCH,
        "client_threads": args.threads,
        "identify_per_s": round(args.instances / identify_s),
        "seconds": round(seconds, 2),
        "events_per_s": round(args.events / seconds),
        "batch_request_ms": summary(round_trips),
        "server_cpu_s": round(cpu, 2),
        "server_cores_used": round(cpu / seconds, 2),
        "events_per_cpu_s": round(args.events / cpu),
        "outcomes": counts,
        "webhooks_expected": expected,
        "webhooks_delivered": delivered(),
        "all_delivered": drained,
        "ingest_and_delivery_s": round(drain_s, 2),
        "events_per_cpu_s_with_delivery": round(args.events / cpu_all),
    }


# --- 2. latency --------------------------------------------------------------------------------------


def latency(
    server: Server, receiver: Receiver, rate: float, seconds: float, senders: int, prefix: str
) -> dict[str, Any]:
    """`ping` events for fresh instances at `rate` for `seconds` (whatever is not sent by then is not
    sent); each one's webhook receipt minus its 200, on this process's monotonic clock."""
    count = round(rate * seconds)
    identify_all(server, prefix, count, 3)
    bodies = [
        orjson.dumps(
            {
                "name": "ping",
                "ids": [f"{prefix}{i}"],
                "model": "customer",
                "properties": {"n": f"{prefix}{i}"},
            }
        )
        for i in range(count)
    ]
    sent, acked = [0.0] * count, [0.0] * count
    scheduled = [False] * count
    cursor, lock = iter(range(count)), threading.Lock()
    start = time.monotonic() + 0.5
    end = start + seconds

    def send() -> None:
        with server.client() as client:
            while True:
                with lock:
                    i = next(cursor, None)
                if i is None or time.monotonic() > end:
                    return
                pause = start + i / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                sent[i] = time.monotonic()
                response = client.post("/api/v1/events", content=bodies[i])
                acked[i] = time.monotonic()
                scheduled[i] = response.status_code == 200 and bool(
                    response.json()["results"][0]["scheduled"]
                )

    cpu_before = server.cpu_s()
    threads = [threading.Thread(target=send) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    send_s = time.monotonic() - start
    done = [i for i in range(count) if acked[i]]
    names = {f"{prefix}{i}": i for i in done}
    receiver.wait_for(lambda: len(receiver.by_n(prefix).keys() & names.keys()) >= len(done), 30)
    cpu = server.cpu_s() - cpu_before
    received = {names[n]: mono for n, mono in receiver.by_n(prefix).items() if n in names}
    latencies_ms = [(received[i] - acked[i]) * 1000 for i in done if i in received]
    lag_ms = [(sent[i] - start - i / rate) * 1000 for i in done]
    return {
        "offered_rate": rate,
        "seconds": seconds,
        "senders": senders,
        "offered": count,
        "sent": len(done),
        "achieved_rate": round(len(done) / (max(sent) - min(s for s in sent if s)), 1),
        "scheduled": sum(scheduled),
        "delivered": len(latencies_ms),
        "latency_ms": summary(latencies_ms),
        "request_ms": summary([(acked[i] - sent[i]) * 1000 for i in done]),
        "send_lag_ms": summary(lag_ms),
        "server_cores_used": round(cpu / send_s, 2),
        # Ingest, delivery and shipping per event: less sensitive than latency to other load on the machine.
        "server_cpu_ms_per_event": round(cpu / max(len(done), 1) * 1000, 2),
    }


def summary(values_ms: Sequence[float]) -> dict[str, float]:
    if not values_ms:
        return {}
    return {
        "min": round(min(values_ms), 1),
        "p50": round(percentile(values_ms, 50), 1),
        "p95": round(percentile(values_ms, 95), 1),
        "p99": round(percentile(values_ms, 99), 1),
        "max": round(max(values_ms), 1),
    }


# --- 3. due-time precision with many pending jobs --------------------------------------------------

# The worker's two queries on action_jobs, as SQLAlchemy emits them (worker.claim, worker.next_due_ms).
CLAIM_SQL = (
    "SELECT action_jobs.id FROM action_jobs WHERE action_jobs.next_ms <= ? "
    "ORDER BY action_jobs.next_ms LIMIT ? OFFSET ?"
)
NEXT_DUE_SQL = (
    "SELECT min(action_jobs.next_ms) AS min_1 FROM action_jobs WHERE action_jobs.next_ms IS NOT NULL"
)
# The shipper's prune after every batch it ships (Shipper._prune), under the write lock.
PRUNE_SQL = "DELETE FROM event_log WHERE event_log.seq <= ? AND event_log.received_ms < ?"
COPIED = "funnel_id, step_index, action_index, action_type, model, spec_id, event_id, event, event_properties"
PENDING_SQL = f"""
INSERT INTO action_jobs (key, {COPIED}, event_ts_ms, instance_id, status, due_ms, next_ms, attempts,
                         created_ms, updated_ms)
WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n + 1 < :count)
SELECT 'bench-pending-' || n, {COPIED}, t.event_ts_ms, :first_instance + n % :instances, 'scheduled',
       :due_ms + n * 1000, :due_ms + n * 1000, 0, :now_ms, :now_ms
FROM seq, (SELECT * FROM action_jobs WHERE id = :template) AS t
"""
DUE_SQL = f"""
INSERT INTO action_jobs (key, {COPIED}, event_ts_ms, instance_id, status, due_ms, next_ms, attempts,
                         created_ms, updated_ms)
SELECT :key, {COPIED}, event_ts_ms, instance_id, 'scheduled', :due_ms, :due_ms, 0, :now_ms, :now_ms
FROM action_jobs WHERE id = :template
"""


def query_plan(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[str]:
    return [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


def median_ms(db: sqlite3.Connection, sql: str, params: Sequence[Any], repeat: int) -> float:
    db.execute(sql, params).fetchall()  # warm the page cache, as a running worker's would be
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        db.execute(sql, params).fetchall()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def idle_cores(server: Server, seconds: float) -> float:
    """Cores the server uses while no request comes in (the worker's polling and the shipper)."""
    before = server.cpu_s()
    time.sleep(seconds)
    return round((server.cpu_s() - before) / seconds, 3)


def due_precision(server: Server, receiver: Receiver, args: argparse.Namespace) -> dict[str, Any]:
    server.stop()
    db = sqlite3.connect(server.data_dir / "state.sqlite3", isolation_level=None)
    try:
        (far_template,) = db.execute(
            "SELECT id FROM action_jobs WHERE funnel_id = 'onboarding' AND status = 'scheduled' LIMIT 1"
        ).fetchone()
        (due_template,) = db.execute(
            "SELECT id FROM action_jobs WHERE funnel_id = 'latency' LIMIT 1"
        ).fetchone()
        first, last, instances = db.execute("SELECT min(id), max(id), count(*) FROM instances").fetchone()
        assert last - first + 1 == instances, "instance ids are not contiguous"
        now_ms = time.time_ns() // 1_000_000
        started = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            PENDING_SQL,
            {
                "count": args.pending,
                "first_instance": first,
                "instances": instances,
                "due_ms": now_ms + 30 * 86_400_000,
                "now_ms": now_ms,
                "template": far_template,
            },
        )
        db.execute("COMMIT")
        insert_s = time.perf_counter() - started
        (pending,) = db.execute("SELECT count(*) FROM action_jobs WHERE next_ms IS NOT NULL").fetchone()
        print(
            f"  inserted {args.pending:,} pending jobs in {insert_s:.1f}s ({pending:,} pending)", flush=True
        )
        claim_params = (now_ms, 16, 0)
        (log_rows, last_seq) = db.execute("SELECT count(*), max(seq) FROM event_log").fetchone()
        prune_params = (last_seq, now_ms - 7 * 86_400_000)  # as the shipper runs it: nothing is old enough
        plans = {
            "claim": query_plan(db, CLAIM_SQL, claim_params),
            "next_due": query_plan(db, NEXT_DUE_SQL, ()),
            "prune": query_plan(db, PRUNE_SQL, prune_params),
        }
        for name, lines in plans.items():
            print(f"  EXPLAIN QUERY PLAN ({name}): {' | '.join(lines)}")
        claim_ms = median_ms(db, CLAIM_SQL, claim_params, 200)
        next_due_ms = median_ms(db, NEXT_DUE_SQL, (), 25)
        prune_ms = median_ms(db, PRUNE_SQL, prune_params, 9)
        # Due a few seconds after the server should be up again (it took `started_s` the first time).
        first_due_ms = time.time_ns() // 1_000_000 + round((server.started_s * 1.5 + args.lead) * 1000)
        due = {f"bench-due-{i}": first_due_ms + i * args.spacing_ms for i in range(args.due_jobs)}
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            DUE_SQL,
            [
                {"key": key, "due_ms": due_ms, "now_ms": now_ms, "template": due_template}
                for key, due_ms in due.items()
            ],
        )
        db.execute("COMMIT")
    finally:
        db.close()
    restart_s = server.start()
    ready_ms = time.time_ns() // 1_000_000
    last_due_s = max(due.values()) / 1000
    receiver.wait_for(lambda: len(receiver.by_key(list(due))) == len(due), last_due_s - time.time() + 10)
    arrived = receiver.by_key(list(due))
    late_ms = [arrived[key][1] * 1000 - due_ms for key, due_ms in due.items() if key in arrived]
    return {
        "pending": pending,
        "insert_s": round(insert_s, 1),
        "claim_plan": plans["claim"],
        "claim_query_ms": claim_ms,
        "uses_partial_index": any("ix_action_jobs_next" in line for line in plans["claim"]),
        "next_due_plan": plans["next_due"],
        "next_due_query_ms": next_due_ms,
        "prune_plan": plans["prune"],
        "prune_query_ms": prune_ms,
        "event_log_rows": log_rows,
        "restart_s": round(restart_s, 2),
        "due_before_ready": sum(due_ms < ready_ms for due_ms in due.values()),
        "due_jobs": len(due),
        "delivered": len(late_ms),
        "late_ms": summary(late_ms),
        "idle_server_cores": idle_cores(server, args.idle_seconds),
    }


# --- the run -----------------------------------------------------------------------------------------


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def latency_rows(run: dict[str, Any], target: bool) -> list[tuple[str, str, str]]:
    lat = run["latency_ms"]
    p99_ok = run["sent"] == run["offered"] and run["delivered"] == run["sent"] and lat.get("p99", 1e9) <= 100
    return [
        (
            f"ack → webhook, {run['offered_rate']:g}/s offered: p50 / p95 / p99 / max ms",
            " / ".join(str(lat.get(k)) for k in ("p50", "p95", "p99", "max")),
            f"p99 ≤ 100 ms at 500/s — {met(p99_ok)}" if target else "",
        ),
        (
            "… events sent / delivered, achieved rate",
            f"{run['sent']:,} of {run['offered']:,} / {run['delivered']:,}, {run['achieved_rate']:g}/s",
            "",
        ),
        (
            "… request round trip p50 / p99 ms",
            f"{run['request_ms'].get('p50')} / {run['request_ms'].get('p99')}",
            "",
        ),
        ("… server CPU per event (ingest + delivery)", f"{run['server_cpu_ms_per_event']} ms", ""),
    ]


def report(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    put, due = results["throughput"], results["due"]
    late = due["late_ms"]
    return [
        (f"events/s, batches of {BATCH:,}", f"{put['events_per_s']:,}", ""),
        ("server cores used during the run", f"{put['server_cores_used']}", ""),
        (
            "events per server CPU-second",
            f"{put['events_per_cpu_s']:,}",
            f"≥ 5,000 per core — {met(put['events_per_cpu_s'] >= 5000)}",
        ),
        ("… counting the deliveries it caused", f"{put['events_per_cpu_s_with_delivery']:,}", ""),
        (
            "webhooks delivered (throughput run)",
            f"{put['webhooks_delivered']:,} / {put['webhooks_expected']:,} in {put['ingest_and_delivery_s']} s",
            "",
        ),
        *latency_rows(results["latency_light"], target=False),
        *latency_rows(results["latency"], target=True),
        (
            f"due → receipt with {due['pending']:,} pending: p50 / max ms",
            f"{late.get('p50')} / {late.get('max')} ({due['delivered']}/{due['due_jobs']} delivered)",
            f"≤ 1 s — {met(due['delivered'] == due['due_jobs'] and late.get('max', 1e9) <= 1000)}",
        ),
        ("claim query at that size (median)", f"{due['claim_query_ms']} ms", ""),
        ("next-due query, min(next_ms) (median)", f"{due['next_due_query_ms']} ms", ""),
        (
            "event-log prune, DELETE … (median)",
            f"{due['prune_query_ms']} ms ({due['event_log_rows']:,} rows)",
            "",
        ),
        ("idle server CPU with the pending jobs", f"{due['idle_server_cores']} cores", ""),
    ]


def source_version() -> str:
    """The commit the server runs, marked when src/ has uncommitted changes (read-only git calls)."""
    root = Path(__file__).parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "src"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} + uncommitted src changes" if dirty else head


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=20_000, help="customers identified for part 1")
    parser.add_argument("--events", type=int, default=100_000, help="events sent in part 1")
    parser.add_argument("--threads", type=int, default=3, help="client threads posting batches")
    parser.add_argument(
        "--drain-timeout", type=float, default=120, help="seconds to wait for part 1's webhooks"
    )
    parser.add_argument("--rate", type=float, default=500, help="events/s in part 2")
    parser.add_argument("--seconds", type=float, default=20, help="duration of part 2")
    parser.add_argument("--light-rate", type=float, default=20, help="part 2 first at this light rate …")
    parser.add_argument("--light-seconds", type=float, default=10, help="… for this long")
    parser.add_argument("--senders", type=int, default=8, help="client threads in part 2")
    parser.add_argument("--pending", type=int, default=1_000_000, help="far-future jobs for part 3")
    parser.add_argument("--due-jobs", type=int, default=20, help="jobs due just after the restart")
    parser.add_argument("--spacing-ms", type=int, default=250, help="between the due jobs' due times")
    parser.add_argument(
        "--lead", type=float, default=3.0, help="seconds between restart and the first due time"
    )
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="idle CPU sampling at the end")
    parser.add_argument(
        "--delivery",
        choices=["process", "thread"],
        default="process",
        help="serve --delivery: from the server's child process (its default) or a thread in it",
    )
    parser.add_argument(
        "--separate-worker",
        action="store_true",
        help="deliver from a `funnels worker` process started by the bench (serve --delivery off)",
    )
    args = parser.parse_args()

    shutil.rmtree(WORK, ignore_errors=True)
    data_dir = WORK / "dir"
    data_dir.mkdir(parents=True)
    receiver = Receiver()
    config = WORK / "config.json"
    config.write_text(json.dumps(bench_config(receiver.url), indent=2))
    key = subprocess.run(
        [BIN / "funnels", "keys", "create", "--scope", "admin", "--data-dir", data_dir],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    server = Server(data_dir, config, key, separate_worker=args.separate_worker, delivery=args.delivery)
    bench_cpu = time.process_time()
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "args": vars(args),
        "load_average_before": os.getloadavg(),  # other work on the machine skews every figure
        "commit": source_version(),
    }
    try:
        print(f"server started in {server.start():.1f}s on {server.url}", flush=True)
        print("1. throughput", flush=True)
        results["throughput"] = throughput(server, receiver, args)
        print(json.dumps(results["throughput"], indent=2), flush=True)
        print("2. latency", flush=True)
        results["latency_light"] = latency(
            server, receiver, args.light_rate, args.light_seconds, args.senders, "q"
        )
        print(json.dumps(results["latency_light"], indent=2), flush=True)
        results["latency"] = latency(server, receiver, args.rate, args.seconds, args.senders, "p")
        print(json.dumps(results["latency"], indent=2), flush=True)
        print("3. due-time precision", flush=True)
        results["due"] = due_precision(server, receiver, args)
        print(json.dumps(results["due"], indent=2), flush=True)
    finally:
        try:
            server.stop()
        finally:
            if server.process is not None and server.process.poll() is None:
                server.process.kill()
            receiver.close()
    results["bench_process_cpu_s"] = round(time.process_time() - bench_cpu, 1)
    results["load_average_after"] = os.getloadavg()
    if (version := source_version()) != results["commit"]:
        results["commit"] += f", then {version} (src changed during the run)"
    (DATA / "automation.json").write_text(json.dumps(results, indent=2))
    rows = report(results)
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(f"\ncommit {results['commit']}; written to {DATA / 'automation.json'}")


if __name__ == "__main__":
    main()
