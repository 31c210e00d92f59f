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
import http.client
import json
import math
import multiprocessing
import os
import platform
import random
import re
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
# Part 3 run alone: one customer reaches step 2, for a job due in a day that part 3 copies.
DELAYED_JOB = [{"name": name, "ids": ["c0"], "model": "customer"} for name in ("sign_up", "activate")]
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
    """The system under test, as subprocesses: `--nodes` × `funnels serve --config` on free ports, each over
    a data directory of its own (its own chDB), and `--workers` × `funnels worker`. With workers the nodes
    run `--delivery off`; without, each node delivers from its child process (`--delivery`). All share one
    state store: `state_url`, else (one node only) `state.sqlite3` in the node's data directory."""

    def __init__(
        self,
        work: Path,
        config: Path,
        *,
        nodes: int = 1,
        workers: int = 0,
        state_url: str | None = None,
        delivery: str = "process",
        worker_concurrency: int | None = None,
    ) -> None:
        self.config, self.state_url, self.workers = config, state_url, workers
        self.worker_args = [] if worker_concurrency is None else ["--concurrency", str(worker_concurrency)]
        self.data_dirs = [work / (f"node-{i}" if nodes > 1 else "dir") for i in range(nodes)]
        for data_dir in self.data_dirs:
            data_dir.mkdir(parents=True)
        self.log = work / "server.log"
        self.delivery = "off" if workers else delivery  # serve's --delivery
        self.key = ""
        self.urls: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.started_s = 0.0

    @property
    def data_dir(self) -> Path:
        return self.data_dirs[0]

    def command(self, *args: str | Path, data_dir: Path | None = None) -> list[str]:
        """A `funnels` command line on the first node's data directory (or `data_dir`) and the state URL."""
        state = ["--state-url", self.state_url] if self.state_url else []
        return [str(BIN / "funnels"), *map(str, args), "--data-dir", str(data_dir or self.data_dir), *state]

    def create_key(self) -> None:
        self.key = subprocess.run(
            self.command("keys", "create", "--scope", "admin"), check=True, capture_output=True, text=True
        ).stdout.strip()

    def start(self) -> float:
        """Start every node (each on a free port) and worker, wait for every node's /healthz; returns how
        long that took."""
        started = time.monotonic()
        ports = [free_port() for _ in self.data_dirs]
        self.urls = [f"http://127.0.0.1:{port}" for port in ports]
        with self.log.open("ab") as log:
            for port, data_dir in zip(ports, self.data_dirs, strict=True):
                serve = self.command("serve", "--config", self.config, data_dir=data_dir)
                extra = ["--delivery", self.delivery, "--port", str(port)]
                self.processes.append(subprocess.Popen([*serve, *extra], stdout=log, stderr=log))
            for _ in range(self.workers):
                worker = self.command("worker", "--config", self.config, *self.worker_args)
                self.processes.append(subprocess.Popen(worker, stdout=log, stderr=log))
        for url in self.urls:
            while True:
                if exited := [p.returncode for p in self.processes if p.poll() is not None]:
                    raise RuntimeError(f"a server process exited with {exited[0]}; see {self.log}")
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() - started > 60:
                    raise RuntimeError(f"{url} did not answer /healthz within 60 s")
                time.sleep(0.05)
        self.started_s = time.monotonic() - started
        return self.started_s

    def cpu_s(self) -> float:
        """User + system CPU seconds so far of every node (all its threads and its delivery child process)
        and every worker."""
        pids = [process.pid for process in self.processes]
        return sum(cpu_s(pid) for pid in pids + [c for pid in pids for c in children(pid)])

    def database_cpu_s(self) -> float:
        """CPU seconds so far of the PostgreSQL server's processes (all of them: nothing else uses it while
        the bench runs); 0 with SQLite, whose work is inside the server processes."""
        if self.state_url is None:
            return 0.0
        return sum(cpu_s(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit() and is_postgres(p))

    def analyze(self) -> None:
        """On PostgreSQL, gather the planner's statistics now, as autovacuum does within a minute of a burst
        of writes (its default threshold: 50 rows + 10% of the table, looked at every minute). The bench
        fills a new database just before it measures: planned on the statistics of empty tables (or none),
        lookups by id became scans of whole tables as they grew (3–5 ms each, in every ingest, claim and
        record transaction), so the run measured a database's first minute, not a server in service."""
        if self.state_url is None:
            return
        import psycopg  # only a PostgreSQL run needs it

        with psycopg.connect(self.state_url, autocommit=True) as connection:
            connection.execute("ANALYZE")

    def clients(self) -> list[httpx.Client]:
        """One keep-alive client per node; callers spread their requests over them in turn."""
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        return [httpx.Client(base_url=url, headers=headers, timeout=120) for url in self.urls]

    def stop(self) -> None:
        """SIGTERM to workers, then nodes (uvicorn shuts down cleanly: worker, shipper, stores); SIGKILL
        after 60 s."""
        for process in reversed(self.processes):  # the workers were started last
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        try:
            for process in self.processes:
                process.wait(60)
        except subprocess.TimeoutExpired:
            for process in self.processes:
                process.kill()
                process.wait()
            raise RuntimeError("a server process did not stop within 60 s of SIGTERM; killed") from None
        finally:
            self.processes = []


def stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name (field 3 onwards); [] if the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def cpu_s(pid: int) -> float:
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS if fields else 0.0


def cpu_times() -> list[int]:
    """The machine's CPU time counters (/proc/stat's `cpu` line: user, nice, system, idle, iowait, irq,
    softirq, steal, …) in clock ticks."""
    return [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def steal_share(before: list[int], after: list[int]) -> float:
    """The share of the machine's CPU time the hypervisor gave to other guests between two readings: time
    this machine's processes wanted but did not get, so every figure of the run is slower by about it."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    return round(delta[7] / max(sum(delta[:8]), 1), 3)


def is_postgres(proc: Path) -> bool:
    try:
        return (proc / "comm").read_text().strip() == "postgres"
    except OSError:
        return False


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
        clients = server.clients()
        try:
            while True:
                with lock:
                    index = next(cursor, None)
                if index is None or errors:
                    return
                try:
                    sent = time.monotonic()
                    response = clients[index % len(clients)].post(path, content=bodies[index])
                    response.raise_for_status()
                    round_trips[index] = (time.monotonic() - sent) * 1000
                    responses[index] = response.content
                except BaseException as error:
                    errors.append(error)
                    return
        finally:
            for client in clients:
                client.close()

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
    cpu_before, db_before, started = server.cpu_s(), server.database_cpu_s(), time.monotonic()
    seconds, responses, round_trips = post_all(server, "/api/v1/events", bodies, args.threads)
    cpu, db_cpu = server.cpu_s() - cpu_before, server.database_cpu_s() - db_before
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
        "database_cpu_s": round(db_cpu, 2),
        "events_per_cpu_s_with_database": round(args.events / (cpu + db_cpu)),
        "outcomes": counts,
        "webhooks_expected": expected,
        "webhooks_delivered": delivered(),
        "all_delivered": drained,
        "ingest_and_delivery_s": round(drain_s, 2),
        "events_per_cpu_s_with_delivery": round(args.events / cpu_all),
    }


# --- 2. latency --------------------------------------------------------------------------------------


def latency(
    server: Server, receiver: Receiver, rate: float, seconds: float, senders: int, prefix: str, processes: int
) -> dict[str, Any]:
    """`ping` events for fresh instances at `rate` for `seconds` (whatever is not sent by then is not
    sent); each one's webhook receipt minus its 200, on the machine's monotonic clock (the senders and the
    receiver are processes of their own, and CLOCK_MONOTONIC is one clock for all of them).

    The load generator is `processes` processes of `senders / processes` threads each, on the standard
    library's `http.client`: one process of 32 httpx threads spent its GIL on the clients, fell behind the
    schedule at 300/s and wrote some `200` times >100 ms late (webhooks "received before their ack")."""
    count = round(rate * seconds)
    identify_all(server, prefix, count, 3)
    server.analyze()  # the instances just identified are counted in the statistics, as in service
    start = time.monotonic() + 0.5
    end = start + seconds
    context = multiprocessing.get_context("fork")
    pipes, children = [], []
    for number in range(processes):
        parent, child = context.Pipe(duplex=False)
        job = (server.urls, server.key, prefix, range(number, count, processes), rate, start, end)
        threads = max(1, senders // processes)
        children.append(context.Process(target=_sender_process, args=(job, threads, child), daemon=True))
        pipes.append(parent)
    cpu_before, db_before = server.cpu_s(), server.database_cpu_s()
    for process in children:
        process.start()
    sent, acked, scheduled, client_cpu_s = [0.0] * count, [0.0] * count, [False] * count, 0.0
    for pipe, process in zip(pipes, children, strict=True):
        rows, cpu_s_ = pipe.recv()
        client_cpu_s += cpu_s_
        for i, sent_at, acked_at, was_scheduled in rows:
            sent[i], acked[i], scheduled[i] = sent_at, acked_at, was_scheduled
        process.join()
    send_s = time.monotonic() - start
    done = [i for i in range(count) if acked[i]]
    names = {f"{prefix}{i}": i for i in done}
    receiver.wait_for(lambda: len(receiver.by_n(prefix).keys() & names.keys()) >= len(done), 30)
    cpu, db_cpu = server.cpu_s() - cpu_before, server.database_cpu_s() - db_before
    received = {names[n]: mono for n, mono in receiver.by_n(prefix).items() if n in names}
    latencies_ms = [(received[i] - acked[i]) * 1000 for i in done if i in received]
    lag_ms = [(sent[i] - start - i / rate) * 1000 for i in done]
    slow: dict[int, int] = {}  # when the tail happened: second of the run → pings over 100 ms
    for i in done:
        if i in received and (received[i] - acked[i]) * 1000 > 100:
            second = int(sent[i] - start)
            slow[second] = slow.get(second, 0) + 1
    return {
        "offered_rate": rate,
        "seconds": seconds,
        "senders": senders,
        "sender_processes": processes,
        "offered": count,
        "sent": len(done),
        "achieved_rate": round(len(done) / (max(sent) - min(s for s in sent if s)), 1),
        "scheduled": sum(scheduled),
        "delivered": len(latencies_ms),
        "latency_ms": summary(latencies_ms),
        "request_ms": summary([(acked[i] - sent[i]) * 1000 for i in done]),
        "send_lag_ms": summary(lag_ms),
        "over_100_ms_by_second": dict(sorted(slow.items())),
        "server_cores_used": round(cpu / send_s, 2),
        # Ingest, delivery and shipping per event: less sensitive than latency to other load on the machine.
        "server_cpu_ms_per_event": round(cpu / max(len(done), 1) * 1000, 2),
        "database_cpu_ms_per_event": round(db_cpu / max(len(done), 1) * 1000, 2),
        "client_cpu_ms_per_event": round(client_cpu_s / max(len(done), 1) * 1000, 2),
    }


def _sender_process(job: tuple[Any, ...], threads: int, report: Any) -> None:
    """One sender process: `threads` threads post the events `indices` names, each at its scheduled time
    (`start + i / rate`), until `end`; reports (i, sent, acked, scheduled) rows and its own CPU seconds."""
    urls, key, prefix, indices, rate, start, end = job
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    cursor, lock = iter(indices), threading.Lock()
    rows: list[tuple[int, float, float, bool]] = []

    def send() -> None:
        connections = [http.client.HTTPConnection(urlsplit(url).netloc, timeout=120) for url in urls]
        try:
            while True:
                with lock:
                    i = next(cursor, None)
                if i is None or time.monotonic() > end:
                    return
                pause = start + i / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                body = orjson.dumps(
                    {
                        "name": "ping",
                        "ids": [f"{prefix}{i}"],
                        "model": "customer",
                        "properties": {"n": f"{prefix}{i}"},
                    }
                )
                connection = connections[i % len(connections)]
                sent_at = time.monotonic()
                connection.request("POST", "/api/v1/events", body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
                acked_at = time.monotonic()
                ok = response.status == 200 and bool(orjson.loads(answer)["results"][0]["scheduled"])
                with lock:
                    rows.append((i, sent_at, acked_at, ok))
        finally:
            for connection in connections:
                connection.close()

    workers = [threading.Thread(target=send) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    report.send((rows, time.process_time()))


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

# The worker's two queries on action_jobs, as the store runs them (store/outbox.py: the claim's subquery,
# which PostgreSQL locks FOR UPDATE SKIP LOCKED, and next_due_ms).
CLAIM_SQL = "SELECT id FROM action_jobs WHERE next_ms <= :now ORDER BY next_ms LIMIT :limit"
NEXT_DUE_SQL = "SELECT min(next_ms) FROM action_jobs WHERE next_ms IS NOT NULL"
# The shipper's prune (store/eventlog.py), at most once a minute.
PRUNE_SQL = "DELETE FROM event_log WHERE seq <= :seq AND received_ms < :before"
COPIED = "funnel_id, step_index, action_index, action_type, model, spec_id, event_id, event, event_properties"
INSERTED = (
    f"key, {COPIED}, event_ts_ms, instance_id, status, due_ms, next_ms, attempts, created_ms, updated_ms"
)
# Copies of a real job with distinct keys, spread over the real instances, due a second apart.
PENDING_SQL = {
    "sqlite": f"""
INSERT INTO action_jobs ({INSERTED})
WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n + 1 < :count)
SELECT 'bench-pending-' || n, {COPIED}, t.event_ts_ms, :first_instance + n % :instances, 'scheduled',
       :due_ms + n * 1000, :due_ms + n * 1000, 0, :now_ms, :now_ms
FROM seq, (SELECT * FROM action_jobs WHERE id = :template) AS t""",
    "postgresql": f"""
INSERT INTO action_jobs ({INSERTED})
SELECT 'bench-pending-' || n, {COPIED}, t.event_ts_ms, i.ids[1 + n % cardinality(i.ids)], 'scheduled',
       :due_ms + n * 1000, :due_ms + n * 1000, 0, :now_ms, :now_ms
FROM generate_series(0, :count - 1) AS n, (SELECT * FROM action_jobs WHERE id = :template) AS t,
     (SELECT array_agg(id ORDER BY id) AS ids FROM instances) AS i""",
}
DUE_SQL = f"""
INSERT INTO action_jobs ({INSERTED})
SELECT :key, {COPIED}, event_ts_ms, instance_id, 'scheduled', :due_ms, :due_ms, 0, :now_ms, :now_ms
FROM action_jobs WHERE id = :template"""


class StateDB:
    """The bench's own connection to the state store, opened while the server is down: the SQLite file of
    a single node, or the PostgreSQL database (autocommit). SQL is written with `:name` parameters."""

    def __init__(self, server: Server) -> None:
        self.postgres = server.state_url is not None
        if server.state_url is not None:
            import psycopg  # only a PostgreSQL run needs it

            self.pg = psycopg.connect(server.state_url, autocommit=True)
        else:
            self.lite = sqlite3.connect(server.data_dir / "state.sqlite3", isolation_level=None)

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        if self.postgres:
            cursor = self.pg.execute(re.sub(r":(\w+)", r"%(\1)s", sql.replace("%", "%%")), params or {})
            return cursor.fetchall() if cursor.description else []
        if sql.lstrip().startswith("INSERT"):  # one transaction, as BEGIN IMMEDIATE … COMMIT
            self.lite.execute("BEGIN IMMEDIATE")
            self.lite.execute(sql, params or {})
            self.lite.execute("COMMIT")
            return []
        return self.lite.execute(sql, params or {}).fetchall()

    def plan(self, sql: str, params: dict[str, Any]) -> list[str]:
        if self.postgres:
            return [str(row[0]).strip() for row in self.execute(f"EXPLAIN {sql}", params)]
        return [str(row[3]) for row in self.execute(f"EXPLAIN QUERY PLAN {sql}", params)]

    def median_ms(self, sql: str, params: dict[str, Any], repeat: int) -> float:
        self.execute(sql, params)  # warm the page cache, as a running worker's would be
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            self.execute(sql, params)
            times.append((time.perf_counter() - started) * 1000)
        return round(statistics.median(times), 3)

    def close(self) -> None:
        (self.pg if self.postgres else self.lite).close()


def idle_cores(server: Server, seconds: float) -> float:
    """Cores the server uses while no request comes in (the workers' polling and the shipper)."""
    before = server.cpu_s()
    time.sleep(seconds)
    return round((server.cpu_s() - before) / seconds, 3)


def due_precision(server: Server, receiver: Receiver, args: argparse.Namespace) -> dict[str, Any]:
    server.stop()
    db = StateDB(server)
    try:
        [(far_template,)] = db.execute(
            "SELECT id FROM action_jobs WHERE funnel_id = 'onboarding' AND status = 'scheduled' LIMIT 1"
        )
        [(due_template,)] = db.execute("SELECT id FROM action_jobs WHERE funnel_id = 'latency' LIMIT 1")
        [(first, last, instances)] = db.execute("SELECT min(id), max(id), count(*) FROM instances")
        # SQLite spreads the jobs by arithmetic on ids (PostgreSQL by an array of them: its ids have gaps).
        assert db.postgres or last - first + 1 == instances, "instance ids are not contiguous"
        now_ms = time.time_ns() // 1_000_000
        started = time.perf_counter()
        pending_params = {
            "count": args.pending,
            "first_instance": first,
            "instances": instances,
            "due_ms": now_ms + 30 * 86_400_000,
            "now_ms": now_ms,
            "template": far_template,
        }
        db.execute(PENDING_SQL["postgresql" if db.postgres else "sqlite"], pending_params)
        if db.postgres:
            db.execute("ANALYZE action_jobs")  # as autovacuum would after such an insert
        insert_s = time.perf_counter() - started
        [(pending,)] = db.execute("SELECT count(*) FROM action_jobs WHERE next_ms IS NOT NULL")
        print(
            f"  inserted {args.pending:,} pending jobs in {insert_s:.1f}s ({pending:,} pending)", flush=True
        )
        claim_params = {"now": now_ms, "limit": 16}
        [(log_rows, last_seq)] = db.execute("SELECT count(*), max(seq) FROM event_log")
        # As the shipper runs it: nothing is old enough to go.
        prune_params = {"seq": last_seq, "before": now_ms - 7 * 86_400_000}
        plans = {
            "claim": db.plan(CLAIM_SQL, claim_params),
            "next_due": db.plan(NEXT_DUE_SQL, {}),
            "prune": db.plan(PRUNE_SQL, prune_params),
        }
        for name, lines in plans.items():
            print(f"  EXPLAIN ({name}): {' | '.join(lines)}")
        claim_ms = db.median_ms(CLAIM_SQL, claim_params, 200)
        next_due_ms = db.median_ms(NEXT_DUE_SQL, {}, 25)
        prune_ms = db.median_ms(PRUNE_SQL, prune_params, 9)
        # Due a few seconds after the server should be up again (it took `started_s` the first time).
        first_due_ms = time.time_ns() // 1_000_000 + round((server.started_s * 1.5 + args.lead) * 1000)
        due = {f"bench-due-{i}": first_due_ms + i * args.spacing_ms for i in range(args.due_jobs)}
        for key, due_ms in due.items():
            db.execute(DUE_SQL, {"key": key, "due_ms": due_ms, "now_ms": now_ms, "template": due_template})
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
        (
            "… CPU per event: server (ingest + delivery); PostgreSQL; load generator",
            f"{run['server_cpu_ms_per_event']} ms; {run['database_cpu_ms_per_event']} ms; "
            f"{run.get('client_cpu_ms_per_event', '?')} ms",
            "",
        ),
    ]


def report(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The table's rows for the parts that ran."""
    rows: list[tuple[str, str, str]] = []
    if put := results.get("throughput"):
        rows += [
            (f"events/s, batches of {BATCH:,}", f"{put['events_per_s']:,}", ""),
            ("server cores used during the run", f"{put['server_cores_used']}", ""),
            (
                "events per server CPU-second",
                f"{put['events_per_cpu_s']:,}",
                f"≥ 5,000 per core — {met(put['events_per_cpu_s'] >= 5000)}",
            ),
            ("… counting the deliveries it caused", f"{put['events_per_cpu_s_with_delivery']:,}", ""),
            ("… counting PostgreSQL's CPU too", f"{put['events_per_cpu_s_with_database']:,}", ""),
            (
                "webhooks delivered (throughput run)",
                f"{put['webhooks_delivered']:,} / {put['webhooks_expected']:,} in "
                f"{put['ingest_and_delivery_s']} s",
                "",
            ),
        ]
    if "latency" in results:
        rows += [
            *latency_rows(results["latency_light"], target=False),
            *latency_rows(results["latency"], target=True),
        ]
    if due := results.get("due"):
        late = due["late_ms"]
        rows += [
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
    return rows


def recreate_database(url: str) -> None:
    """DROP and CREATE the database `url` names (which must contain 'bench'), connected to the same
    server's `postgres` database."""
    import psycopg  # only a PostgreSQL run needs it
    from psycopg import sql

    name = str(psycopg.conninfo.conninfo_to_dict(url).get("dbname", ""))
    if "bench" not in name:
        raise SystemExit(f"--state-url: the bench drops and re-creates the database; {name!r} lacks 'bench'")
    with psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname="postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def topology(args: argparse.Namespace) -> str:
    store = "PostgreSQL" if args.state_url else "SQLite"
    nodes = f"{args.nodes} node{'s' if args.nodes > 1 else ''}"
    if args.workers:
        return f"{store}, {nodes}, {args.workers} worker{'s' if args.workers > 1 else ''}"
    return f"{store}, {nodes}, delivery {args.delivery}"


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
    parser.add_argument(
        "--warm-seconds",
        type=float,
        default=10,
        help="then, before the measured run, pings at --rate for this long (not reported), then ANALYZE "
        "(PostgreSQL): the measured run sees tables with rows and statistics, as a server in service does",
    )
    parser.add_argument(
        "--senders",
        type=int,
        default=64,
        help="client threads in part 2, over --sender-processes (each waits for its answer: 32 at 60 ms round "
        "trips offer at most 533/s)",
    )
    parser.add_argument(
        "--sender-processes",
        type=int,
        default=4,
        help="processes the senders are spread over (one Python process of 32 client threads falls behind)",
    )
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
        "--nodes", type=int, default=1, help="`funnels serve` processes (more than 1 needs --state-url)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="`funnels worker` processes; with any, the nodes run --delivery off",
    )
    parser.add_argument(
        "--worker-concurrency", type=int, help="`funnels worker --concurrency` (else its default)"
    )
    parser.add_argument(
        "--state-url",
        help="a PostgreSQL database for the state (else SQLite in the node's data directory); the bench "
        "DROPS and re-creates it, so its name must contain 'bench', e.g. "
        "postgresql://postgres@127.0.0.1:5432/funnels_bench",
    )
    parser.add_argument("--parts", default="123", help="which parts to run, e.g. 12 or 3")
    parser.add_argument("--out", type=Path, default=DATA / "automation.json", help="where the JSON goes")
    args = parser.parse_args()
    if args.nodes > 1 and not args.state_url:
        parser.error("--nodes above 1 needs --state-url: the nodes share the state store")

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    if args.state_url:
        recreate_database(args.state_url)
    receiver = Receiver()
    config = WORK / "config.json"
    config.write_text(json.dumps(bench_config(receiver.url), indent=2))
    server = Server(
        WORK,
        config,
        nodes=args.nodes,
        workers=args.workers,
        state_url=args.state_url,
        delivery=args.delivery,
        worker_concurrency=args.worker_concurrency,
    )
    server.create_key()
    bench_cpu, machine_cpu = time.process_time(), cpu_times()
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "args": {**vars(args), "out": str(args.out)},
        "topology": topology(args),
        "load_average_before": os.getloadavg(),  # other work on the machine skews every figure
        "commit": source_version(),
    }
    try:
        print(f"{results['topology']}: started in {server.start():.1f}s on {server.urls}", flush=True)
        if "1" in args.parts:
            print("1. throughput", flush=True)
            results["throughput"] = throughput(server, receiver, args)
            print(json.dumps(results["throughput"], indent=2), flush=True)
        if "2" in args.parts:
            print("2. latency", flush=True)
            results["latency_light"] = latency(
                server,
                receiver,
                args.light_rate,
                args.light_seconds,
                args.senders,
                "q",
                args.sender_processes,
            )
            print(json.dumps(results["latency_light"], indent=2), flush=True)
            if args.warm_seconds:  # a database in service: its tables hold rows, and their statistics
                warm = latency(
                    server, receiver, args.rate, args.warm_seconds, args.senders, "w", args.sender_processes
                )
                print(f"  warmed up: {warm['delivered']:,} pings at {args.rate:g}/s", flush=True)
                server.analyze()
            results["latency"] = latency(
                server, receiver, args.rate, args.seconds, args.senders, "p", args.sender_processes
            )
            print(json.dumps(results["latency"], indent=2), flush=True)
        if "3" in args.parts:
            print("3. due-time precision", flush=True)
            if "1" not in args.parts:  # part 3 copies one of part 1's delayed jobs
                identify_all(server, "c", args.instances, args.threads)
                post_all(server, "/api/v1/events", batches(DELAYED_JOB), 1)
            if "2" not in args.parts:  # … and one of part 2's immediate ones
                latency(server, receiver, 10, 0.2, 1, "t")
            results["due"] = due_precision(server, receiver, args)
            print(json.dumps(results["due"], indent=2), flush=True)
    finally:
        try:
            server.stop()
        finally:
            receiver.close()
    results["bench_process_cpu_s"] = round(time.process_time() - bench_cpu, 1)
    results["load_average_after"] = os.getloadavg()
    results["steal_share"] = steal_share(machine_cpu, cpu_times())
    if (version := source_version()) != results["commit"]:
        results["commit"] += f", then {version} (src changed during the run)"
    args.out.write_text(json.dumps(results, indent=2))
    rows = report(results)
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(
        f"\n{results['topology']}, commit {results['commit']}, {results['steal_share']:.0%} of the CPU stolen "
        f"by the hypervisor; written to {args.out}"
    )


if __name__ == "__main__":
    main()
