"""`server.json`: how the CLI finds the server that holds a data directory, and its local credential.

chDB lets one process open a data directory's event store, and it locks the directory even for a read-only
session (docs/architecture.md, "The CLI beside a running server"). So `funnels serve` announces itself:
once it listens, it writes `<data-dir>/server.json` (its URL on this machine, pid, start time and a
credential made for this run), and removes the file when it shuts down. `funnels query`, `funnels import`
and `funnels catalog` read the file and, when its process is alive, go through that server's HTTP API with
the credential; otherwise (no file, or one a killed server left) they open the directory themselves.

The file is written to a temporary name and renamed, so a reader sees a whole file or none, and it is 0600
in a 0700 directory: whoever can read it can already open the data directory itself.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

FILE_NAME = "server.json"
# The prefix of a local credential; an API key starts with `fk_`, so the two can never be mistaken.
LOCAL_PREFIX = "fl_"


@dataclass(frozen=True)
class ServerFile:
    """A running server as its file describes it."""

    url: str  # where this machine reaches it, e.g. http://127.0.0.1:8000
    pid: int
    started: str  # ISO 8601, UTC
    credential: str  # the local credential: valid while this server runs, on the CLI's endpoints only


def new_credential() -> str:
    """A fresh local credential for one run of a server."""
    return f"{LOCAL_PREFIX}{secrets.token_urlsafe(32)}"


def is_local_credential(presented: str) -> bool:
    """Whether a presented key has the local credential's shape (not whether it is the right one)."""
    return presented.startswith(LOCAL_PREFIX)


def matches(presented: str, credential: str | None) -> bool:
    """Whether `presented` is this server's local credential (compared in constant time)."""
    return credential is not None and hmac.compare_digest(presented.encode(), credential.encode())


def local_url(host: str, port: int) -> str:
    """The URL this machine reaches a server listening on `host`:`port` at (a wildcard address: loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write(data_dir: Path, url: str, credential: str) -> ServerFile:
    """Announce this process as the data directory's server: the whole file appears at once, mode 0600."""
    announced = ServerFile(
        url=url,
        pid=os.getpid(),
        started=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        credential=credential,
    )
    body = orjson.dumps(
        {"url": announced.url, "pid": announced.pid, "started": announced.started, "credential": credential}
    )
    temporary = data_dir / f".{FILE_NAME}.{announced.pid}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # an older leftover of the same name keeps its mode otherwise
        os.write(descriptor, body)
    finally:
        os.close(descriptor)
    os.replace(temporary, data_dir / FILE_NAME)
    return announced


def read(data_dir: Path) -> ServerFile | None:
    """The data directory's server file, or None when there is none or it is not one (never raises)."""
    try:
        raw = orjson.loads((data_dir / FILE_NAME).read_bytes())
        found = ServerFile(
            url=str(raw["url"]),
            pid=int(raw["pid"]),
            started=str(raw["started"]),
            credential=raw["credential"],
        )
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return found if isinstance(found.credential, str) and found.pid > 0 else None


def remove(data_dir: Path) -> None:
    """Withdraw this process's announcement (a file another process wrote is left alone)."""
    found = read(data_dir)
    if found is not None and found.pid == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            (data_dir / FILE_NAME).unlink()


def alive(pid: int) -> bool:
    """Whether a process with this id exists (a server killed with `kill -9` leaves its file behind)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True
