"""`POST /v0/import` over real stores: a file sent in the body is imported as `funnels import` imports it
(the same rows, the bad rows under the client's name, the native Parquet path on the embedded store), one
import at a time, errors in the envelope, scope `admin`. Every test runs on both event-store backends: the
embedded chDB store and the server backend (`--events-url`, on clickhouse-connect's chDB interface)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from funnels.ingest import importer
from funnels.ingest.importer import import_files
from funnels.services import Services
from tests.automation.conftest import error_of
from tests.conftest import bearer

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
LINES = [
    {"event": "signup", "user_id": "u1", "timestamp": "2024-01-01T00:00:00Z", "properties": {"plan": "pro"}},
    {"event": "signup", "timestamp": T0},  # no user: a bad row, line 2
    {"type": "page", "anonymous_id": "a1", "timestamp": T0 + 1},
    "not an object",
]
COLUMNS = "event_id, type, event, user_key, user_id, anonymous_id, ts, properties, log_seq"


@pytest.fixture(params=["chdb", "clickhouse-connect"])
def events_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


def ndjson(path: Path) -> Path:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in LINES))
    return path


def stored(services: Services) -> list[list[Any]]:
    return services.events.query(f"SELECT {COLUMNS} FROM events ORDER BY event_id").rows


def send(client: TestClient, key: str, name: str, body: bytes) -> Any:
    return client.post("/v0/import", params={"name": name}, content=body, headers=bearer(key))


def test_a_file_in_the_body_is_imported_as_the_importer_imports_it(
    client: TestClient, keys: dict[str, str], services: Services, tmp_path: Path
) -> None:
    path = ndjson(tmp_path / "events.ndjson")
    direct = import_files(services.events, [path])
    expected = stored(services)
    services.events.truncate()

    response = send(client, keys["admin"], "history/events.ndjson", path.read_bytes())
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["imported"], body["skipped"]) == (direct.imported, direct.skipped) == (2, 2)
    assert body["errors"] == [
        {"file": "history/events.ndjson", "line": error.line, "unit": "line", "message": error.message}
        for error in direct.errors
    ]
    assert stored(services) == expected  # the same ids, times and properties
    assert not (services.data_dir / "imports").exists()  # the upload is gone


def test_a_plain_parquet_file_takes_the_native_path_on_the_embedded_store(
    client: TestClient,
    keys: dict[str, str],
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    events_backend: str,
) -> None:
    """chDB reads the file itself; a server cannot read this machine's files: the column-wise path."""
    native: list[int | None] = []

    def counted(*args: Any) -> int | None:
        native.append(imported := real(*args))
        return imported

    real = importer.native_import
    monkeypatch.setattr(importer, "native_import", counted)
    table = pa.table(
        {
            "message_id": ["m1", "m2"],
            "event": ["signup", "connect"],
            "user_id": ["u1", "u1"],
            "timestamp": pa.array([T0, T0 + 1000], pa.timestamp("ms", tz="UTC")),
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    response = send(client, keys["admin"], "events.parquet", sink.getvalue().to_pybytes())
    assert response.status_code == 200, response.text
    assert response.json()["imported"] == 2
    assert native == ([2] if events_backend == "chdb" else [None])
    assert services.events.count() == 2


def test_files_it_cannot_import_are_400s_naming_the_clients_file(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    unsupported = error_of(send(client, keys["admin"], "events.txt", b"x"), 400, "INVALID_VALIDATION_REQUEST")
    assert unsupported["details"] == {
        "query.name": "events.txt: unsupported file type '.txt'; supported: .ndjson, .jsonl, .json, .csv, .parquet"
    }
    unreadable = error_of(send(client, keys["admin"], "old/events.parquet", b"PAR1 no"), 400, "BAD_REQUEST")
    assert unreadable["message"].startswith("old/events.parquet: not a readable Parquet file")
    assert "upload" not in unreadable["message"]
    no_name = client.post("/v0/import", content=b"{}", headers=bearer(keys["admin"]))
    assert error_of(no_name, 400, "INVALID_VALIDATION_REQUEST")["param"] == "query.name"
    gzipped = client.post(
        "/v0/import",
        params={"name": "e.ndjson"},
        content=b"x",
        headers={**bearer(keys["admin"]), "Content-Encoding": "gzip"},
    )
    assert "without a Content-Encoding" in error_of(gzipped, 400, "BAD_REQUEST")["message"]
    assert services.events.count() == 0


def test_one_import_at_a_time(client: TestClient, keys: dict[str, str], services: Services) -> None:
    with services.importing():
        busy = send(client, keys["admin"], "e.ndjson", b'{"event": "x", "user_id": "u", "timestamp": 1}\n')
        assert "import into this data directory is running" in error_of(busy, 409, "CONFLICT")["message"]
    assert (
        send(client, keys["admin"], "e.ndjson", b'{"event": "x", "user_id": "u", "timestamp": 1}\n').json()[
            "imported"
        ]
        == 1
    )


def test_a_turn_is_taken_by_one_thread_only(services: Services) -> None:
    """`Services.importing` from two threads at once: one gets the turn, the other `ImportRunning`."""
    from funnels.services import ImportRunning

    outcomes: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def first() -> None:
        with services.importing() as uploads:
            assert uploads.is_dir() and (uploads.stat().st_mode & 0o777) == 0o700
            inside.set()
            release.wait(10)
        outcomes.append("first")

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(10)
    with pytest.raises(ImportRunning), services.importing():
        pass
    release.set()
    thread.join()
    assert outcomes == ["first"] and not (services.data_dir / "imports").exists()


@pytest.mark.parametrize("scope", ["events:write", "query:read"])
def test_it_needs_the_admin_scope(client: TestClient, keys: dict[str, str], scope: str) -> None:
    error_of(send(client, keys[scope], "e.ndjson", b"{}"), 403, "FORBIDDEN")
    no_key = client.post("/v0/import", params={"name": "e.ndjson"}, content=b"{}")
    error_of(no_key, 401, "UNAUTHORIZED")
