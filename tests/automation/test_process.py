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

import pytest

from tests.processes import client, create_key, free_port, start_server, wait_until
from tests.receivers import NETWORK, HttpReceiver


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
