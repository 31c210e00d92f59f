"""Two `funnels serve` nodes and three `funnels worker` processes on one PostgreSQL database (issue 11):
10,000 identifies and events through a real HTTP client, spread over both nodes, while one node and one
worker are killed with `kill -9` and started again. Nothing acknowledged is lost from either node's
analytics or from funnel progress, every scheduled action is delivered, and no action is ever sent by two
workers at once: the only repeats are the killed worker's sends, once its leases ran out.

How it runs: the nodes serve with `--delivery off`, so the three `funnels worker` processes are all the
delivery there is (the default, a worker child per node, would make five workers and tie a worker's death
to its node's). A customer is identified on one node and sends its events to the other; a request that
fails (its node was killed) is sent again, with the same message ids, to the other node, as a client
behind a load balancer would, so in the end every event was acknowledged exactly once per message id and
each node's counts are exact: every event present, none twice. The receiver answers each send after
200 ms, so sends are in flight when the worker dies; what that worker held is read from its leases in the
database just after the kill.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.processes import BIN, client, create_key, free_port, kill_9, start_server, wait_until
from tests.receivers import NETWORK, HttpReceiver, Reply, now_and_later_webhooks

pytestmark = pytest.mark.process  # a real server or CLI subprocess

BATCHES = 100
USERS_PER_BATCH = 10
VIEWS = tuple(f"view_{n}" for n in range(8))  # the funnel API charts up to 10 steps: these, identify, sign_up
USERS = BATCHES * USERS_PER_BATCH
EVENTS = USERS * (2 + len(VIEWS))  # an identify, a sign_up and the views per customer: 10,000
SEND_DELAY_S = 0.2  # the receiver's time per request: sends are in flight when the worker dies


def cluster_config(receiver: HttpReceiver) -> dict[str, Any]:
    return {
        "models": [{"name": "customer"}],
        "network": NETWORK,
        # A lease lasts 2 × timeout + 5 s: the killed worker's sends are retried 9 s after it took them.
        "delivery": {"timeout": "2s", "backoffBase": "1s", "backoffMax": "2s", "maxAttempts": 20},
        "funnels": [
            {
                "id": "signup",
                "forModels": "customer",
                "steps": [
                    {"event": "onFunctionaryIdentify"},
                    {
                        "event": "sign_up",
                        "actions": now_and_later_webhooks(receiver),
                    },
                ],
            }
        ],
    }


def customers(batch: int) -> list[str]:
    return [f"c{batch}-{i}" for i in range(USERS_PER_BATCH)]


def identifies(batch: int) -> list[dict[str, Any]]:
    return [{"model": "customer", "ids": [id_], "messageId": f"i-{id_}"} for id_ in customers(batch)]


def events(batch: int) -> list[dict[str, Any]]:
    return [
        {"name": name, "ids": [id_], "messageId": f"{name}-{id_}"}
        for id_ in customers(batch)
        for name in ("sign_up", *VIEWS)
    ]


@dataclass
class Stream:
    """Two sender threads, each posting every other batch: a batch's identifies to one node and its events
    to the other. A request cut off by a node's death (or answered 503) goes to the other node, the same
    body, until one acknowledges it; any other answer than 200 or 503 fails the test."""

    ports: list[int]
    key: str
    acknowledged: list[int] = field(default_factory=list)  # batches done, in order
    retried: list[tuple[int, str, str]] = field(default_factory=list)  # (batch, path, why) of each retry
    failure: str | None = None  # why a sender gave up
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for first in (0, 1):
            thread = threading.Thread(target=self._run, args=(first,), name=f"sender-{first}")
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def done(self) -> int:
        """How many batches were acknowledged so far (AssertionError if a sender gave up)."""
        if self.failure is not None:
            raise AssertionError(self.failure)
        return len(self.acknowledged)

    def _run(self, first: int) -> None:
        clients = [client(port, self.key, timeout=15) for port in self.ports]
        try:
            for batch in range(first, BATCHES, 2):
                if self._stop.is_set():
                    return
                self._post(clients, batch, "/api/v1/identify", identifies(batch), batch % 2)
                self._post(clients, batch, "/api/v1/events", events(batch), (batch + 1) % 2)
                self.acknowledged.append(batch)
        except AssertionError as error:
            self.failure = str(error)
        finally:
            for http in clients:
                http.close()

    def _post(
        self, clients: list[httpx.Client], batch: int, path: str, body: list[dict[str, Any]], node: int
    ) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                response = clients[node].post(path, json=body)
            except httpx.TransportError as error:  # the node is dead, or died while answering
                why = type(error).__name__
            else:
                if response.status_code == 200:
                    return
                if response.status_code != 503:  # only an unavailable store is worth another try
                    raise AssertionError(f"batch {batch}: {path}: {response.status_code} {response.text}")
                why = f"503 {response.json()['error']['message']}"
            self.retried.append((batch, path, why))
            node = 1 - node
            time.sleep(0.05)
        raise AssertionError(f"batch {batch}: {path} never acknowledged; last: {self.retried[-1:]}")


def start_worker(directory: Path, config: Path, state_url: str) -> subprocess.Popen[bytes]:
    """`funnels worker` with a data directory of its own; returns once it says it is delivering."""
    data_dir = directory / "data"
    log = directory / "worker.log"
    directory.mkdir(parents=True, exist_ok=True)
    offset = log.stat().st_size if log.exists() else 0  # a restart appends to the log
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [
                str(BIN),
                "worker",
                "--config",
                str(config),
                "--state-url",
                state_url,
                "--data-dir",
                str(data_dir),
            ],
            stdout=sink,
            stderr=sink,
        )
    try:
        wait_until(lambda: b"delivering from" in log.read_bytes()[offset:] or process.poll() is not None, 60)
    except AssertionError:
        process.kill()
        process.wait()
        raise AssertionError(f"worker did not start: {log.read_text()}") from None
    if process.poll() is not None:
        raise AssertionError(f"worker exited: {log.read_text()}")
    return process


def held_by(state_url: str, worker: subprocess.Popen[bytes]) -> set[str]:
    """The idempotency keys of the jobs the worker holds: leased to it (its leases are named after its pid)
    and still being sent."""
    with psycopg.connect(state_url) as connection:
        rows = connection.execute(
            "SELECT key FROM action_jobs WHERE status = 'sending' AND lease_owner LIKE %s",
            (f"worker-{worker.pid}-%",),
        ).fetchall()
    return {key for (key,) in rows}


def sending_now(receiver: HttpReceiver, state_url: str, worker: subprocess.Popen[bytes]) -> bool:
    """Whether the receiver holds a send of the worker's that arrived less than half its answer time ago."""
    recent = time.monotonic() - SEND_DELAY_S / 2
    at_receiver = {r.headers["idempotency-key"] for r in receiver.unanswered() if r.received_at > recent}
    return bool(at_receiver and at_receiver & held_by(state_url, worker))


def satisfied(state_url: str) -> dict[int, set[str]]:
    """Funnel progress in the database: per step of `signup`, the customers (primary ids) that reached it."""
    with psycopg.connect(state_url) as connection:
        rows = connection.execute(
            "SELECT s.step_index, i.primary_id FROM satisfied_steps s JOIN instances i ON i.id = s.instance_id "
            "WHERE s.funnel_id = 'signup'"
        ).fetchall()
    steps: dict[int, set[str]] = {}
    for step, id_ in rows:
        steps.setdefault(step, set()).add(id_)
    return steps


def stored_counts(http: httpx.Client) -> dict[tuple[str, str], int]:
    """A node's event store: events per (type, name), all time."""
    response = http.get("/v0/events/names", params={"limit": 1000})
    response.raise_for_status()
    return {(row["type"], row["event"]): row["count"] for row in response.json()["data"]}


def has_shipped(http: httpx.Client, counts: dict[tuple[str, str], int]) -> bool:
    return stored_counts(http) == counts


def funnel_users(http: httpx.Client, params: dict[str, str]) -> list[int]:
    response = http.get("/v0/funnel", params=params)
    assert response.status_code == 200, response.text
    return [row["users"] for row in response.json()["data"]]


def instance_view(http: httpx.Client, id_: str) -> tuple[list[str | None], list[str], list[str]]:
    """A customer as a node's admin API shows it: the event ids that satisfied the funnel's steps, the
    event ids in its timeline (sorted), and its actions' statuses."""
    response = http.get(f"/v0/models/customer/{id_}", params={"limit": 200})
    assert response.status_code == 200, response.text
    body = response.json()
    (funnel,) = body["funnels"]
    items = body["timeline"]["items"]
    return (
        [step["event_id"] for step in funnel["steps"]],
        sorted(item["id"] for item in items if item["kind"] == "event"),
        [item["status"] for item in items if item["kind"] == "action"],
    )


def job_totals(http: httpx.Client) -> dict[str, int]:
    statuses = ("scheduled", "sending", "sent", "failed", "dead", "cancelled", "unknown")
    return {
        status: http.get("/v0/actions", params={"status": status, "size": 1}).json()["total"]
        for status in statuses
    }


def stop(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_two_nodes_three_workers_kill_9_lose_nothing_and_send_nothing_twice_at_once(
    tmp_path: Path, http_receiver: HttpReceiver, postgres_url: str
) -> None:
    began = time.monotonic()
    http_receiver.default_reply = Reply(200, {}, {"ok": True}, delay_s=SEND_DELAY_S)
    config = tmp_path / "funnels.json"
    config.write_text(json.dumps(cluster_config(http_receiver)))
    ports = [free_port(), free_port()]
    node_dirs = [tmp_path / f"node{n}" / "data" for n in (0, 1)]
    for node_dir in node_dirs:
        node_dir.parent.mkdir()
    node_args = ("--state-url", postgres_url, "--config", str(config), "--delivery", "off")

    # Every process started, stopped at the end whatever happens.
    launched: list[tuple[subprocess.Popen[bytes], signal.Signals]] = []

    def start_node(n: int) -> subprocess.Popen[bytes]:
        process = start_server(node_dirs[n], ports[n], *node_args, timeout=60)
        launched.append((process, signal.SIGINT))
        return process

    def start_worker_n(n: int) -> subprocess.Popen[bytes]:
        process = start_worker(tmp_path / f"worker{n}", config, postgres_url)
        launched.append((process, signal.SIGTERM))
        return process

    stream: Stream | None = None
    try:
        # All at once: the five processes and `keys create` migrate the empty schema together.
        with ThreadPoolExecutor(6) as pool:
            key_made = pool.submit(
                create_key, tmp_path / "keys", "events:write", "query:read", "admin", state_url=postgres_url
            )
            started_nodes = [pool.submit(start_node, n) for n in (0, 1)]
            started_workers = [pool.submit(start_worker_n, n) for n in (0, 1, 2)]
            nodes = [future.result() for future in started_nodes]
            workers = [future.result() for future in started_workers]
            key = key_made.result()
        started = time.monotonic() - began

        stream = Stream(ports, key)
        stream.start()
        # Mid-stream, while the receiver holds a send of the first worker's: kill a node and that worker.
        wait_until(lambda: stream.done() >= BATCHES // 3, timeout=60, interval=0.05)
        wait_until(partial(sending_now, http_receiver, postgres_url, workers[0]), timeout=20, interval=0.01)
        kill_9(workers[0])
        kill_9(nodes[1])
        killed = time.monotonic()
        killed_at = len(stream.acknowledged)
        time.sleep(0.5)  # the server has ended the dead worker's connections: its leases are final
        held = held_by(postgres_url, workers[0])
        time.sleep(1.0)  # the stream goes on through the other node
        with ThreadPoolExecutor(2) as pool:
            restarted_node = pool.submit(start_node, 1)
            restarted_worker = pool.submit(start_worker_n, 0)
            nodes[1] = restarted_node.result()
            workers[0] = restarted_worker.result()
        stream.join(timeout=90)
        assert stream.failure is None, stream.failure
        assert sorted(stream.acknowledged) == list(range(BATCHES))
        streamed = time.monotonic() - began

        ids = [id_ for batch in range(BATCHES) for id_ in customers(batch)]
        expected = {(path, id_) for id_ in ids for path in ("/now", "/later")}
        http_clients = [client(port, key) for port in ports]
        try:
            # Every scheduled action delivered: all sent, nothing left to try on either node's view.
            def delivered() -> bool:
                return {(r.path, r.json["n"]) for r in http_receiver.unique()} >= expected and all(
                    job_totals(http)["sent"] == len(expected) for http in http_clients
                )

            wait_until(delivered, timeout=60, interval=0.5)
            for http in http_clients:
                assert job_totals(http) == {
                    "scheduled": 0,
                    "sending": 0,
                    "sent": len(expected),
                    "failed": 0,
                    "dead": 0,
                    "cancelled": 0,
                    "unknown": 0,
                }

            # Every event in both nodes' event stores, once: per name, exactly the customers' count.
            names = {("identify", "identify"), ("track", "sign_up"), *(("track", view) for view in VIEWS)}
            exact = dict.fromkeys(names, USERS)
            assert sum(exact.values()) == EVENTS
            for http in http_clients:
                wait_until(partial(has_shipped, http, exact), timeout=30, interval=0.5)
            # And per customer: an open funnel over the ten names has every customer at every step.
            today = datetime.now(UTC).date()
            steps = [
                {"type": "event", "event": "identify", "name": "identify"},
                *({"type": "track", "event": name, "name": name} for name in ("sign_up", *VIEWS)),
            ]
            every_event = {
                "date_from": str(today - timedelta(days=1)),
                "date_to": str(today + timedelta(days=1)),
                "steps": json.dumps(steps),
                "funnel_type": "open",
            }
            for http in http_clients:
                assert funnel_users(http, every_event) == [USERS] * len(steps)
                configured = http.get("/v0/funnels").json()["data"]
                assert [funnel["id"] for funnel in configured] == ["signup"]
                assert funnel_users(http, configured[0]["query"]) == [USERS, USERS]
            # The customers whose requests were cut off, as each node shows one: both steps reached by the
            # events sent, every event in its timeline once (from that node's event store), both actions sent.
            for batch in sorted({batch for batch, _, _ in stream.retried}):
                id_ = customers(batch)[0]
                for http in http_clients:
                    assert instance_view(http, id_) == (
                        [f"i-{id_}", f"sign_up-{id_}"],
                        sorted(
                            event["messageId"]
                            for event in [*identifies(batch), *events(batch)]
                            if id_ in event["ids"]
                        ),
                        ["sent", "sent"],
                    )
        finally:
            for http in http_clients:
                http.close()

        # Funnel progress: every customer reached both steps.
        assert satisfied(postgres_url) == {0: set(ids), 1: set(ids)}

        # One send at a time per action; repeats only of what the killed worker held, and the same action.
        overlaps = [
            (
                first.headers["idempotency-key"],
                f"{first.received_at - killed:+.2f}s",
                f"{then.received_at - killed:+.2f}s",
            )
            for first, then in http_receiver.overlapping()
        ]
        assert overlaps == [], f"sent twice at once (key, arrivals from the kill): {overlaps}"
        repeated = {key for key, requests in http_receiver.by_idempotency_key().items() if len(requests) > 1}
        assert repeated <= held, (sorted(repeated - held), sorted(held))
        for requests in http_receiver.by_idempotency_key().values():
            assert len({(r.path, r.body) for r in requests}) == 1
        assert len(http_receiver.unique()) == len(expected)
        arrivals = {
            key: [f"{r.received_at - killed:+.2f}s" for r in requests]
            for key, requests in http_receiver.by_idempotency_key().items()
            if key in held
        }
        assert repeated, f"no send of the killed worker's was repeated: its jobs' arrivals {arrivals}"
        assert stream.retried, "no request met the dead node"
        finished = time.monotonic() - began
        print(
            f"cluster: started in {started:.1f}s, streamed by {streamed:.1f}s, checked by {finished:.1f}s; "
            f"killed after {killed_at}/{BATCHES} batches holding {len(held)} job(s), {len(repeated)} "
            f"repeated; retries {dict(Counter(why for _, _, why in stream.retried))}; "
            f"{len(http_receiver.requests)} sends"
        )
    finally:
        if stream is not None:
            stream.join(timeout=0)
        for process, sig in launched:
            stop(process, sig)


def test_the_receiver_tells_two_sends_of_one_key_at_once_from_one_after_another(
    http_receiver: HttpReceiver,
) -> None:
    """The check above can fail: two sends of one key that overlap are found, one after the other are not."""
    http_receiver.default_reply = Reply(200, {}, {"ok": True}, delay_s=0.2)

    def send(key: str) -> None:
        httpx.post(f"{http_receiver.url}/now", json={}, headers={"Idempotency-Key": key}).raise_for_status()

    send("after")
    send("after")
    assert http_receiver.overlapping() == []
    at_once = [threading.Thread(target=send, args=("at-once",)) for _ in range(2)]
    for thread in at_once:
        thread.start()
    for thread in at_once:
        thread.join()
    pairs = http_receiver.overlapping()
    assert [
        (first.headers["idempotency-key"], second.headers["idempotency-key"]) for first, second in pairs
    ] == [("at-once", "at-once")]
