"""A real `funnels` server in a subprocess, for tests about the process (crash, restart, signals)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent / "funnels"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_key(data_dir: Path, *scopes: str) -> str:
    args = [arg for scope in scopes for arg in ("--scope", scope)]
    return subprocess.run(
        [str(BIN), "keys", "create", *args, "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def start_server(data_dir: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """Start `funnels serve` and wait until /healthz answers 200; its output goes to `server.log`."""
    log = data_dir.parent / "server.log"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [str(BIN), "serve", "--data-dir", str(data_dir), "--port", str(port), *extra],
            stdout=sink,
            stderr=sink,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    process.wait()
    raise AssertionError(f"server did not start: {log.read_text()}")
