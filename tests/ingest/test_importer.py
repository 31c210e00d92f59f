"""`import_files` over a real event store: every format, bad rows with their positions, stable event ids."""

from __future__ import annotations

import contextlib
import csv
import io
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from rich.console import Console

from funnels.events import NativeEvent, dumps_properties, parse_timestamp
from funnels.ingest.importer import (
    MAX_KEPT_ERRORS,
    MAX_PRINTED_ERRORS,
    ImportFileError,
    ImportReport,
    _fast_row,
    _python_timestamps,
    _slow_row,
    import_files,
)
from funnels.services import Services
from funnels.store.events import EventStore

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
COLUMNS = (
    "event_id, type, event, user_key, user_id, anonymous_id, toUnixTimestamp64Milli(ts) AS ts, "
    "toUnixTimestamp64Milli(received_at) AS received, properties, browser, device, os, utm_source, "
    "page_path, log_seq"
)


def stored(store: EventStore) -> list[dict[str, Any]]:
    return store.query(f"SELECT {COLUMNS} FROM events ORDER BY ts, user_key, event").dicts()


def write_ndjson(path: Path, lines: list[Any]) -> Path:
    """Objects are dumped as JSON; bytes and str are written as they are (one line each)."""
    out = []
    for line in lines:
        out.append(
            line.encode()
            if isinstance(line, str)
            else line
            if isinstance(line, bytes)
            else orjson.dumps(line)
        )
    path.write_bytes(b"\n".join(out) + b"\n")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def run(store: EventStore, *paths: Path, batch_size: int = 50_000) -> tuple[ImportReport, str]:
    console = Console(file=io.StringIO(), width=200)
    report = import_files(store, list(paths), console=console, batch_size=batch_size)
    return report, console.file.getvalue()  # type: ignore[attr-defined]


# --- NDJSON ---------------------------------------------------------------------------------------------------


def test_ndjson_imports_the_native_event_shape(services: Services, tmp_path: Path) -> None:
    path = write_ndjson(
        tmp_path / "events.ndjson",
        [
            {
                "event": "signup",
                "user_id": "u1",
                "anonymous_id": "a1",
                "timestamp": "2024-01-01T00:00:00Z",
                "message_id": "m-1",
                "properties": {"plan": "pro", "seats": 3, "nested": {"a": [1, 2]}},
                "context": {"browser": "Chrome", "os": "macOS", "device": "desktop"},
                "device": "mobile",  # top-level wins over context
            },
            {"type": "page", "anonymous_id": "a2", "timestamp": T0 + 1_000, "page_path": "/pricing"},
            {"type": "identify", "user_id": 42, "timestamp": "2024-01-01T02:00:02+02:00"},
            {"event": "upgrade", "user_id": "u1", "timestamp": "2024-01-01 00:00:03", "utm_source": 7},
        ],
    )
    before = time.time() * 1000
    report, output = run(services.events, path)
    assert (report.imported, report.skipped, report.errors) == (4, 0, [])
    assert output == ""
    rows = stored(services.events)
    assert [
        (r["type"], r["event"], r["user_key"], r["user_id"], r["anonymous_id"], r["ts"]) for r in rows
    ] == [
        ("track", "signup", "u1", "u1", "a1", T0),
        ("page", "page", "a2", "", "a2", T0 + 1_000),
        ("identify", "identify", "42", "42", "", T0 + 2_000),
        ("track", "upgrade", "u1", "u1", "", T0 + 3_000),
    ]
    first = rows[0]
    assert first["event_id"] == "m-1"
    assert orjson.loads(first["properties"]) == {"plan": "pro", "seats": 3, "nested": {"a": [1, 2]}}
    assert (
        first["properties"] == '{"plan":"pro","seats":3,"nested":{"a":[1,2]}}'
    )  # compact, as the API stores
    assert (first["browser"], first["os"], first["device"]) == ("Chrome", "macOS", "mobile")
    assert rows[1]["page_path"] == "/pricing" and rows[1]["properties"] == "{}"
    assert rows[3]["utm_source"] == "7"
    assert all(len(r["event_id"]) == 16 for r in rows[1:])  # content-derived ids
    assert all(before - 1 <= r["received"] <= time.time() * 1000 + 1 for r in rows)
    assert {r["log_seq"] for r in rows} == {0}


def test_ndjson_bad_rows_are_reported_with_their_line_and_skipped(services: Services, tmp_path: Path) -> None:
    path = write_ndjson(
        tmp_path / "mixed.jsonl",
        [
            {"event": "a", "user_id": "u1", "timestamp": T0},  # 1 good
            "{not json",  # 2
            {"event": "a", "timestamp": T0},  # 3 no user
            {"event": "a", "user_id": "u1"},  # 4 no timestamp
            "",  # 5 blank: not a row
            {"user_id": "u1", "timestamp": T0},  # 6 track without a name
            {"event": "a", "user_id": "u1", "timestamp": "yesterday"},  # 7
            [1, 2],  # 8
            {"event": "a", "user_id": "u1", "timestamp": T0, "properties": [1]},  # 9
            {"event": "a", "user_id": "u1", "timestamp": -5},  # 10
            {"event": "a", "user_id": "u1", "timestamp": None, "type": None},  # 11: two problems
            {"event": "b", "user_id": "u2", "timestamp": T0 + 1},  # 12 good
        ],
    )
    report, output = run(services.events, path)
    assert (report.imported, report.skipped) == (2, 9)
    assert [(e.line, e.unit) for e in report.errors] == [(n, "line") for n in (2, 3, 4, 6, 7, 8, 9, 10, 11)]
    messages = {e.line: e.message for e in report.errors}
    assert messages[2].startswith("not valid JSON")
    assert messages[3] == "one of user_id or anonymous_id is required"
    assert messages[4] == "timestamp: is required to import an event"
    assert messages[6] == "event (the event name) is required for type 'track'"
    assert messages[7] == "timestamp: must be an ISO 8601 string or epoch milliseconds"
    assert messages[8] == "an event must be a JSON object"
    assert messages[9].startswith("properties:")
    assert messages[10] == "timestamp: must be between 1970-01-01 and 2199-12-31"
    assert "type:" in messages[11] and "timestamp: is required" in messages[11]
    assert all(e.file == str(path) for e in report.errors)
    for line in (2, 3, 4, 6, 7, 8, 9, 10, 11):
        assert f"{path} line {line}: " in output
    assert [(r["event"], r["user_key"]) for r in stored(services.events)] == [("a", "u1"), ("b", "u2")]


ODD_EVENTS: list[Any] = [
    {"event": "e", "user_id": "u", "timestamp": T0},
    {"event": "e", "user_id": "", "anonymous_id": "a", "timestamp": T0},
    {"event": "e", "user_id": "", "anonymous_id": "", "timestamp": T0},
    {"event": "e", "user_id": True, "timestamp": T0},
    {"event": "e", "user_id": 1.5, "timestamp": T0},
    {"event": "e", "user_id": 12, "anonymous_id": None, "timestamp": T0},
    {"event": "e", "user_id": "u" * 400, "timestamp": T0},
    {"event": "e", "user_id": "u" * 401, "timestamp": T0},
    {"event": "e", "user_id": ["u"], "timestamp": T0},
    {"event": "", "user_id": "u", "timestamp": T0},
    {"event": None, "user_id": "u", "timestamp": T0},
    {"event": None, "type": "screen", "user_id": "u", "timestamp": T0},
    {"event": "e" * 200, "user_id": "u", "timestamp": T0},
    {"event": "e" * 201, "user_id": "u", "timestamp": T0},
    {"event": 5, "user_id": "u", "timestamp": T0},
    {"type": "", "event": "e", "user_id": "u", "timestamp": T0},
    {"type": None, "event": "e", "user_id": "u", "timestamp": T0},
    {"type": "custom", "user_id": "u", "timestamp": T0},
    {"type": "custom", "event": "e", "user_id": "u", "timestamp": T0},
    {"event": "e", "user_id": "u", "timestamp": True},
    {"event": "e", "user_id": "u", "timestamp": "1704067200000"},
    {"event": "e", "user_id": "u", "timestamp": " 2024-01-01T00:00:00.250+01:00 "},
    {"event": "e", "user_id": "u", "timestamp": "2024-02-30T00:00:00Z"},
    {"event": "e", "user_id": "u", "timestamp": "2024-01-01"},
    {"event": "e", "user_id": "u", "timestamp": "1969-12-31T23:59:59Z"},
    {"event": "e", "user_id": "u", "timestamp": 7_258_118_400_000},
    {"event": "e", "user_id": "u", "timestamp": 1.7e12},
    {"event": "e", "user_id": "u", "timestamp": [T0]},
    {"event": "e", "user_id": "u", "timestamp": T0, "message_id": ""},
    {"event": "e", "user_id": "u", "timestamp": T0, "message_id": 5},
    {"event": "e", "user_id": "u", "timestamp": T0, "message_id": "m" * 401},
    {"event": "e", "user_id": "u", "timestamp": T0, "properties": None},
    {"event": "e", "user_id": "u", "timestamp": T0, "properties": "{}"},
    {"event": "e", "user_id": "u", "timestamp": T0, "context": None},
    {"event": "e", "user_id": "u", "timestamp": T0, "context": "web"},
    {"event": "e", "user_id": "u", "timestamp": T0, "context": {"browser": {"name": "x"}}},
    {"event": "e", "user_id": "u", "timestamp": T0, "browser": [1]},
    {"event": "e", "user_id": "u", "timestamp": T0, "browser": True, "context": {"os": 1.5, "device": ""}},
    {"event": "e", "user_id": "u", "timestamp": T0, "unknown": {"ignored": True}},
    "a string",
    None,
]


def test_ndjson_accepts_and_rejects_exactly_what_the_native_endpoint_does(
    services: Services, tmp_path: Path
) -> None:
    path = write_ndjson(tmp_path / "odd.ndjson", ODD_EVENTS)
    report, _ = run(services.events, path)
    expected = {}
    for line, item in enumerate(ODD_EVENTS, 1):
        try:
            model = NativeEvent.model_validate(item)
        except ValidationError:
            continue
        if model.timestamp is not None:
            expected[line] = model.to_event(0)
    rejected = {e.line for e in report.errors}
    assert rejected == set(range(1, len(ODD_EVENTS) + 1)) - set(expected)
    assert report.imported == len(expected)
    rows = stored(services.events)
    got = sorted(
        (r["type"], r["event"], r["user_key"], r["user_id"], r["anonymous_id"], r["ts"]) for r in rows
    )
    want = sorted(
        (e.type, e.event, e.user_key, e.user_id, e.anonymous_id, e.ts_ms) for e in expected.values()
    )
    assert got == want
    columns = sorted((r["browser"], r["os"], r["device"]) for r in rows)
    assert ("true", "1.5", "") in columns


def test_ndjson_batches_keep_line_numbers_and_counts(services: Services, tmp_path: Path) -> None:
    lines: list[Any] = []
    for i in range(25):
        lines.append({"event": "e", "user_id": f"u{i}", "timestamp": T0 + i})
        if i % 4 == 0:
            lines.append({"event": "e", "user_id": f"u{i}", "timestamp": "not a time"})
    path = write_ndjson(tmp_path / "batches.ndjson", lines)
    report, output = run(services.events, path, batch_size=3)
    bad = [n for n, line in enumerate(lines, 1) if line["timestamp"] == "not a time"]
    assert (report.imported, report.skipped) == (25, len(bad))
    assert [e.line for e in report.errors] == bad
    assert output.splitlines() == [
        f"{path} line {n}: timestamp: must be an ISO 8601 string or epoch milliseconds" for n in bad
    ]
    assert services.events.count() == 25


def test_errors_are_counted_exactly_but_printed_and_kept_up_to_a_cap(
    services: Services, tmp_path: Path
) -> None:
    bad = MAX_KEPT_ERRORS + 200
    lines = [{"event": "e", "timestamp": T0}] * bad + [{"event": "e", "user_id": "u", "timestamp": T0}]
    report, output = run(services.events, write_ndjson(tmp_path / "bad.ndjson", lines))
    assert (report.imported, report.skipped) == (1, bad)
    assert len(report.errors) == MAX_KEPT_ERRORS
    printed = output.splitlines()
    assert len(printed) == MAX_PRINTED_ERRORS + 1
    assert printed[-1] == f"... and {bad - MAX_PRINTED_ERRORS:,} more bad rows (not shown)"


# --- CSV ------------------------------------------------------------------------------------------------------


def test_csv_imports_rows_with_json_properties(services: Services, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "events.csv",
        [
            "type",
            "event",
            "user_id",
            "anonymous_id",
            "timestamp",
            "message_id",
            "properties",
            "browser",
            "unknown",
        ],
        [
            [
                "",
                "signup",
                "u1",
                "",
                "2024-01-01T00:00:00Z",
                "m-1",
                '{"plan": "pro", "note": "a,b\\nc"}',
                "Chrome",
                "x",
            ],
            ["page", "", "", "a1", str(T0 + 1_000), "", "", "", ""],
            ["", "connect", "007", "", "2024-01-01T00:00:02.500Z", "", "", "Firefox", ""],
        ],
    )
    report, _ = run(services.events, path)
    assert (report.imported, report.skipped) == (3, 0)
    rows = stored(services.events)
    assert [(r["type"], r["event"], r["user_key"], r["ts"], r["browser"]) for r in rows] == [
        ("track", "signup", "u1", T0, "Chrome"),
        ("page", "page", "a1", T0 + 1_000, ""),
        ("track", "connect", "007", T0 + 2_500, "Firefox"),
    ]
    assert rows[0]["event_id"] == "m-1"
    assert orjson.loads(rows[0]["properties"]) == {"plan": "pro", "note": "a,b\nc"}
    assert rows[1]["properties"] == "{}" and rows[1]["anonymous_id"] == "a1"


def test_csv_bad_rows_use_file_lines_with_the_header_as_line_1(services: Services, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "bad.csv",
        ["event", "user_id", "timestamp", "properties"],
        [
            ["a", "u1", "2024-01-01T00:00:00Z", '{"multi":\n"line"}'],  # lines 2-3, good
            ["a", "u1", "2024-01-01T00:00:01Z", '{"plan": '],  # line 4: bad JSON cell
            ["a", "", "2024-01-01T00:00:02Z", ""],  # line 5: no user
            ["a", "u1", "", ""],  # line 6: no timestamp
            ["a", "u1", "2024-13-01", ""],  # line 7: bad timestamp
            ["a", "u1", "2024-01-01T00:00:03Z", "[1, 2]"],  # line 8: not an object
            ["b", "u2", "2024-01-01T00:00:04Z", ""],  # line 9, good
        ],
    )
    with path.open("a", encoding="utf-8") as file:
        file.write("c,u3\n")  # line 10: too few fields
    report, output = run(services.events, path)
    assert (report.imported, report.skipped) == (2, 6)
    messages = {e.line: e.message for e in report.errors}
    assert sorted(messages) == [4, 5, 6, 7, 8, 10]
    assert messages[4].startswith("properties: not valid JSON")
    assert messages[5] == "one of user_id or anonymous_id is required"
    assert messages[6] == "timestamp: is required to import an event"
    assert messages[7] == "timestamp: must be an ISO 8601 string or epoch milliseconds"
    assert messages[8].startswith("properties:")
    assert messages[10] == "has 2 fields; the header has 4"
    assert f"{path} line 4: properties: not valid JSON" in output
    rows = stored(services.events)
    assert [(r["event"], r["user_key"]) for r in rows] == [("a", "u1"), ("b", "u2")]
    assert orjson.loads(rows[0]["properties"]) == {"multi": "line"}


def test_csv_without_a_required_column_is_refused_whole(services: Services, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "no_time.csv", ["event", "user_id"], [["a", "u1"]])
    with pytest.raises(ImportFileError, match="no `timestamp` column"):
        run(services.events, path)
    path = write_csv(tmp_path / "no_user.csv", ["event", "timestamp"], [["a", str(T0)]])
    with pytest.raises(ImportFileError, match="no `user_id` or `anonymous_id` column"):
        run(services.events, path)
    assert services.events.count() == 0


# --- Parquet --------------------------------------------------------------------------------------------------


def write_parquet(path: Path, columns: dict[str, Any], **kwargs: Any) -> Path:
    pq.write_table(pa.table(columns), path, **kwargs)
    return path


def test_parquet_imports_columns(services: Services, tmp_path: Path) -> None:
    path = write_parquet(
        tmp_path / "events.parquet",
        {
            "type": ["track", None, "identify"],
            "event": ["signup", "", None],
            "user_id": pa.array([1, None, 3], pa.int64()),
            "anonymous_id": [None, "a2", ""],
            "timestamp": pa.array([T0, T0 + 1, T0 + 2], pa.int64()),
            "message_id": ["m-1", None, ""],
            "properties": ['{"plan": "pro"}', None, ""],
            "browser": pa.array(["Chrome", None, "Safari"]).dictionary_encode(),
            "device": ["mobile", "", None],
            "ignored": [1, 2, 3],
        },
    )
    report, output = run(services.events, path)
    assert (report.imported, report.skipped, output) == (
        2,
        1,
        f"{path} row 2: event (the event name) is required for type 'track'\n",
    )
    assert [(e.line, e.unit) for e in report.errors] == [(2, "row")]
    rows = stored(services.events)
    assert [
        (r["type"], r["event"], r["user_key"], r["user_id"], r["ts"], r["browser"], r["device"]) for r in rows
    ] == [
        ("track", "signup", "1", "1", T0, "Chrome", "mobile"),
        ("identify", "identify", "3", "3", T0 + 2, "Safari", ""),
    ]
    assert rows[0]["event_id"] == "m-1" and len(rows[1]["event_id"]) == 16
    assert orjson.loads(rows[0]["properties"]) == {"plan": "pro"}
    assert rows[1]["properties"] == "{}"
    assert {r["log_seq"] for r in rows} == {0}


PARIS = timezone(timedelta(hours=1))
EXPECTED_MS = [T0, T0 + 1_234, T0 + 86_400_000]


@pytest.mark.parametrize(
    "column",
    [
        pytest.param(pa.array(EXPECTED_MS, pa.int64()), id="int64-ms"),
        pytest.param(
            pa.array([v // 1000 * 1000 for v in EXPECTED_MS], pa.int64()).cast(pa.timestamp("ms")), id="naive"
        ),
        pytest.param(pa.array(EXPECTED_MS, pa.int64()).cast(pa.timestamp("ms", tz="UTC")), id="ms-utc"),
        pytest.param(
            pa.array([v * 1000 + 999 for v in EXPECTED_MS], pa.int64()).cast(
                pa.timestamp("us", tz="Europe/Paris")
            ),
            id="us-paris",
        ),
        pytest.param(
            pa.array([v * 1_000_000 for v in EXPECTED_MS], pa.int64()).cast(pa.timestamp("ns")), id="ns"
        ),
        pytest.param(
            pa.array([datetime.fromtimestamp(v / 1000, UTC).isoformat() for v in EXPECTED_MS]), id="iso-text"
        ),
        pytest.param(
            pa.array(
                [
                    "2024-01-01T01:00:00+01:00",
                    "2024-01-01 00:00:01.234",
                    str(T0 + 86_400_000),
                ]
            ),
            id="mixed-text",
        ),
        pytest.param(pa.array([float(v) + 0.9 for v in EXPECTED_MS]), id="float-ms"),
    ],
)
def test_parquet_timestamp_representations(services: Services, tmp_path: Path, column: pa.Array) -> None:
    path = write_parquet(
        tmp_path / "times.parquet", {"event": ["a", "b", "c"], "user_id": ["u"] * 3, "timestamp": column}
    )
    report, output = run(services.events, path)
    assert (report.imported, report.skipped, output) == (3, 0, "")
    got = [r["ts"] for r in stored(services.events)]
    if column.type == pa.timestamp("ms"):
        assert got == [v // 1000 * 1000 for v in EXPECTED_MS]
    else:
        assert got == EXPECTED_MS


def test_parquet_second_timestamps(services: Services, tmp_path: Path) -> None:
    seconds = pa.array([T0 // 1000, -1, 7_258_118_400], pa.int64()).cast(pa.timestamp("s"))
    path = write_parquet(
        tmp_path / "s.parquet", {"event": ["a"] * 3, "user_id": ["u"] * 3, "timestamp": seconds}
    )
    report, _ = run(services.events, path)
    assert (report.imported, [e.line for e in report.errors]) == (1, [2, 3])
    assert [r["ts"] for r in stored(services.events)] == [T0]


TEXT_TIMES = [
    "2024-01-01T00:00:00Z",
    "2024-01-01T00:00:00z",
    "2024-01-01T00:00:00.5+05:30",
    "2024-01-01T00:00:00.123456789-0800",
    "2024-01-01 12:30",
    "2024-01-01",
    "20240101T000000",
    "2024-01-01T00:00:00+02",
    "1704067200000",
    " 1704067200001 ",
    "-5",
    "99999999999999999999",
    "2024-02-30T00:00:00Z",
    "2024-01-01T25:00:00",
    "1969-12-31T23:59:59Z",
    "2200-01-01T00:00:00Z",
    "tomorrow",
]


def test_parquet_text_timestamps_read_like_parse_timestamp(services: Services, tmp_path: Path) -> None:
    n = len(TEXT_TIMES)
    path = write_parquet(
        tmp_path / "text.parquet",
        {"event": [f"e{i}" for i in range(n)], "user_id": ["u"] * n, "timestamp": TEXT_TIMES},
    )
    report, _ = run(services.events, path)
    expected: dict[str, int] = {}
    for i, text in enumerate(TEXT_TIMES):
        with contextlib.suppress(ValueError):
            expected[f"e{i}"] = parse_timestamp(text)
    assert {TEXT_TIMES[e.line - 1] for e in report.errors} == {
        TEXT_TIMES[i] for i in range(n) if f"e{i}" not in expected
    }
    assert {r["event"]: r["ts"] for r in stored(services.events)} == expected


def test_parquet_bad_rows_are_reported_by_row_number(services: Services, tmp_path: Path) -> None:
    n = 10
    path = write_parquet(
        tmp_path / "bad.parquet",
        {
            "event": ["a", "a", None, "a", "a", "a", "a", "a" * 201, "a", "b"],
            "user_id": ["u", None, "u", "u", "u", "u", "u", "u", "u" * 401, "u2"],
            "timestamp": pa.array([T0, T0, T0, None, -1, T0, T0, T0, T0, T0 + 1], pa.int64()),
            "properties": [None, None, None, None, None, "{bad", "[1]", None, None, '{"ok": true}'],
        },
        row_group_size=4,
    )
    report, output = run(services.events, path, batch_size=3)
    assert (report.imported, report.skipped) == (2, n - 2)
    messages = {e.line: e.message for e in report.errors}
    assert messages == {
        2: "one of user_id or anonymous_id is required",
        3: "event (the event name) is required for type 'track'",
        4: "timestamp: is required to import an event",
        5: "timestamp: must be between 1970-01-01 and 2199-12-31",
        6: messages[6],
        7: "properties: must be a JSON object",
        8: "event: String should have at most 200 characters",
        9: "user_id: must be at most 400 characters",
    }
    assert messages[6].startswith("properties: not valid JSON")
    assert f"{path} row 6: properties: not valid JSON" in output
    assert {e.unit for e in report.errors} == {"row"}
    rows = stored(services.events)
    assert [(r["event"], r["user_key"], r["properties"]) for r in rows] == [
        ("a", "u", "{}"),
        ("b", "u2", '{"ok": true}'),
    ]


def test_parquet_struct_and_map_properties(services: Services, tmp_path: Path) -> None:
    structs = pa.array(
        [{"plan": "pro", "seats": 2}, None], pa.struct([("plan", pa.string()), ("seats", pa.int64())])
    )
    path = write_parquet(
        tmp_path / "s.parquet",
        {
            "event": ["a", "b"],
            "user_id": ["u", "u"],
            "timestamp": pa.array([T0, T0 + 1]),
            "properties": structs,
        },
    )
    maps = pa.array([[("k", "v")], []], pa.map_(pa.string(), pa.string()))
    path2 = write_parquet(
        tmp_path / "m.parquet",
        {
            "event": ["c", "d"],
            "user_id": ["u", "u"],
            "timestamp": pa.array([T0 + 2, T0 + 3]),
            "properties": maps,
        },
    )
    report, _ = run(services.events, path, path2)
    assert (report.imported, report.skipped) == (4, 0)
    assert [orjson.loads(r["properties"]) for r in stored(services.events)] == [
        {"plan": "pro", "seats": 2},
        {},
        {"k": "v"},
        {},
    ]


def test_parquet_unsupported_column_types_are_refused_whole(services: Services, tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "t.parquet", {"event": ["a"], "user_id": ["u"], "timestamp": [[1]]})
    with pytest.raises(ImportFileError, match="column 'timestamp' has type"):
        run(services.events, path)
    path = write_parquet(
        tmp_path / "u.parquet", {"event": ["a"], "user_id": ["u"], "timestamp": [T0], "browser": [[1]]}
    )
    with pytest.raises(ImportFileError, match="column 'browser' has type"):
        run(services.events, path)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(ImportFileError, match="not a readable Parquet file"):
        run(services.events, garbage)


# --- every format ---------------------------------------------------------------------------------------------


def same_events(tmp_path: Path) -> list[Path]:
    """The same three events (one with a message id) as NDJSON, CSV and Parquet."""
    events = [
        {
            "event": "signup",
            "user_id": "u1",
            "timestamp": T0,
            "properties": {"plan": "pro"},
            "browser": "Chrome",
        },
        {
            "event": "signup",
            "user_id": "u1",
            "timestamp": T0,
            "properties": {"plan": "team"},
        },  # same user and ms
        {"type": "page", "anonymous_id": "a1", "timestamp": T0 + 5, "message_id": "m-3"},
    ]
    ndjson = write_ndjson(tmp_path / "same.ndjson", events)
    header = ["type", "event", "user_id", "anonymous_id", "timestamp", "message_id", "properties", "browser"]
    csv_rows = [
        [
            str(e.get(h, "")) if h != "properties" else orjson.dumps(e.get("properties", {})).decode()
            for h in header
        ]
        for e in events
    ]
    csv_path = write_csv(tmp_path / "same.csv", header, csv_rows)
    parquet = write_parquet(
        tmp_path / "same.parquet",
        {
            h: [
                str(e[h]) if h in e and h != "properties" else orjson.dumps(e[h]).decode() if h in e else None
                for e in events
            ]
            for h in header
        },
    )
    return [ndjson, csv_path, parquet]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["ndjson", "csv", "parquet"])
def test_reimporting_a_file_writes_the_same_event_ids(services: Services, tmp_path: Path, index: int) -> None:
    path = same_events(tmp_path)[index]
    first, _ = run(services.events, path)
    ids = sorted(r["event_id"] for r in stored(services.events))
    second, _ = run(services.events, path)
    assert first.imported == second.imported == 3
    assert len(set(ids)) == 3 and "m-3" in ids
    assert sorted(r["event_id"] for r in stored(services.events)) == sorted(ids * 2)
    services.events.execute("OPTIMIZE TABLE events FINAL")
    assert sorted(r["event_id"] for r in stored(services.events)) == ids


def test_ndjson_and_csv_rows_get_the_same_ids(services: Services, tmp_path: Path) -> None:
    ndjson, csv_path, _ = same_events(tmp_path)
    run(services.events, ndjson)
    from_ndjson = sorted(r["event_id"] for r in stored(services.events))
    services.events.truncate()
    run(services.events, csv_path)
    assert sorted(r["event_id"] for r in stored(services.events)) == from_ndjson


@pytest.mark.parametrize("name", ["empty.ndjson", "empty.json", "empty.csv", "header.csv", "empty.parquet"])
def test_empty_files_import_nothing(services: Services, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name == "header.csv":
        path.write_text("event,user_id,timestamp\n")
    elif name == "empty.parquet":
        write_parquet(
            path,
            {
                "event": pa.array([], pa.string()),
                "user_id": pa.array([], pa.string()),
                "timestamp": pa.array([], pa.int64()),
            },
        )
    else:
        path.write_bytes(b"")
    report, output = run(services.events, path)
    assert (report.imported, report.skipped, report.errors, output) == (0, 0, [], "")
    assert services.events.count() == 0


def test_unsupported_or_missing_files_are_refused_before_anything_is_imported(
    services: Services, tmp_path: Path
) -> None:
    good = write_ndjson(tmp_path / "good.ndjson", [{"event": "a", "user_id": "u", "timestamp": T0}])
    other = tmp_path / "events.xlsx"
    other.write_bytes(b"x")
    with pytest.raises(
        ValueError,
        match=r"unsupported file type '\.xlsx'; supported: \.ndjson, \.jsonl, \.json, \.csv, \.parquet",
    ):
        run(services.events, good, other)
    with pytest.raises(ImportFileError, match="no such file"):
        run(services.events, good, tmp_path / "missing.csv")
    assert services.events.count() == 0


def test_several_files_in_one_import(services: Services, tmp_path: Path) -> None:
    paths = same_events(tmp_path)
    report, output = run(services.events, *paths)
    assert (report.imported, report.skipped) == (9, 0)
    assert [line.split(":")[0] for line in output.splitlines()] == [str(p) for p in paths]
    assert services.events.count() == 9


def test_insert_setting_is_restored_after_an_import(services: Services, tmp_path: Path) -> None:
    run(services.events, same_events(tmp_path)[0])
    assert services.events.query("SELECT getSetting('optimize_on_insert')").first() == [True]


def test_progress_on_a_terminal_and_plain_output_otherwise(services: Services, tmp_path: Path) -> None:
    path = write_ndjson(
        tmp_path / "p.ndjson", [{"event": "a", "user_id": "u", "timestamp": T0}, {"event": "a"}]
    )
    terminal = Console(file=io.StringIO(), force_terminal=True, width=120)
    report = import_files(services.events, [path], console=terminal)
    assert report.imported == 1
    shown = terminal.file.getvalue()  # type: ignore[attr-defined]
    assert "p.ndjson" in shown and "100%" in shown
    plain = Console(file=io.StringIO(), force_terminal=False, width=120)
    import_files(services.events, [path], console=plain)
    text = plain.file.getvalue()  # type: ignore[attr-defined]
    assert "\x1b" not in text
    assert (
        text
        == f"{path} line 2: one of user_id or anonymous_id is required; timestamp: is required to import an event\n"
    )
    assert import_files(services.events, [path]).skipped == 1  # no console: silent, still counted


def test_a_json_array_file_is_refused_as_not_ndjson(services: Services, tmp_path: Path) -> None:
    path = tmp_path / "array.json"
    path.write_bytes(b'[\n  {"event": "a", "user_id": "u", "timestamp": 1704067200000}\n]\n')
    with pytest.raises(ImportFileError, match="holds a JSON array; expected one JSON object per line"):
        run(services.events, path)


def test_csv_cells_larger_than_the_csv_module_default_are_read(services: Services, tmp_path: Path) -> None:
    big = {"blob": "x" * 300_000}
    path = write_csv(
        tmp_path / "big.csv",
        ["event", "user_id", "timestamp", "properties"],
        [["a", "u", str(T0), orjson.dumps(big).decode()]],
    )
    report, _ = run(services.events, path)
    assert (report.imported, report.skipped) == (1, 0)
    assert orjson.loads(stored(services.events)[0]["properties"]) == big


def test_a_file_without_event_or_type_column_is_refused(services: Services, tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "nameless.parquet", {"user_id": ["u"], "timestamp": [T0]})
    with pytest.raises(ImportFileError, match="no `event` column"):
        run(services.events, path)
    path = write_parquet(tmp_path / "pages.parquet", {"type": ["page"], "user_id": ["u"], "timestamp": [T0]})
    assert run(services.events, path)[0].imported == 1


# --- the row check against the model itself ---------------------------------------------------------------------

TEXTS = st.sampled_from(["", "a", "page", "screen", "track", "x" * 200, "x" * 201, "x" * 400, "x" * 401])
SCALARS = st.one_of(  # values JSON can carry (orjson reads bigger integers as floats)
    st.none(), st.booleans(), st.integers(-5, 2**63 - 1), st.floats(allow_nan=False), TEXTS
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=2), st.dictionaries(TEXTS, SCALARS, max_size=2))
COLUMN_NAMES = st.sampled_from(["browser", "os", "device", "utm_source", "page_path", "not_a_column"])


IDS = st.one_of(st.sampled_from(["u1", "", "x" * 400]), st.integers(0, 10**6))
PLAUSIBLE = st.fixed_dictionaries(
    {"user_id": IDS, "timestamp": st.sampled_from([T0, "2024-01-01T00:00:00Z", 1.5e12, "soon"])},
    optional={
        "type": st.sampled_from(["track", "page", "screen", "custom"]),
        "event": st.sampled_from(["signup", "x" * 200]),
        "anonymous_id": IDS,
        "message_id": st.sampled_from(["m-1", "x" * 400]),
        "properties": st.dictionaries(st.text(max_size=3), VALUES, max_size=3),
        "context": st.dictionaries(COLUMN_NAMES, SCALARS, max_size=3),
        "browser": SCALARS,
    },
)
FIELDS = st.sampled_from(
    ["type", "event", "user_id", "anonymous_id", "timestamp", "message_id", "properties"]
)
CHANGES = st.lists(st.tuples(st.one_of(FIELDS, COLUMN_NAMES, st.just("context")), VALUES), max_size=2)
EVENTS = st.builds(lambda event, changes: {**event, **dict(changes)}, PLAUSIBLE, CHANGES)


def import_outcome(item: Any) -> tuple[Any, ...] | str:
    """What the importer makes of one NDJSON object: the row with its time in ms, or why it is skipped."""
    row = _fast_row(item) or _slow_row(item)
    if isinstance(row, str):
        return row
    stamps, problems = _python_timestamps([row[4]])
    return "; ".join(problems[0]) if problems else (*row[:4], stamps[0], *row[5:])


@settings(max_examples=600, deadline=None)
@given(EVENTS)
def test_the_row_check_agrees_with_native_event(item: dict[str, Any]) -> None:
    outcome = import_outcome(item)
    try:
        model = NativeEvent.model_validate(item)
    except ValidationError:
        assert isinstance(outcome, str)
        return
    if model.timestamp is None:
        assert outcome == "timestamp: is required to import an event"
        return
    assert not isinstance(outcome, str), outcome
    event = model.to_event(0)
    assert outcome == (
        event.type,
        event.event,
        event.user_id,
        event.anonymous_id,
        event.ts_ms,
        model.message_id,
        dumps_properties(event.properties),
        event.columns,
    )


def test_parquet_date_columns_are_midnight_utc(services: Services, tmp_path: Path) -> None:
    days = pa.array([datetime(2024, 1, 1).date(), datetime(2024, 1, 2).date()], pa.date32())
    path = write_parquet(
        tmp_path / "d.parquet", {"event": ["a", "b"], "user_id": ["u", "u"], "timestamp": days}
    )
    assert run(services.events, path)[0].imported == 2
    assert [r["ts"] for r in stored(services.events)] == [T0, T0 + 86_400_000]
