"""A real `funnels` server in a subprocess, for tests about the process (crash, restart, signals), and a
sender thread that streams batches to it until it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx

from funnels.services import Services
from tests.receivers import free_port as free_port  # the process tests import it from here

T = TypeVar("T")

BIN = Path(sys.executable).parent / "funnels"


def create_key(data_dir: Path, *scopes: str, state_url: str | None = None) -> str:
    args = [arg for scope in scopes for arg in ("--scope", scope)]
    if state_url is not None:
        args += ["--state-url", state_url]
    return subprocess.run(
        [str(BIN), "keys", "create", *args, "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def start_server(data_dir: Path, port: int, *extra: str, timeout: float = 30) -> subprocess.Popen[bytes]:
    """Start `funnels serve` and wait (up to `timeout` s) until /healthz answers 200; its output goes to
    `server.log`."""
    log = data_dir.parent / "server.log"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [str(BIN), "serve", "--data-dir", str(data_dir), "--port", str(port), *extra],
            stdout=sink,
            stderr=sink,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    process.wait()
    raise AssertionError(f"server did not start: {log.read_text()}")


def client(port: int, key: str, timeout: float = 5.0) -> httpx.Client:
    """An HTTP client on the server at `port`, authorized with `key` (5 s is httpx's default timeout)."""
    return httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=timeout
    )


@contextmanager
def sending(port: int, key: str, post_batch: Callable[[httpx.Client, int], list[str]]) -> Iterator[list[str]]:
    """A thread that calls `post_batch(client, n)` for n = 0, 1, … until the block ends or a post fails;
    yields the list it grows with the ids each call returns (those the server acknowledged). An
    `httpx.HTTPError` (the server died mid-request) ends the thread: that batch was never acknowledged."""
    acknowledged: list[str] = []
    stop = threading.Event()

    def run() -> None:
        with client(port, key) as http:
            batch = 0
            while not stop.is_set():
                try:
                    acknowledged.extend(post_batch(http, batch))
                except httpx.HTTPError:
                    return
                batch += 1

    thread = threading.Thread(target=run, name="sender")
    thread.start()
    try:
        yield acknowledged
    finally:
        stop.set()
        thread.join()


def wait_until(check: Callable[[], T], timeout: float = 20.0, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy, and return that; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s")


def kill_9(server: subprocess.Popen[bytes]) -> None:
    """SIGKILL the server: no shutdown, no flush, whatever it was doing is cut off."""
    os.kill(server.pid, signal.SIGKILL)
    server.wait()


def stored_event_counts(data_dir: Path) -> dict[str, int]:
    """How many rows the event store holds per event id, once everything in the log has been shipped (the
    data directory's server must have stopped)."""
    svc = Services.open(data_dir)
    try:
        svc.shipper.flush()
        rows = svc.events.query("SELECT event_id, count() FROM events GROUP BY event_id").rows
    finally:
        svc.close()
    return {event_id: int(count) for event_id, count in rows}
