"""`funnels serve` delivers from a child process it supervises (`automation/process.py`): the child
delivers, is replaced when it dies, follows config reloads, and ends with the server, even a killed one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from funnels.automation.worker import Worker
from funnels.clock import SystemClock
from funnels.config import DeliveryPolicy
from funnels.store.state import StateStore, action_jobs
from tests.processes import client, create_key, free_port, start_server, wait_until
from tests.receivers import NETWORK, HttpReceiver

pytestmark = pytest.mark.process  # a real server or CLI subprocess


def children(pid: int) -> list[int]:
    """Live `funnels worker` processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == pid and stat[0] != "Z" and b"worker" in command:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return stat[0] != "Z"


class Server:
    def __init__(self, tmp_path: Path, receiver: HttpReceiver, *extra: str) -> None:
        self.config = tmp_path / "funnels.json"
        self.write_config(receiver, funnel_id="hello")
        self.data_dir = tmp_path / "data"
        self.key = create_key(self.data_dir, "events:write", "admin")
        self.port = free_port()
        self.process = start_server(self.data_dir, self.port, "--config", str(self.config), *extra)
        self.client = client(self.port, self.key, timeout=10)
        self.log = tmp_path / "server.log"

    def write_config(self, receiver: HttpReceiver, funnel_id: str, secret: str | None = None) -> None:
        hook = {
            "type": "webhook",
            "args": {"url": f"{receiver.url}/{funnel_id}", "body": {"id": "{{ ids[0] }}"}},
        }
        config: dict[str, object] = {
            "models": [{"name": "customer"}],
            "network": NETWORK,
            "funnels": [
                {"id": funnel_id, "forModels": "customer", "steps": {"event": "hello", "actions": hook}}
            ],
        }
        if secret is not None:
            config["webhook"] = {"secret": secret}
        self.config.write_text(json.dumps(config))

    def hello(self, id_: str) -> None:
        identified = self.client.post("/api/v1/identify", json={"model": "customer", "ids": [id_]})
        assert identified.status_code == 200, identified.text
        sent = self.client.post("/api/v1/events", json={"name": "hello", "ids": [id_]})
        assert sent.status_code == 200, sent.text
        assert sent.json()["results"][0]["scheduled"], sent.text

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=60)


@pytest.fixture
def server(tmp_path: Path, http_receiver: HttpReceiver) -> Iterator[Server]:
    running = Server(tmp_path, http_receiver)
    try:
        yield running
    finally:
        running.stop()


def delivered(receiver: HttpReceiver, path: str, id_: str) -> Callable[[], bool]:
    return lambda: any(r.path == path and r.json == {"id": id_} for r in receiver.requests)


def test_a_child_process_delivers_and_ends_when_the_server_is_killed(
    server: Server, http_receiver: HttpReceiver
) -> None:
    wait_until(lambda: len(children(server.process.pid)) == 1)
    (child,) = children(server.process.pid)
    server.hello("ada")
    wait_until(delivered(http_receiver, "/hello", "ada"))

    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    # The server's end of the wake-up pipe closed with it: the child finishes and exits on its own.
    wait_until(lambda: not alive(child))


def test_a_dead_delivery_process_is_replaced(server: Server, http_receiver: HttpReceiver) -> None:
    wait_until(lambda: len(children(server.process.pid)) == 1)
    (first,) = children(server.process.pid)
    # The replacement runs the server's config, not the file, which has been broken in the meantime.
    server.config.write_text("{not: a config")
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: children(server.process.pid) not in ([], [first]))
    (second,) = children(server.process.pid)
    assert second != first
    server.hello("grace")
    wait_until(delivered(http_receiver, "/hello", "grace"))
    assert "the delivery process exited with -9; starting another" in server.log.read_text()

    server.stop()  # SIGINT: the server stops its child before it exits
    assert not alive(second)


def test_a_reload_reaches_the_delivery_process(server: Server, http_receiver: HttpReceiver) -> None:
    server.hello("lin")
    wait_until(delivered(http_receiver, "/hello", "lin"))
    assert "funnels-signature" not in http_receiver.requests[-1].headers

    # A signing secret is a channel setting, which the delivering process reads from its own config.
    server.write_config(http_receiver, funnel_id="hello", secret="s3cret")
    reloaded = server.client.post("/v0/config/reload")
    assert reloaded.status_code == 200, reloaded.text
    # POST /v0/config/reload prints nothing; the child's SIGHUP handler prints this line.
    wait_until(lambda: "config reloaded: 1 funnels" in server.log.read_text())
    server.hello("mo")
    wait_until(delivered(http_receiver, "/hello", "mo"))
    assert http_receiver.requests[-1].headers["funnels-signature"].startswith("v1=")


@pytest.mark.parametrize(("mode", "delivers"), [("thread", True), ("off", False)])
def test_other_delivery_modes_start_no_child(
    tmp_path: Path, http_receiver: HttpReceiver, mode: str, delivers: bool
) -> None:
    running = Server(tmp_path, http_receiver, "--delivery", mode)
    try:
        running.hello("kay")
        if delivers:
            wait_until(delivered(http_receiver, "/hello", "kay"))
        else:
            time.sleep(1.5)  # longer than a worker's poll: nothing delivers without `funnels worker`
            assert not delivered(http_receiver, "/hello", "kay")()
        assert children(running.process.pid) == []
    finally:
        running.stop()


def test_python_dash_m_funnels_is_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "funnels", "worker", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Deliver due actions" in result.stdout


def test_a_killed_delivery_process_is_recovered_at_once_by_each_actions_guarantee(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    """kill -9 of the delivery child while its sends are held open by the receiver: the server releases
    its jobs at once (not after the 125 s lease). Webhooks (at-least-once) are sent again with the same key;
    Slack messages (at-most-once) in flight end `unknown`, are never sent again by themselves, and a retry
    sends one once more; jobs the child had claimed but not started are sent normally."""
    url = http_receiver.url
    config = tmp_path / "funnels.json"
    actions = [
        {"type": "slack", "args": {"url": f"{url}/slack", "content": "hi {{ ids[0] }}"}},
        {"type": "webhook", "args": {"url": f"{url}/hook", "body": {"id": "{{ ids[0] }}"}}},
    ]
    funnel = {"id": "welcome", "forModels": "customer", "steps": {"event": "hello", "actions": actions}}
    # A 60 s send timeout: on a loaded machine the first sends must still be in flight when the last start.
    delivery = {"timeout": "60s"}
    config.write_text(
        json.dumps(
            {"models": [{"name": "customer"}], "funnels": [funnel], "network": NETWORK, "delivery": delivery}
        )
    )
    data_dir = tmp_path / "data"
    key = create_key(data_dir, "events:write", "admin")
    port = free_port()
    customers = [f"c{n}" for n in range(8)]  # 8 × 2 sends: the child's 16 slots, all held open
    for path in ("/slack", "/hook"):
        for _ in customers:  # the child is killed long before its 60 s send timeout
            http_receiver.reply(path, 200, {"ok": True}, delay_s=600)
    server = start_server(data_dir, port, "--config", str(config))
    state = StateStore(data_dir / "state.sqlite3")
    try:
        with client(port, key, timeout=10) as http:

            def hello(id_: str) -> None:
                identified = http.post("/api/v1/identify", json={"model": "customer", "ids": [id_]})
                assert identified.status_code == 200, identified.text
                assert http.post("/api/v1/events", json={"name": "hello", "ids": [id_]}).status_code == 200

            def listed(status: str) -> list[dict[str, Any]]:
                return list(http.get("/v0/actions", params={"status": status, "size": 200}).json()["data"])

            (child,) = wait_until(lambda: children(server.pid))
            for id_ in customers:
                hello(id_)
            wait_until(lambda: len(http_receiver.requests) == 16, timeout=30)  # all in flight
            keys: dict[str, set[str]] = {"/slack": set(), "/hook": set()}
            for request in http_receiver.requests:
                keys[request.path].add(request.headers["idempotency-key"])
            # Two more jobs, claimed under the child's lease name (its slots are full, so it would only
            # have claimed them later): claimed, their sends not started, when it dies.
            with state.read() as connection:
                (owner,) = set(
                    connection.execute(
                        select(action_jobs.c.lease_owner).where(action_jobs.c.status == "sending")
                    ).scalars()
                )
            hello("late")
            claimer = Worker(state, lambda: (DeliveryPolicy(), {}), SystemClock(), owner=owner)
            assert sorted(job.action_type for job in claimer.claim(16)) == ["slack", "webhook"]

            os.kill(child, signal.SIGKILL)
            # Released when the server sees the child die, sent by its replacement (after 1 s): the lease
            # (2 × 60 s + 5 s) has not ended when this wait gives up.
            wait_until(lambda: len(http_receiver.requests) == 16 + 8 + 2, timeout=15)
            after = http_receiver.requests[16:]
            assert sorted(r.path for r in after) == ["/hook"] * 9 + ["/slack"]
            late = {r.path: r for r in after if r.json in ({"id": "late"}, {"text": "hi late"})}
            assert set(late) == {"/slack", "/hook"}  # claimed, not started: sent normally
            resent = [r for r in after if r not in late.values()]
            assert {r.headers["idempotency-key"] for r in resent} == keys["/hook"]  # the same keys

            unknown = wait_until(lambda: len(listed("unknown")) == 8 and listed("unknown"))
            assert {job["type"] for job in unknown} == {"slack"}
            assert {job["idempotency_key"] for job in unknown} == keys["/slack"]
            assert all(job["next_attempt_at"] is None for job in unknown)
            wait_until(lambda: len(listed("sent")) == 10)  # 8 webhooks again, and the late pair
            assert [r.path for r in http_receiver.requests].count("/slack") == 9  # none sent again
            log = (tmp_path / "server.log").read_text()
            assert "released 10 job(s) of the delivery process that exited; 8 at-most-once" in log

            job = unknown[0]
            retried = http.post(f"/v0/actions/{job['id']}/retry")
            assert retried.status_code == 200, retried.text
            wait_until(lambda: http.get(f"/v0/actions/{job['id']}").json()["status"] == "sent")
            slack = [r for r in http_receiver.requests if r.path == "/slack"]
            assert len(slack) == 10
            assert slack[-1].headers["idempotency-key"] == job["idempotency_key"]
            assert len(listed("unknown")) == 7
    finally:
        state.close()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
