"""`funnels import` as a user runs it: a real process, real files, a real data directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from funnels.store.chdb_events import ChdbEventStore
from funnels.store.server_events import ServerEventStore

pytestmark = pytest.mark.process  # a real server or CLI subprocess

FUNNELS = Path(sys.executable).parent / "funnels"
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def funnels_import(data_dir: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FUNNELS), "import", *map(str, files), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def stored_count(data_dir: Path) -> int:
    store = ChdbEventStore(data_dir / "events")  # this test process holds no other store
    try:
        return store.count()
    finally:
        store.close()


def test_clean_file_exits_0_with_a_summary(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    events = [
        {"event": "signup", "user_id": "u1", "timestamp": "2024-01-01T00:00:00Z"},
        {"type": "page", "anonymous_id": "a1", "timestamp": T0},
    ]
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    parquet = tmp_path / "events.parquet"
    pq.write_table(
        pa.table({"event": ["connect"], "user_id": ["u1"], "timestamp": pa.array([T0 + 1], pa.int64())}),
        parquet,
    )
    result = funnels_import(tmp_path / "data", path, parquet)
    assert result.returncode == 0, result.stderr
    assert "imported 3 events, skipped 0 bad rows in" in result.stderr
    assert "\x1b" not in result.stderr  # not a terminal: no progress bar, no escape codes
    assert stored_count(tmp_path / "data") == 3


def test_skipped_rows_exit_1_and_are_listed_with_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event,user_id,timestamp,properties\n"
        "signup,u1,2024-01-01T00:00:00Z,\n"
        "signup,,2024-01-01T00:00:00Z,\n"
        'connect,u1,2024-01-01T00:00:01Z,"{""plan"": "\n'
        "connect,u2,2024-01-01T00:00:02Z,\n",
        encoding="utf-8",
    )
    result = funnels_import(tmp_path / "data", path)
    assert result.returncode == 1
    assert f"{path} line 3: one of user_id or anonymous_id is required" in result.stderr
    assert f"{path} line 4: properties: not valid JSON" in result.stderr
    assert "imported 2 events, skipped 2 bad rows in" in result.stderr
    assert stored_count(tmp_path / "data") == 2


def test_unsupported_file_type_fails_naming_the_supported_ones(tmp_path: Path) -> None:
    path = tmp_path / "events.txt"
    path.write_text("hello")
    result = funnels_import(tmp_path / "data", path)
    assert result.returncode != 0
    assert "unsupported file type '.txt'; supported: .ndjson, .jsonl, .json, .csv, .parquet" in result.stderr


def test_an_import_with_events_url_lands_on_the_server_and_not_in_the_directory(tmp_path: Path) -> None:
    """`--events-url` (the server backend, on clickhouse-connect's chDB interface): NDJSON and Parquet go
    in Arrow batches, and the server's own view links the visitor."""
    path = tmp_path / "events.ndjson"
    lines = [
        {"type": "page", "anonymous_id": "a1", "timestamp": T0},
        {"type": "identify", "user_id": "u1", "anonymous_id": "a1", "timestamp": T0 + 1},
    ]
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    parquet = tmp_path / "events.parquet"
    pq.write_table(
        pa.table({"event": ["connect"], "user_id": ["u1"], "timestamp": pa.array([T0 + 2], pa.int64())}),
        parquet,
    )
    data, server = tmp_path / "data", tmp_path / "server"
    command = [str(FUNNELS), "import", str(path), str(parquet), "--data-dir", str(data)]
    result = subprocess.run(
        [*command, "--events-url", f"chdb://{server}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "imported 3 events, skipped 0 bad rows" in result.stderr
    assert not (data / "events").exists()  # the embedded store was never opened
    store = ServerEventStore.on_chdb(server)
    try:
        assert store.count() == 3
        assert store.linked_users("a1") == ["u1"]
    finally:
        store.close()
