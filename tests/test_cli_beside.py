"""`funnels query`, `funnels import` and `funnels catalog` beside a running `funnels serve` on the same data
directory: real processes, real HTTP. They go through the server (found by its `server.json`) and answer
exactly as without one (a comparison with the previous period, a saved funnel too); a file a dead server left, or garbage, sends them back to the directory; a server
that dies mid-request is one clear line."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.processes import free_port, kill_9, start_server, stored_event_counts

pytestmark = pytest.mark.process  # a real server or CLI subprocess

BIN = str(Path(sys.executable).parent / "funnels")
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
STEPS = json.dumps(
    [
        {"type": "event", "event": "page", "name": "page"},
        {"type": "track", "event": "signup", "name": "signup"},
        {"type": "track", "event": "connect", "name": "connect"},
    ]
)
QUERY = [
    "query",
    "--date-from",
    "2024-01-01",
    "--date-to",
    "2024-01-31",
    "--steps",
    STEPS,
    "--format",
    "json",
]
READS = {
    "query": QUERY,
    "compared": [*QUERY, "--compare", "previous_period", "--breakdown", "device"],
    "time_to_convert": [*QUERY, "--from-step", "1", "--to-step", "3", "--bins", "4"],
    "trends": [*QUERY, "--interval", "week", "--breakdown", "device"],
    "people": [*QUERY, "--outcome", "dropped", "--step", "2", "--breakdown", "device"],
    "names": ["catalog", "names", "--format", "json"],
    "properties": ["catalog", "properties", "--type", "track", "--event", "connect", "--format", "json"],
    "values": [
        "catalog",
        "values",
        "--type",
        "track",
        "--event",
        "connect",
        "--operand",
        "plan",
        "--format",
        "json",
    ],
}
HELD = "is held by the server at"


def run(data_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN, *args, "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=timeout
    )


def history(folder: Path) -> list[Path]:
    """The same kind of history in the three formats, with bad rows; the Parquet file is plain, so it takes
    the native path (chDB reads it)."""
    folder.mkdir()
    ndjson = folder / "web.ndjson"
    lines = [
        {"type": "page", "anonymous_id": f"a{i}", "user_id": f"u{i}", "timestamp": T0 + i * 1000}
        for i in range(6)
    ]
    lines += [{"event": "signup", "user_id": f"u{i}", "timestamp": T0 + 60_000 + i} for i in range(4)]
    lines += [{"event": "signup", "timestamp": T0}, {"event": "connect", "user_id": "u9"}]  # two bad rows
    ndjson.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines) + b"{broken\n")
    csv = folder / "crm.csv"
    csv.write_text(
        "event,user_id,timestamp,properties\n"
        + "".join(f'connect,u{i},2024-01-01T00:05:0{i}Z,"{{""plan"": ""p{i % 2}""}}"\n' for i in range(3))
        + "connect,,2024-01-01T00:06:00Z,\n"
    )
    parquet = folder / "app.parquet"
    pq.write_table(
        pa.table(
            {
                "message_id": ["m1", "m2"],
                "event": ["connect", "connect"],
                "user_id": ["u3", "u4"],
                "timestamp": pa.array([T0 + 400_000, T0 + 401_000], pa.timestamp("ms", tz="UTC")),
                "properties": ['{"plan":"p1"}', '{"plan":"p9"}'],
            }
        ),
        parquet,
    )
    return [ndjson, csv, parquet]


def answers(data_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """Each read's JSON without its timings, and what the commands said on stderr."""
    found, said = {}, []
    for name, args in READS.items():
        result = run(data_dir, *args)
        assert result.returncode == 0, (name, result.stderr)
        body = json.loads(result.stdout)
        body.pop("statistics")
        body.get("comparison", {}).pop("statistics", None)
        found[name] = body
        said.append(result.stderr)
    return found, said


def report(result: subprocess.CompletedProcess[str]) -> list[str]:
    """An import's stderr without the timing and the line saying it went through a server."""
    return [
        line.split(" in ")[0] if line.startswith("imported ") else line
        for line in result.stderr.splitlines()
        if HELD not in line
    ]


def test_query_import_and_catalog_beside_a_server_answer_as_without_one(tmp_path: Path) -> None:
    files = history(tmp_path / "files")
    beside, alone = tmp_path / "beside", tmp_path / "alone"
    port = free_port()
    server = start_server(beside, port)
    try:
        announced = json.loads((beside / "server.json").read_text())
        assert announced["url"] == f"http://127.0.0.1:{port}" and announced["pid"] == server.pid
        imported = run(beside, "import", *map(str, files))
        through, said = answers(beside)
        # Saved funnels are in the state store, which the CLI opens itself beside the server.
        saved = run(beside, *QUERY, "--save", "Beside")
        opened = run(beside, "query", "--saved", "Beside", "--format", "json")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert not (beside / "server.json").exists()  # withdrawn at a clean shutdown
    assert HELD in imported.stderr and all(HELD in text for text in said)

    direct = run(alone, "import", *map(str, files))
    assert (imported.returncode, report(imported)) == (direct.returncode, report(direct))
    assert report(direct)[-1] == "imported 15 events, skipped 4 bad rows" and direct.returncode == 1
    assert f"{files[0]} line 11: one of user_id or anonymous_id is required" in direct.stderr
    assert stored_event_counts(beside).keys() == stored_event_counts(alone).keys()

    by_itself, said = answers(beside)
    assert not any(HELD in text for text in said)
    assert through == by_itself == answers(alone)[0]
    assert [row["users"] for row in through["query"]["data"]] == [6, 4, 4]  # u4 connected, never signed up
    assert saved.returncode == opened.returncode == 0, (saved.stderr, opened.stderr)
    assert "saved as 'Beside'" in saved.stderr and HELD in opened.stderr
    assert json.loads(opened.stdout)["data"] == through["query"]["data"]
    assert through["time_to_convert"]["data"][0]["users"] == 4
    assert sum(row["entered"] for row in through["trends"]["data"]) == 6
    assert through["people"]["users"] == through["people"]["rows"] == 2  # reached step 1, not step 2
    assert through["values"]["data"] == [
        {"value": "p0", "count": 2},
        {"value": "p1", "count": 2},
        {"value": "p9", "count": 1},
    ]


def test_the_credential_file_is_private_and_opens_only_the_clis_endpoints(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir, free_port())
    try:
        path = data_dir / "server.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        announced = json.loads(path.read_text())
        with httpx.Client(
            base_url=announced["url"], headers={"Authorization": f"Bearer {announced['credential']}"}
        ) as http:
            assert http.get("/v0/events/names").status_code == 200
            for method, endpoint in (("GET", "/v0/funnels"), ("GET", "/v0/keys"), ("POST", "/v0/events")):
                refused = http.request(method, endpoint, json=[{"event": "x", "user_id": "u"}])
                assert refused.status_code == 403, (endpoint, refused.text)
                assert refused.json()["error"]["code"] == "FORBIDDEN"
    finally:
        server.terminate()
        server.wait(timeout=30)
    restarted = start_server(data_dir, free_port())  # a new run, a new credential
    try:
        again = json.loads((data_dir / "server.json").read_text())
        assert again["credential"] != announced["credential"]
        old = httpx.get(
            f"{again['url']}/v0/events/names", headers={"Authorization": f"Bearer {announced['credential']}"}
        )
        assert old.status_code == 401
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)


def test_a_file_a_dead_server_left_sends_the_cli_back_to_the_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    kill_9(start_server(data_dir, free_port()))
    assert (data_dir / "server.json").exists()  # nothing removed it
    after_kill = run(data_dir, *READS["names"], timeout=60)
    assert after_kill.returncode == 0 and HELD not in after_kill.stderr, after_kill.stderr

    # A live process (this one) and a port nothing listens on: the connection is refused, at once.
    announced = {
        "url": f"http://127.0.0.1:{free_port()}",
        "pid": os.getpid(),
        "started": "x",
        "credential": "fl_x",
    }
    (data_dir / "server.json").write_text(json.dumps(announced))
    started = time.monotonic()
    refused = run(data_dir, *READS["names"], timeout=60)
    assert refused.returncode == 0 and HELD in refused.stderr, refused.stderr
    assert "does not answer" in refused.stderr and "opening the directory itself" in refused.stderr
    assert time.monotonic() - started < 20
    (data_dir / "server.json").write_text("{not json")
    assert run(data_dir, *READS["names"], timeout=60).returncode == 0


@contextmanager
def dying_server() -> Iterator[int]:
    """A port whose listener reads each request's head and closes the connection without answering."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                head = b""
                while b"\r\n\r\n" not in head and (chunk := connection.recv(65536)):
                    head += chunk

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_a_server_that_dies_mid_request_is_a_clear_error(tmp_path: Path) -> None:
    files = history(tmp_path / "files")
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    with dying_server() as port:
        announced = {
            "url": f"http://127.0.0.1:{port}",
            "pid": os.getpid(),
            "started": "x",
            "credential": "fl_x",
        }
        (data_dir / "server.json").write_text(json.dumps(announced))
        for args in (READS["query"], ["import", str(files[1])]):
            result = run(data_dir, *args, timeout=60)
            assert result.returncode == 1, result.stderr
            assert (
                f"the server at http://127.0.0.1:{port} (pid {os.getpid()}) closed the connection before answering"
                in result.stderr
            )
            assert "stopped or crashed mid-request" in result.stderr and "Traceback" not in result.stderr
