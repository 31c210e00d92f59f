"""The generated funnel and catalog SQL, snapshotted, and proof that user values reach ClickHouse only as
parameters.

Snapshots live in tests/analytics/snapshots/: `<case>.sql` (the SQL text, with a line break in place of the
space before each clause keyword and after each comma, so a change shows as a readable diff; joining the
lines with spaces gives the exact text) and `<case>.params.json` (the parameters). Any change to the SQL
builders changes them and shows up in review. After an intended change, regenerate them with

    FUNNELS_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/analytics/test_sql_snapshot.py

and review the diff before committing.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from funnels.analytics.catalog import (
    extent_sql,
    names_sql,
    operands_sql,
    parse_names_query,
    parse_operands_query,
    parse_values_query,
    seen_names,
    seen_operands,
    seen_values,
    types_sql,
    values_sql,
)
from funnels.analytics.funnel import run_funnel
from funnels.analytics.people import PeopleQuery, people_sql
from funnels.analytics.query import FunnelQuery
from funnels.analytics.reference import reference_funnel
from funnels.analytics.sql import cluster_funnel_sql, funnel_sql, funnel_statement
from funnels.analytics.time_to_convert import TimeToConvertQuery, time_to_convert_sql
from funnels.analytics.trends import TrendsQuery, trends_sql
from funnels.store.events import ClusterLayout, EventStore
from tests.analytics.conftest import at, column, day, ev, funnel_query, load, step

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("FUNNELS_UPDATE_SNAPSHOTS") == "1"

ALL_OPERATOR_FILTERS = [
    ("device", "equals", "mobile"),
    ("utm_source", "notEquals", "spam"),
    ("chain", "in", "ethereum|base"),
    ("country", "notIn", "XX|YY"),
    ("page_path", "startsWith", "/swap"),
    ("provider", "endsWith", "Mask"),
    ("utm_campaign", "includes", "launch"),
]
NUMERIC_FILTERS = [
    ("price", "gt", "100"),
    ("amount", "lt", "1e3"),
    ("version", "gte", "2"),
    ("fee", "lte", "0.5"),
]

QUERIES: dict[str, FunnelQuery] = {
    "closed_exclusive": funnel_query(
        [
            step("event", "page"),
            step("track", "connect"),
            step("track", "swap", ("chain", "equals", "ethereum")),
        ],
        day(0),
        day(29),
        window_seconds=86_400,
    ),
    "closed_overlapping": funnel_query(
        [step("event", "page"), step("track", "connect"), step("event", "page")], day(0), day(29)
    ),
    "open_breakdown": funnel_query(
        [
            step("event", "page", ("page_path", "startsWith", "/swap")),
            step("track", "connect"),
            step("track", "swap"),
        ],
        day(0),
        day(6),
        funnel_type="open",
        breakdown="utm_source",
        breakdown_top_n=3,
    ),
    "closed_breakdown_all_operators": funnel_query(
        [step("event", "page", *ALL_OPERATOR_FILTERS), step("transaction", "swap", *NUMERIC_FILTERS)],
        day(0),
        day(0),
        window_seconds=3600,
        breakdown="device",
        breakdown_top_n=5,
    ),
    "strict_breakdown": funnel_query(
        [
            step("event", "page"),
            step("track", "connect"),
            step("track", "swap", ("chain", "equals", "ethereum")),
        ],
        day(0),
        day(6),
        funnel_type="strict",
        breakdown="utm_source",
        breakdown_top_n=3,
    ),
    "closed_property_last_touch": funnel_query(
        [step("event", "page"), step("track", "connect"), step("track", "swap")],
        day(0),
        day(6),
        breakdown="properties.plan",
        breakdown_attribution="last_touch",
    ),
    "overlapping_property_step": funnel_query(
        [step("event", "page"), step("track", "connect"), step("event", "page")],
        day(0),
        day(6),
        breakdown="properties.chain",
        breakdown_attribution="step:3",
    ),
    "closed_exclusions_breakdown": funnel_query(
        [step("event", "page"), step("track", "connect"), step("track", "swap")],
        day(0),
        day(6),
        breakdown="utm_source",
        exclusions='[{"type":"track","event":"mint","from_step":1,"to_step":3},'
        '{"type":"event","event":"page","filters":[{"operand":"page_path","operator":"equals","value":"/exit"}],'
        '"from_step":2,"to_step":3}]',
    ),
    "closed_overlapping_exclusions": funnel_query(
        [step("event", "page"), step("track", "connect"), step("event", "page")],
        day(0),
        day(29),
        exclusions='[{"type":"track","event":"mint","from_step":2,"to_step":3}]',
    ),
    "closed_hold_constant_breakdown": funnel_query(
        [step("event", "page"), step("track", "connect"), step("track", "swap")],
        day(0),
        day(6),
        breakdown="device",
        hold_constant='["properties.chain", "utm_source"]',
    ),
    "closed_person_breakdown": funnel_query(
        [step("event", "page"), step("track", "connect"), step("track", "swap")],
        day(0),
        day(6),
        breakdown="person.plan",
        breakdown_top_n=5,
    ),
    "open_hold_constant_step_attribution": funnel_query(
        [step("event", "page"), step("track", "connect")],
        day(0),
        day(6),
        funnel_type="open",
        breakdown="properties.wallet",
        breakdown_attribution="step:2",
        hold_constant='["properties.chain"]',
    ),
    "strict_hold_constant_step_attribution": funnel_query(
        [step("event", "page"), step("track", "connect"), step("track", "swap")],
        day(0),
        day(6),
        funnel_type="strict",
        breakdown="device",
        breakdown_attribution="step:2",
        hold_constant='["properties.chain"]',
    ),
    "closed_exclusions_hold_constant": funnel_query(
        [step("event", "page"), step("track", "connect"), step("track", "swap")],
        day(0),
        day(6),
        exclusions='[{"type":"track","event":"mint","from_step":1,"to_step":3}]',
        hold_constant='["properties.chain"]',
    ),
    "closed_overlapping_exclusions_hold_constant": funnel_query(
        [step("event", "page"), step("track", "connect"), step("event", "page")],
        day(0),
        day(29),
        breakdown="utm_source",
        exclusions='[{"type":"track","event":"mint","from_step":2,"to_step":3}]',
        hold_constant='["device"]',
    ),
}
# Each query as it was before identity stitching (identity=raw: that SQL must not change), and stitched.
CASES: dict[str, FunnelQuery] = {name: replace(query, identity="raw") for name, query in QUERIES.items()}
CASES |= {f"{name}_stitched": replace(query, identity="stitched") for name, query in QUERIES.items()}
# Raw funnels on a cluster (`cluster_funnel_sql`): the shards' SQL inside `cluster(NAME, view(…))`, merged.
CLUSTER_CASES: dict[str, FunnelQuery] = {f"cluster_{name}": CASES[name] for name in QUERIES}
CLUSTER = ClusterLayout("analytics", "funnels")


# The catalog's queries (funnels.analytics.catalog), built: name → (sql, params).
CATALOG_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "catalog_names": names_sql(
        parse_names_query(
            {"date_from": day(0), "date_to": day(29), "type": "track", "q": "swa", "limit": "50"}
        )
    ),
    "catalog_types": types_sql(parse_names_query({"date_from": day(0)})),
    "catalog_operands": operands_sql(
        parse_operands_query({"type": "track", "event": "swap", "date_from": day(0), "date_to": day(6)})
    ),
    "catalog_values_property": values_sql(
        parse_values_query(
            {"type": "event", "event": "page", "operand": "chain", "q": "eth", "date_to": day(6)}
        )
    ),
    "catalog_values_column": values_sql(
        parse_values_query({"type": "track", "event": "swap", "operand": "device"})
    ),
    "catalog_extent": (extent_sql(), {}),
}


# The funnel's analyses over its per-user SQL (time to convert, trends), built: name → (sql, params).
ANALYSIS_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "time_to_convert_auto": time_to_convert_sql(TimeToConvertQuery(CASES["closed_exclusive"], 1, 3)),
    "time_to_convert_bins_breakdown_stitched": time_to_convert_sql(
        TimeToConvertQuery(CASES["open_breakdown_stitched"], 2, 3, bins=20)
    ),
    "trends_week": trends_sql(TrendsQuery(CASES["closed_exclusive"], "week")),
    "trends_month_breakdown_stitched": trends_sql(
        TrendsQuery(CASES["closed_breakdown_all_operators_stitched"], "month")
    ),
    # On a cluster: folded on the initiator over the Distributed `events`, the dictionary by its database.
    "cluster_time_to_convert_stitched": time_to_convert_sql(
        TimeToConvertQuery(CASES["closed_exclusive_stitched"], 2, 3), CLUSTER
    ),
    "cluster_trends_raw": trends_sql(TrendsQuery(CASES["closed_exclusive"], "day"), CLUSTER),
    "people_reached": people_sql(PeopleQuery(CASES["closed_exclusive"], 2, "reached", 100)),
    "people_dropped_after_cursor_stitched": people_sql(
        PeopleQuery(CASES["closed_overlapping_stitched"], 3, "dropped", 50, after=2**63)
    ),
    "people_converted_breakdown_open": people_sql(
        PeopleQuery(CASES["open_breakdown_stitched"], 1, "converted")
    ),
    "people_breakdown_value": people_sql(
        PeopleQuery(CASES["open_breakdown_stitched"], 2, breakdown_value="Others")
    ),
    "cluster_people_stitched": people_sql(PeopleQuery(CASES["closed_exclusive_stitched"], 1), CLUSTER),
    "people_person_breakdown_value_stitched": people_sql(
        PeopleQuery(CASES["closed_person_breakdown_stitched"], 2, breakdown_value="pro")
    ),
}
# `aggregate_by`: each row's user looked up in the memberships dictionary, folded per group (raw: the key's
# hash; stitched: the person's); the model is a parameter. Run against the oracle, with memberships loaded,
# in tests/analytics/test_aggregate_by.py (on a cluster: CLUSTER_AGGREGATE_CASES below).
AGGREGATE_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "aggregate_by_closed_exclusive": funnel_sql(
        replace(CASES["closed_exclusive"], aggregate_by="organization")
    ),
    "aggregate_by_hold_constant_breakdown_stitched": funnel_sql(
        replace(CASES["closed_hold_constant_breakdown_stitched"], aggregate_by="organization")
    ),
    "aggregate_by_people_stitched": people_sql(
        PeopleQuery(replace(CASES["closed_overlapping_stitched"], aggregate_by="organization"), 2)
    ),
    # with a person breakdown: the group's own identifies, by the hash of the key they are stored under
    "aggregate_by_person_breakdown_stitched": funnel_sql(
        replace(CASES["closed_person_breakdown_stitched"], aggregate_by="organization")
    ),
}
# `aggregate_by` on a cluster (raw or stitched): over the Distributed `events` as on one server, both
# dictionaries named by their database (`funnel_statement`); run over simulated shards against the oracle
# in tests/analytics/test_aggregate_by_cluster.py.
CLUSTER_AGGREGATE_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "cluster_aggregate_by_closed_exclusive": funnel_statement(
        replace(CASES["closed_exclusive"], aggregate_by="organization"), CLUSTER
    ),
    "cluster_aggregate_by_person_breakdown_stitched": funnel_statement(
        replace(CASES["closed_person_breakdown_stitched"], aggregate_by="organization"), CLUSTER
    ),
    "cluster_aggregate_by_people_stitched": people_sql(
        PeopleQuery(replace(CASES["closed_overlapping_stitched"], aggregate_by="organization"), 2), CLUSTER
    ),
}
CATALOG_CASES |= ANALYSIS_CASES | AGGREGATE_CASES | CLUSTER_AGGREGATE_CASES


def built(name: str) -> tuple[str, dict[str, Any]]:
    if name in CLUSTER_CASES:
        return cluster_funnel_sql(CLUSTER_CASES[name], CLUSTER)
    return CATALOG_CASES[name] if name in CATALOG_CASES else funnel_sql(CASES[name])


def pretty(sql: str) -> str:
    """Line breaks before clause keywords and after commas, each replacing one space (so reversible)."""
    assert "\n" not in sql
    broken = re.sub(r" (?=(FROM|WHERE|GROUP BY|ORDER BY|AND|OR) )", "\n", sql)
    return broken.replace(", ", ",\n") + "\n"


def unpretty(text: str) -> str:
    return text.removesuffix("\n").replace("\n", " ")


@pytest.mark.parametrize("name", [*CASES, *CLUSTER_CASES, *CATALOG_CASES])
def test_sql_snapshot(name: str) -> None:
    sql, params = built(name)
    sql_file, params_file = SNAPSHOTS / f"{name}.sql", SNAPSHOTS / f"{name}.params.json"
    params_text = json.dumps(params, indent=2, ensure_ascii=False) + "\n"
    assert unpretty(pretty(sql)) == sql
    if UPDATE:
        SNAPSHOTS.mkdir(exist_ok=True)
        sql_file.write_text(pretty(sql))
        params_file.write_text(params_text)
    hint = (
        "SQL changed; if intended, regenerate with FUNNELS_UPDATE_SNAPSHOTS=1 (see this module's docstring)"
    )
    assert sql_file.exists() and params_file.exists(), f"no snapshot for {name}; {hint}"
    assert unpretty(sql_file.read_text()) == sql, hint
    assert params_file.read_text() == params_text, hint


def test_no_stray_snapshot_files() -> None:
    """Every snapshot file belongs to a case (a renamed case must not leave its old snapshot behind)."""
    names = [*CASES, *CLUSTER_CASES, *CATALOG_CASES]
    expected = {f"{name}{suffix}" for name in names for suffix in (".sql", ".params.json")}
    assert {path.name for path in SNAPSHOTS.iterdir()} == expected


# --- user values stay out of the SQL text ---

HOSTILE = [
    "O'Brien",
    "'; DROP TABLE events; --",
    "\\'; DROP TABLE events; --",
    "x') OR 1=1 OR ('",
    "{evil:String}",
    "C:\\tmp\\",
    "tab\tand\nnewline",
    'quote" and `backtick`',
]


def hostile_query(value: str, funnel_type: str = "closed") -> FunnelQuery:
    """Every user-controlled position holds `value`: filter values (all string operators), a property name
    used as an operand (string and numeric operators), and the event name of step 2."""
    first = step(
        "track",
        "connect",
        ("who", "equals", value),
        ("who", "startsWith", value),
        ("who", "endsWith", value),
        ("who", "includes", value),
        ("who", "notEquals", value + "!"),
        ("utm_source", "in", f"zzz|{value}"),
        ("utm_source", "notIn", f"zzz|{value}!"),
        (value, "equals", "1"),
        (value, "gte", "1"),
    )
    return funnel_query(
        [first, step("track", value)],
        day(0),
        day(0),
        window_seconds=60,
        funnel_type=funnel_type,
        breakdown="utm_source",
    )


@pytest.mark.parametrize("funnel_type", ["closed", "open"])
@pytest.mark.parametrize("value", HOSTILE)
def test_user_values_never_in_sql_text(value: str, funnel_type: str) -> None:
    sql, params = funnel_sql(hostile_query(value, funnel_type))
    assert value not in sql
    assert f"{value}!" not in sql and "zzz" not in sql  # nor the other filter values
    assert len(params) >= 12  # type, event and nine filters' values and operand names are parameters


@pytest.mark.parametrize("funnel_type", ["closed", "open"])
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_run_and_match(store: EventStore, value: str, funnel_type: str) -> None:
    t = at(0, 10 * 3_600_000)
    events = [
        ev("hit", t, "track", "connect", props={"who": value, value: 1}, utm_source=value),
        ev("hit", t + 1000, "track", value),
        ev("near", t, "track", "connect", props={"who": value + "?", value: 1}, utm_source=value),
        ev("near", t + 1000, "track", value),
        ev("other", t, "track", "connect", props={"who": value, value: 0}, utm_source="zzz"),
        ev("other", t + 1000, "track", "swap"),
    ]
    load(store, events)
    before = store.count()
    query = hostile_query(value, funnel_type)
    sql, reference = run_funnel(store, query), reference_funnel(query, events)
    assert column(sql, "users") == column(reference, "users") == [1, 1]
    assert column(sql, "breakdown") == [value, value]
    assert sql["data"] == reference["data"]
    assert store.count() == before == len(events)  # the table is intact


@pytest.mark.parametrize("value", HOSTILE)
def test_catalog_user_values_never_in_sql_text(value: str) -> None:
    for sql, params in [
        names_sql(parse_names_query({"type": value, "q": value})),
        types_sql(parse_names_query({"type": value})),
        operands_sql(parse_operands_query({"type": value, "event": value})),
        values_sql(parse_values_query({"type": value, "event": value, "operand": value, "q": value})),
    ]:
        assert value not in sql
        assert value in params.values()


@pytest.mark.parametrize("value", HOSTILE)
def test_catalog_hostile_values_run_and_match(store: EventStore, value: str) -> None:
    load(store, [ev("u1", at(0), "track", value, props={value: value}, utm_source=value)])
    names = seen_names(store, parse_names_query({"type": "track", "q": value}))
    assert [(row["event"], row["count"]) for row in names["data"]] == [(value, 1)]
    operands = seen_operands(store, parse_operands_query({"type": "track", "event": value}))
    assert [(item["operand"], item["values"]) for item in operands["properties"]] == [
        (value, [{"value": value, "count": 1}])
    ]
    assert operands["columns"][0]["values"] == [{"value": value, "count": 1}]
    for operand in (value, "utm_source"):
        query = parse_values_query({"type": "track", "event": value, "operand": operand, "q": value})
        assert seen_values(store, query)["data"] == [{"value": value, "count": 1}]
    assert store.count() == 1  # the table is intact


def test_snapshot_cases_run(store: EventStore) -> None:
    """The snapshotted queries are valid SQL and agree with the reference on a small event set."""
    t = at(0, 10 * 3_600_000)
    props: dict[str, Any] = {
        "chain": "ethereum",
        "provider": "MetaMask",
        "price": 150,
        "amount": "10",
        "fee": 0.5,
    }
    events = [
        ev("u1", t, "page", device="mobile", page_path="/swap/x", utm_campaign="launch-1", props=props),
        ev("u1", t + 1000, "track", "connect"),
        ev("u1", t + 2000, "track", "swap", props={"chain": "ethereum"}),
        ev("u1", t + 3000, "transaction", "swap", version="2", props=props),
        ev("u2", t, "page", device="desktop", utm_source="twitter", page_path="/swap"),
        ev("u2", t + 5000, "page"),
        ev("u3", t + 1000, "track", "connect"),
        ev("u3", t + 2000, "page", utm_source="farcaster", page_path="/swap/y"),
        # an anonymous visitor who becomes u4: raw and stitched differ
        ev("", t, "page", anonymous_id="a4", device="tablet", utm_source="ads", page_path="/swap/z"),
        ev("u4", t + 500, "identify", anonymous_id="a4"),
        ev("u4", t + 1000, "track", "connect", anonymous_id="a4"),
    ]
    load(store, events)
    for name, query in CASES.items():
        sql, reference = run_funnel(store, query), reference_funnel(query, events)
        assert sql["data"] == reference["data"], name
        assert column(sql, "users")[0] > 0, name
    for name, (sql_text, params) in ANALYSIS_CASES.items():
        if not name.startswith("cluster_"):
            assert store.query(sql_text, params, persons=True).rows, name
