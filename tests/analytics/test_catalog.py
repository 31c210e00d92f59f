"""The catalog of what the event store has seen (names, operands, values), on real chDB.

The strongest checks tie the catalog to the funnel API: each listed `step` matches exactly the events it is
counted from, and each suggested value, used as an `equals` filter, matches exactly the events it is
counted from (`filter_sql`, the funnel's own SQL), so whatever the dashboard offers, a funnel finds.
"""

from __future__ import annotations

from typing import Any

import pytest

from funnels.analytics import catalog
from funnels.analytics.catalog import (
    parse_names_query,
    parse_operands_query,
    parse_values_query,
    seen_extent,
    seen_names,
    seen_operands,
    seen_values,
)
from funnels.analytics.query import Filter, QueryValidationError, Step
from funnels.analytics.sql import Binder, step_sql
from funnels.events import Event
from funnels.store.events import EventStore
from funnels.types import STANDARD_COLUMNS
from tests.analytics.conftest import DAY_MS, at, day, ev, load


def matching(store: EventStore, step: Step) -> int:
    """Events the funnel API's step condition (with its filters) matches."""
    params: dict[str, object] = {}
    row = store.query(f"SELECT count() FROM events WHERE {step_sql(step, Binder(params))}", params).first()
    assert row is not None
    return int(row[0])


def events_for_names() -> list[Event]:
    t = at(0, 12 * 3_600_000)
    return [
        *(ev(f"u{i}", t + i, "track", "connect") for i in range(5)),
        *(ev(f"u{i}", t + DAY_MS + i, "track", "Swap") for i in range(3)),
        ev("u1", t + 2 * DAY_MS, "track", "swap"),
        *(ev(f"u{i}", t + i, "page", "Home") for i in range(4)),
        ev("u9", t + 3 * DAY_MS - 12 * 3_600_000, "page"),  # 2026-04-04T00:00:00.000Z, named `page`
        ev("u9", t, "identify"),
        ev("u9", t + 5, "event", "odd"),  # a stored type `event`: no step can name it
    ]


def test_names_by_count_with_last_seen_and_the_step_that_matches_them(store: EventStore) -> None:
    events = events_for_names()
    load(store, events, batches=3)
    answer = seen_names(store, parse_names_query({}))
    rows = [(row["type"], row["event"], row["count"]) for row in answer["data"]]
    assert rows == [
        ("track", "connect", 5),
        ("page", "Home", 4),
        ("track", "Swap", 3),
        ("event", "odd", 1),
        ("identify", "identify", 1),
        ("page", "page", 1),
        ("track", "swap", 1),
    ]
    assert answer["rows"] == 7 and answer["has_more"] is False
    by_name = {(row["type"], row["event"]): row for row in answer["data"]}
    assert by_name[("track", "Swap")]["last_seen"] == "2026-04-02T12:00:00.002Z"
    assert by_name[("page", "page")]["last_seen"] == "2026-04-04T00:00:00.000Z"
    assert by_name[("event", "odd")]["step"] is None
    for row in answer["data"]:
        if row["step"] is not None:
            assert matching(store, Step(name="", **row["step"])) == row["count"], row
    types = {row["type"]: row for row in answer["types"]}
    assert [row["type"] for row in answer["types"]] == ["track", "page", "event", "identify"]
    assert (types["track"]["count"], types["track"]["names"]) == (9, 3)
    assert (types["page"]["count"], types["page"]["names"]) == (5, 2)
    assert types["page"]["last_seen"] == "2026-04-04T00:00:00.000Z"
    for row in answer["types"]:
        assert row["step"] == {"type": "event", "event": row["type"]}
        assert matching(store, Step(name="", **row["step"])) == row["count"]


def test_names_in_a_date_range_by_type_by_text_and_capped(store: EventStore) -> None:
    load(store, events_for_names())

    def names(**params: str) -> list[tuple[str, str, int]]:
        answer = seen_names(store, parse_names_query(params))
        return [(row["type"], row["event"], row["count"]) for row in answer["data"]]

    assert names(date_from=day(1), date_to=day(2)) == [("track", "Swap", 3), ("track", "swap", 1)]
    assert names(date_from=day(3)) == [("page", "page", 1)]  # the UTC day of its first millisecond
    assert names(dateTo=day(0)) == [
        ("track", "connect", 5),
        ("page", "Home", 4),
        ("event", "odd", 1),
        ("identify", "identify", 1),
    ]
    assert names(type="page") == [("page", "Home", 4), ("page", "page", 1)]
    assert names(q="sWa") == [("track", "Swap", 3), ("track", "swap", 1)]
    assert names(q="nothing") == []
    capped = seen_names(store, parse_names_query({"limit": "2"}))
    assert [row["event"] for row in capped["data"]] == ["connect", "Home"]
    assert capped["rows"] == 2 and capped["has_more"] is True
    only_track = seen_names(store, parse_names_query({"type": "track", "q": "connect"}))
    assert [row["type"] for row in only_track["types"]] == ["track"]
    assert only_track["types"][0]["count"] == 9  # types are not narrowed by `q`


def test_names_are_read_from_the_projection(store: EventStore) -> None:
    t = at(0)
    load(store, [ev(f"u{i}", t + i, "track", "connect") for i in range(3000)])
    answer = seen_names(store, parse_names_query({"date_from": day(0), "date_to": day(0)}))
    assert answer["data"][0]["count"] == 3000
    assert 0 < answer["statistics"]["rows_read"] < 100  # the projection's rows, not 3,000 events


def test_an_empty_store(store: EventStore) -> None:
    assert seen_names(store, parse_names_query({}))["data"] == []
    assert seen_extent(store) is None
    operands = seen_operands(store, parse_operands_query({"type": "track", "event": "x"}))
    assert operands["properties"] == [] and operands["sample"]["events"] == 0
    assert [column["operand"] for column in operands["columns"]] == list(STANDARD_COLUMNS)
    values = seen_values(store, parse_values_query({"type": "track", "event": "x", "operand": "device"}))
    assert values["data"] == [] and values["sample"] == {"events": 0, "limit": 50_000, "complete": True}


def test_extent_is_the_first_and_last_day(store: EventStore) -> None:
    load(store, [ev("u1", at(-3, 5), "track", "a"), ev("u2", at(4, DAY_MS - 1), "track", "b")])
    assert [d.isoformat() for d in seen_extent(store) or ()] == [day(-3), day(4)]


SWAPS: list[dict[str, Any]] = [
    {"chain": "ethereum", "price": 120.5, "amount": 3, "ok": True, "note": None, "meta": {"a": 1}},
    {"chain": "ethereum", "price": "18", "amount": 3, "ok": False, "device": "ignored"},
    {"chain": "base", "price": 18, "amount": -2},
    {"chain": "Base", "price": 1000.0, "": "empty key"},
    {"chain": "ethereum", "big": 18446744073709551615, "when": "2026-04-01", "who": 'é "q" \\'},
]


def swap_events() -> list[Event]:
    t = at(0, 3_600_000)
    devices = ["mobile", "mobile", "desktop", "", "mobile"]
    return [
        *(
            ev(f"u{i}", t + i, "track", "swap", props=props, device=devices[i], utm_source="x" if i else "")
            for i, props in enumerate(SWAPS)
        ),
        ev("u1", t, "track", "connect", props={"wallet": "MetaMask"}, device="tablet"),
        ev("u1", t + 10 * DAY_MS, "track", "swap", props={"late": 1}),
    ]


def operand(answer: dict[str, Any], group: str, name: str) -> dict[str, Any]:
    (found,) = [item for item in answer[group] if item["operand"] == name]
    return found


def test_operands_are_every_column_and_the_property_keys_seen(store: EventStore) -> None:
    load(store, swap_events(), batches=2)
    answer = seen_operands(store, parse_operands_query({"type": "track", "event": "swap", "date_to": day(0)}))
    assert answer["step"] == {"type": "track", "event": "swap"}
    assert answer["sample"] == {"events": 5, "limit": 50_000, "complete": True}
    assert {column["operand"] for column in answer["columns"]} == set(STANDARD_COLUMNS)
    assert [column["operand"] for column in answer["columns"][:2]] == ["device", "utm_source"]
    assert operand(answer, "columns", "device") == {
        "operand": "device",
        "count": 4,
        "numeric": 0,
        "values": [{"value": "mobile", "count": 3}, {"value": "desktop", "count": 1}],
    }
    assert operand(answer, "columns", "origin") == {
        "operand": "origin",
        "count": 0,
        "numeric": 0,
        "values": [],
    }
    keys = [item["operand"] for item in answer["properties"]]
    assert keys == ["chain", "price", "amount", "ok", "big", "meta", "note", "when", "who"]  # by events, name
    assert (
        "device" not in keys and "" not in keys and "late" not in keys
    )  # a column's name; empty; out of range
    assert operand(answer, "properties", "chain")["values"] == [
        {"value": "ethereum", "count": 3},
        {"value": "Base", "count": 1},
        {"value": "base", "count": 1},
    ]
    price = operand(answer, "properties", "price")
    assert (price["count"], price["numeric"]) == (4, 4)
    assert price["values"] == [{"value": "18", "count": 2}]  # 120.5 and 1000.0 are not text to filters
    assert operand(answer, "properties", "amount")["values"] == [
        {"value": "3", "count": 2},
        {"value": "-2", "count": 1},
    ]
    assert operand(answer, "properties", "ok")["values"] == [
        {"value": "false", "count": 1},
        {"value": "true", "count": 1},
    ]
    assert operand(answer, "properties", "meta") == {
        "operand": "meta",
        "count": 1,
        "numeric": 0,
        "values": [],
    }
    assert answer["has_more"] is False


def test_every_suggested_value_is_matched_by_an_equals_filter_on_as_many_events(store: EventStore) -> None:
    load(store, swap_events())
    step = Step(type="track", event="swap", name="")
    answer = seen_operands(store, parse_operands_query({"type": "track", "event": "swap"}))
    suggested = [
        (item, value)
        for group in ("columns", "properties")
        for item in answer[group]
        for value in item["values"]
    ]
    assert len(suggested) >= 12
    for item, value in suggested:
        narrowed = Step(step.type, step.event, "", (Filter(item["operand"], "equals", value["value"]),))
        assert matching(store, narrowed) == value["count"], (item["operand"], value)
    for item in answer["properties"]:
        numeric = Step(step.type, step.event, "", (Filter(item["operand"], "gte", "-1e300"),))
        assert matching(store, numeric) == item["numeric"], item["operand"]


def test_operands_of_any_name_of_a_type_and_capped_keys(store: EventStore) -> None:
    t = at(0)
    load(
        store,
        [
            ev("u1", t, "page", "Home", props={"path": "/", "title": "Home"}, page_path="/"),
            ev("u2", t, "page", "Docs", props={"path": "/docs"}, page_path="/docs"),
            ev("u3", t, "track", "page", props={"other": 1}),
        ],
    )
    answer = seen_operands(store, parse_operands_query({"type": "event", "event": "page", "limit": "1"}))
    assert answer["sample"]["events"] == 2
    assert [item["operand"] for item in answer["properties"]] == ["path"]
    assert answer["has_more"] is True
    named = seen_operands(store, parse_operands_query({"type": "page", "event": "Docs"}))
    assert [item["operand"] for item in named["properties"]] == ["path"]
    assert operand(named, "columns", "page_path")["values"] == [{"value": "/docs", "count": 1}]


def test_the_sample_is_capped(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "SAMPLE_EVENTS", 10)
    load(store, [ev(f"u{i:02}", at(0, i), "track", "swap", props={"n": i}) for i in range(30)])
    answer = seen_operands(store, parse_operands_query({"type": "track", "event": "swap"}))
    assert answer["sample"] == {"events": 10, "limit": 10, "complete": False}
    assert operand(answer, "properties", "n")["count"] == 10
    values = seen_values(store, parse_values_query({"type": "track", "event": "swap", "operand": "n"}))
    assert values["sample"] == {"events": 10, "limit": 10, "complete": False}
    assert sum(value["count"] for value in values["data"]) == 10


def test_values_by_count_with_a_prefix_in_any_case(store: EventStore) -> None:
    load(store, swap_events())

    def values(**params: str) -> dict[str, Any]:
        return seen_values(store, parse_values_query({"type": "track", "event": "swap", **params}))

    chain = values(operand="chain")
    assert chain["data"] == [
        {"value": "ethereum", "count": 3},
        {"value": "Base", "count": 1},
        {"value": "base", "count": 1},
    ]
    assert chain["column"] is False and chain["rows"] == 3 and chain["has_more"] is False
    assert chain["sample"] == {"events": 6, "limit": 50_000, "complete": True}
    assert values(operand="chain", q="BA")["data"] == [
        {"value": "Base", "count": 1},
        {"value": "base", "count": 1},
    ]
    capped = values(operand="chain", limit="1")
    assert capped["data"] == [{"value": "ethereum", "count": 3}] and capped["has_more"] is True
    nothing = values(operand="chain", q="zzz")
    assert nothing["data"] == [] and nothing["sample"]["events"] == 6
    device = values(operand="device", date_from=day(0), date_to=day(0))
    assert device["column"] is True
    assert device["data"] == [{"value": "mobile", "count": 3}, {"value": "desktop", "count": 1}]
    assert values(operand="price")["data"] == [{"value": "18", "count": 2}]
    assert values(operand="missing")["data"] == []


@pytest.mark.parametrize(
    ("parse", "params", "expected"),
    [
        (parse_names_query, {"limit": "0"}, {"limit": "must be between 1 and 1000"}),
        (parse_names_query, {"limit": "x", "date_from": "2026-13-01"}, {"limit", "date_from"}),
        (parse_names_query, {"date_from": "2026-04-02", "date_to": "2026-04-01"}, {"date_to"}),
        (parse_names_query, {"q": "x" * 1001}, {"q"}),
        (
            parse_operands_query,
            {},
            {"type": "must be a non-empty string", "event": "must be a non-empty string"},
        ),
        (parse_operands_query, {"type": "track", "event": "", "limit": "1001"}, {"event", "limit"}),
        (parse_values_query, {"type": "track", "event": "swap"}, {"operand"}),
        (parse_values_query, {"type": "t", "event": "e", "operand": "o", "dateTo": "x"}, {"date_to"}),
    ],
)
def test_invalid_parameters_are_all_reported(parse: Any, params: dict[str, str], expected: Any) -> None:
    with pytest.raises(QueryValidationError) as raised:
        parse(params)
    if isinstance(expected, dict):
        assert raised.value.details == expected
    else:
        assert set(raised.value.details) == expected


def test_empty_optional_parameters_are_absent() -> None:
    query = parse_names_query({"date_from": "", "type": "", "q": "", "limit": ""})
    assert (query.dates.date_from, query.type, query.q, query.limit) == (None, None, None, 200)
