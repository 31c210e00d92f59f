"""The native Parquet fast path stores exactly what the column-wise path stores, or steps aside."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from funnels.ingest.importer import import_files
from funnels.ingest.parquet_native import native_import, plain_schema
from funnels.services import Services

T0 = 1_775_001_600_123  # 2026-04-01T00:00:00.123Z
COLUMNS = "event_id, type, event, user_key, user_id, anonymous_id, toString(ts), properties, device, utm_source, page_path"


def _rows(services: Services) -> list[list[object]]:
    return services.events.query(f"SELECT {COLUMNS} FROM events ORDER BY event_id").rows


def _table(timestamp: pa.Array) -> pa.Table:
    n = len(timestamp)
    return pa.table(
        {
            "message_id": [f"m{i}" for i in range(n)],
            "type": ["page", "", "identify", "track", None][:n],
            "event": ["", "connect", None, "swap", "signup"][:n],
            "user_id": ["u1", "", "u3", None, "u5"][:n],
            "anonymous_id": ["a1", "a2", None, "a4", ""][:n],
            "timestamp": timestamp,
            "properties": ['{"path":"/x"}', "", None, '{"chain":"base","price":18.5}', '{"a":{"b":[1,2]}}'][
                :n
            ],
            "device": pa.array(["mobile", None, "desktop", "", "tablet"][:n]).dictionary_encode(),
            "utm_source": ["twitter", "", None, "google", "x"][:n],
            "page_path": ["/x", None, "", "/swap", "/"][:n],
        }
    )


@pytest.mark.parametrize(
    "timestamp",
    [
        pa.array([T0 + i * 1000 for i in range(5)], pa.timestamp("ms", tz="UTC")),
        pa.array([T0 + i * 1000 for i in range(5)], pa.timestamp("ms")),  # naive = UTC
        pa.array([T0 // 1000 + i for i in range(5)], pa.timestamp("s", tz="Europe/Berlin")),
    ],
    ids=["ms-utc", "ms-naive", "s-berlin"],
)
def test_native_and_column_wise_paths_store_the_same_rows(
    services: Services, tmp_path: Path, timestamp: pa.Array
) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(_table(timestamp), path)
    assert plain_schema(pq.read_schema(path))

    column_wise = import_files(services.events, [path], native_parquet=False)
    expected = _rows(services)
    services.events.truncate()
    assert native_import(services.events, path, pq.read_schema(path), received_ms=T0) == 5
    assert column_wise.imported == 5 and column_wise.skipped == 0
    assert _rows(services) == expected
    assert expected[1][1:5] == ["track", "connect", "a2", ""]  # empty type → track; anonymous user key
    assert expected[2][1:3] == ["identify", "identify"]  # a type that names itself


def test_a_file_with_a_bad_row_takes_the_column_wise_path_and_reports_it(
    services: Services, tmp_path: Path
) -> None:
    table = _table(pa.array([T0, None, T0, T0, T0], pa.timestamp("ms", tz="UTC")))
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    assert native_import(services.events, path, table.schema, received_ms=T0) is None
    assert services.events.count() == 0
    report = import_files(services.events, [path])
    assert (report.imported, report.skipped) == (4, 1)
    assert (report.errors[0].line, report.errors[0].unit) == (2, "row")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda t: t.drop_columns(["message_id"]), "no message_id: ids are content-derived"),
        (
            lambda t: t.set_column(5, "timestamp", t.column("timestamp").cast(pa.timestamp("us", tz="UTC"))),
            "µs",
        ),
        (lambda t: t.set_column(5, "timestamp", t.column("timestamp").cast(pa.int64())), "epoch ms integers"),
        (lambda t: t.set_column(3, "user_id", pa.array([1, 2, 3, 4, 5])), "numeric user ids"),
    ],
)
def test_other_schemas_are_not_plain(change: object, reason: str) -> None:
    table = change(_table(pa.array([T0] * 5, pa.timestamp("ms", tz="UTC"))))  # type: ignore[operator]
    assert not plain_schema(table.schema), reason


def _person(services: Services, key: str, *candidates: str) -> str:
    """Which of `candidates` is `key`'s person as a stitched funnel sees it (the dictionary reloaded first if
    it is behind; it answers hashes)."""
    row = services.events.query(
        "SELECT indexOf(arrayMap(c -> sipHash64(c), {candidates:Array(String)}), "
        "dictGetOrDefault('identity_persons', 'person', sipHash64({key:String}), sipHash64({key:String})))",
        {"key": key, "candidates": list(candidates)},
        persons=True,
    ).first()
    assert row is not None and int(row[0]) > 0
    return candidates[int(row[0]) - 1]


@pytest.mark.parametrize("native", [True, False])
def test_both_paths_feed_identity_links_and_the_next_query_sees_them(
    services: Services, tmp_path: Path, native: bool
) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(_table(pa.array([T0 + i * 1000 for i in range(5)], pa.timestamp("ms", tz="UTC"))), path)
    assert _person(services, "a1", "a1", "u1") == "a1"  # the dictionary is loaded, and empty
    report = import_files(services.events, [path], native_parquet=native)
    assert report.imported == 5
    links = services.events.query("SELECT key, min(claim).3 FROM identity_links GROUP BY key").rows
    assert links == [["a1", "u1"]]  # the only row with both ids; a2 and a4 have no user id
    assert _person(services, "a1", "a1", "u1") == "u1"
    # The import computed its links after the load; the view is back for what is inserted next.
    services.events.insert_arrow(
        pa.table({"event_id": ["later"], "type": ["identify"], "event": ["identify"], "user_key": ["u2"]})
        .append_column("user_id", pa.array(["u2"]))
        .append_column("anonymous_id", pa.array(["a2"]))
    )
    assert _person(services, "a2", "a2", "u2") == "u2"
