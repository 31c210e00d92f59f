"""What the event store has seen, for building a funnel: the event names of each type, the operands a step
can filter on (standard columns and property keys) with their most common values, one operand's values, and
the user keys (identified or anonymous) that sent events.

Names come from the events table's `names_by_day` projection (count and last time per type, event and UTC
day), so listing them reads a few rows per name and day, not every event. Operands and values come from a
capped sample: the first `SAMPLE_EVENTS` matching events the store reads. That bounds the cost whatever
the table's size; it is not a random sample: the table is stored by user, so it holds the events of a
slice of users over the whole date range. `sample.complete` says whether it held every matching event.
User keys are read in that order, the table's sort key, from the page's cursor (the last key of the previous
page) on, with aggregation in order, so a page stops reading once it has its keys.

Values are what the funnel API's filters compare (`funnels.analytics.sql`): a column's text; a property's
string, or an integer or boolean as spelled in JSON. Other JSON values (fractions, objects, null) have no
text, so they are counted but never suggested; `numeric` counts the values `gt`/`lt`/`gte`/`lte` can compare.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

from funnels.analytics.query import (
    MAX_TEXT,
    NUMBER_PATTERN,
    QueryValidationError,
    Step,
    parse_dates,
    parse_int,
    parse_text,
)
from funnels.analytics.sql import Binder, Params, property_text, step_sql
from funnels.store.events import EventStore
from funnels.types import STANDARD_COLUMNS

SAMPLE_EVENTS: Final = 50_000
TOP_VALUES: Final = 5  # values listed with each operand
DEFAULT_NAMES, DEFAULT_PROPERTIES, DEFAULT_VALUES, DEFAULT_USERS = 200, 100, 20, 100
MAX_LIMIT: Final = 1_000


@dataclass(frozen=True)
class DateRange:
    """Inclusive UTC days; either end may be open."""

    date_from: date | None = None
    date_to: date | None = None


@dataclass(frozen=True)
class NamesQuery:
    dates: DateRange = DateRange()
    type: str | None = None  # a stored type, e.g. `track`
    q: str | None = None  # part of the name, any case
    limit: int = DEFAULT_NAMES


@dataclass(frozen=True)
class OperandsQuery:
    step: Step
    dates: DateRange = DateRange()
    limit: int = DEFAULT_PROPERTIES  # property keys


@dataclass(frozen=True)
class ValuesQuery:
    step: Step
    operand: str
    dates: DateRange = DateRange()
    q: str | None = None  # start of the value, any case
    limit: int = DEFAULT_VALUES


@dataclass(frozen=True)
class UsersQuery:
    dates: DateRange = DateRange()
    q: str | None = None  # part of the key, any case
    cursor: str | None = None  # the last key of the previous page
    limit: int = DEFAULT_USERS


# --- parameters ---


def _dates(params: dict[str, Any], errors: dict[str, str]) -> DateRange:
    date_from, date_to = parse_dates(params, errors, required=False)
    return DateRange(date_from, date_to)


def _optional(params: dict[str, Any], name: str, errors: dict[str, str]) -> str | None:
    raw = params.get(name)
    return None if raw is None else parse_text(raw, name, errors, required=False) or None


def _step(params: dict[str, Any], errors: dict[str, str]) -> Step:
    """The step's `type` and `event`, read as `/v0/funnel` reads them (type `event`: any name of a type)."""
    return Step(
        type=parse_text(params.get("type"), "type", errors),
        event=parse_text(params.get("event"), "event", errors),
        name="",
    )


def _checked(errors: dict[str, str]) -> None:
    if errors:
        raise QueryValidationError(errors)


def parse_names_query(params: dict[str, Any]) -> NamesQuery:
    errors: dict[str, str] = {}
    query = NamesQuery(
        dates=_dates(params, errors),
        type=_optional(params, "type", errors),
        q=_optional(params, "q", errors),
        limit=parse_int(params.get("limit"), errors, "limit", DEFAULT_NAMES, 1, MAX_LIMIT),
    )
    _checked(errors)
    return query


def parse_operands_query(params: dict[str, Any]) -> OperandsQuery:
    errors: dict[str, str] = {}
    query = OperandsQuery(
        step=_step(params, errors),
        dates=_dates(params, errors),
        limit=parse_int(params.get("limit"), errors, "limit", DEFAULT_PROPERTIES, 1, MAX_LIMIT),
    )
    _checked(errors)
    return query


def parse_values_query(params: dict[str, Any]) -> ValuesQuery:
    errors: dict[str, str] = {}
    query = ValuesQuery(
        step=_step(params, errors),
        operand=parse_text(params.get("operand"), "operand", errors),
        dates=_dates(params, errors),
        q=_optional(params, "q", errors),
        limit=parse_int(params.get("limit"), errors, "limit", DEFAULT_VALUES, 1, MAX_LIMIT),
    )
    _checked(errors)
    return query


def parse_users_query(params: dict[str, Any]) -> UsersQuery:
    errors: dict[str, str] = {}
    query = UsersQuery(
        dates=_dates(params, errors),
        q=_optional(params, "q", errors),
        cursor=_optional(params, "cursor", errors),
        limit=parse_int(params.get("limit"), errors, "limit", DEFAULT_USERS, 1, MAX_LIMIT),
    )
    _checked(errors)
    return query


# --- SQL: every user value is a bound parameter ---


def _where(conditions: list[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def _date_conditions(dates: DateRange, bind: Binder) -> list[str]:
    """By UTC day, the expression the projection is grouped by (so names are read from it)."""
    conditions = []
    if dates.date_from is not None:
        conditions.append(f"toDate32(ts) >= {bind(dates.date_from.isoformat(), 'Date32')}")
    if dates.date_to is not None:
        conditions.append(f"toDate32(ts) <= {bind(dates.date_to.isoformat(), 'Date32')}")
    return conditions


def _names_grouped(query: NamesQuery, bind: Binder, search: bool) -> str:
    conditions = _date_conditions(query.dates, bind)
    if query.type is not None:
        conditions.append(f"type = {bind(query.type, 'String')}")
    if search and query.q:
        conditions.append(f"positionCaseInsensitiveUTF8(event, {bind(query.q, 'String')}) > 0")
    return (
        "SELECT type, event, count() AS n, toUnixTimestamp64Milli(max(ts)) AS last_ms FROM events"
        f"{_where(conditions)} GROUP BY type, event"
    )


def names_sql(query: NamesQuery) -> tuple[str, Params]:
    """(type, event, events, last ms) by events, one row more than the limit (to tell if there are more)."""
    params: Params = {}
    bind = Binder(params)
    grouped = _names_grouped(query, bind, search=True)
    return f"{grouped} ORDER BY n DESC, type, event LIMIT {bind(query.limit + 1, 'UInt64')}", params


def types_sql(query: NamesQuery) -> tuple[str, Params]:
    """(type, events, last ms, names) per stored type in the date range (and `type`, if given; not `q`)."""
    params: Params = {}
    grouped = _names_grouped(query, Binder(params), search=False)
    return (
        f"SELECT type, sum(n) AS total, max(last_ms), count() FROM ({grouped}) GROUP BY type "
        f"ORDER BY total DESC, type LIMIT {MAX_LIMIT}",
        params,
    )


def _sample(step: Step, dates: DateRange, bind: Binder, columns: str) -> str:
    """The first `SAMPLE_EVENTS` events of the step in the date range that the store reads."""
    conditions = [step_sql(step, bind), *_date_conditions(dates, bind)]
    return f"SELECT {columns} FROM events{_where(conditions)} LIMIT {bind(SAMPLE_EVENTS, 'UInt64')}"


_COLUMN_ITEMS = ", ".join(f"('column', '{name}', toString({name}), false)" for name in STANDARD_COLUMNS)
_NOT_COLUMNS = ", ".join(f"'{name}'" for name in STANDARD_COLUMNS)
# A property as the filters read it (`property_text` in sql.py), from one parse of the properties per event:
# (key, raw JSON, its type). The raw JSON of an integer-valued fraction (1000.0) reads as an integer, so
# integers are checked against the properties themselves. The 4th field: a JSON number.
_PROPERTY_ITEM = (
    "('property', kv.1, multiIf("
    "kv.3 = 'String', JSONExtractString(kv.2), "
    "kv.3 = 'Bool', kv.2, "
    "kv.3 IN ('Int64', 'UInt64') AND JSONType(properties, kv.1) IN ('Int64', 'UInt64'), kv.2, ''), "
    "kv.3 IN ('Int64', 'UInt64', 'Double'))"
)
_PROPERTY_KEYS = (
    f"arrayFilter(kv -> kv.1 != '' AND lengthUTF8(kv.1) <= {MAX_TEXT} AND kv.1 NOT IN ({_NOT_COLUMNS}), "
    "arrayMap(kv -> (kv.1, kv.2, JSONType(kv.2)), JSONExtractKeysAndValuesRaw(properties)))"
)


def operands_sql(query: OperandsQuery) -> tuple[str, Params]:
    """Over the sample: per operand (columns with a value, property keys present) its events, how many hold
    a number, and its values by events, at most `TOP_VALUES` + 1 rows each (one may be the no-text row).

    Each event is unrolled into items (source, operand, text, JSON number): one `sample` item (to count the
    events), one per non-empty column, one per property key. Property keys that are a standard column's
    name are left out: a filter on that operand reads the column. A value with text is a number when its
    text spells one (as the numeric filters read it); one without text when it is a JSON number."""
    params: Params = {}
    bind = Binder(params)
    sample = _sample(query.step, query.dates, bind, f"{', '.join(STANDARD_COLUMNS)}, properties")
    items = (
        "arrayConcat([('sample', '', '', false)], "
        f"arrayFilter(x -> x.3 != '', [{_COLUMN_ITEMS}]), arrayMap(kv -> {_PROPERTY_ITEM}, {_PROPERTY_KEYS}))"
    )
    grouped = (
        "SELECT item.1 AS source, item.2 AS operand, item.3 AS text, count() AS n, "
        f"if(text != '', if(match(text, '{NUMBER_PATTERN}'), n, 0), countIf(item.4)) AS numeric "
        f"FROM ({sample}) ARRAY JOIN {items} AS item GROUP BY source, operand, text"
    )
    per_operand = TOP_VALUES + 1
    rows = per_operand * (1 + len(STANDARD_COLUMNS) + query.limit + 1)
    sql = (
        "SELECT source, operand, sum(n) OVER w AS total, sum(numeric) OVER w AS numbers, text, n "
        f"FROM ({grouped}) WINDOW w AS (PARTITION BY source, operand) "
        "ORDER BY source = 'property', total DESC, operand, text = '', n DESC, text "
        f"LIMIT {bind(per_operand, 'UInt64')} BY source, operand LIMIT {bind(rows, 'UInt64')}"
    )
    return sql, params


def values_sql(query: ValuesQuery) -> tuple[str, Params]:
    """The operand's values over the sample, wanted ones (non-empty, starting with `q` in any case) first, by
    events; with the sample's size. Unwanted rows are kept, sorted last, so an empty answer still says how
    many events were sampled."""
    params: Params = {}
    bind = Binder(params)
    if query.operand in STANDARD_COLUMNS:
        text = f"toString({query.operand})"
    else:
        text = property_text(bind(query.operand, "String"))
    wanted = "value != ''"
    if query.q:
        wanted += f" AND startsWith(lowerUTF8(value), lowerUTF8({bind(query.q, 'String')}))"
    sample = _sample(query.step, query.dates, bind, f"{text} AS value")
    limit = bind(query.limit + 1, "UInt64")
    return (
        f"SELECT value, count() AS n, sum(n) OVER () AS sampled, {wanted} AS wanted FROM ({sample}) "
        f"GROUP BY value ORDER BY wanted DESC, n DESC, value LIMIT {limit}",
        params,
    )


def users_sql(query: UsersQuery) -> tuple[str, Params]:
    """(key, events, last ms, whether any event carried a user id) per user key after the cursor, in key
    order, one row more than the limit (to tell if there are more)."""
    params: Params = {}
    bind = Binder(params)
    conditions = _date_conditions(query.dates, bind)
    if query.cursor is not None:
        conditions.append(f"user_key > {bind(query.cursor, 'String')}")
    if query.q:
        conditions.append(f"positionCaseInsensitiveUTF8(user_key, {bind(query.q, 'String')}) > 0")
    return (
        "SELECT user_key, count() AS n, toUnixTimestamp64Milli(max(ts)), max(user_id != '') FROM events"
        f"{_where(conditions)} GROUP BY user_key ORDER BY user_key LIMIT {bind(query.limit + 1, 'UInt64')} "
        "SETTINGS optimize_aggregation_in_order = 1",
        params,
    )


def extent_sql() -> str:
    """The first and last event time (ms), read from the parts' min/max index; NULLs when empty."""
    return (
        "SELECT if(count() = 0, NULL, toUnixTimestamp64Milli(min(ts))), "
        "if(count() = 0, NULL, toUnixTimestamp64Milli(max(ts))) FROM events"
    )


# --- running and shaping ---


def utc_day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def name_step(type_: str, event: str) -> dict[str, str] | None:
    """The funnel step matching exactly the events of this type and name. None for stored type `event`,
    which a step cannot name: step type `event` means "any name of the type given as `event`"."""
    return None if type_ == "event" else {"type": type_, "event": event}


def type_step(type_: str) -> dict[str, str]:
    """The funnel step matching every event of this type, whatever its name."""
    return {"type": "event", "event": type_}


class _Runner:
    """Runs queries on the store, adding up their statistics the way `/v0/funnel` reports them."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.statistics: dict[str, Any] = {"elapsed": 0.0, "rows_read": 0, "bytes_read": 0}

    def __call__(self, sql: str, params: Params) -> list[list[Any]]:
        started = time.perf_counter()
        results = self.store.query(sql, params)
        self.statistics["elapsed"] = round(self.statistics["elapsed"] + time.perf_counter() - started, 6)
        for name in ("rows_read", "bytes_read"):
            self.statistics[name] += int(results.statistics.get(name, 0))
        return results.rows


def _sample_info(events: int) -> dict[str, Any]:
    return {"events": events, "limit": SAMPLE_EVENTS, "complete": events < SAMPLE_EVENTS}


def seen_names(store: EventStore, query: NamesQuery) -> dict[str, Any]:
    """`GET /v0/events/names`: each stored type, and the (type, event) pairs by events, capped."""
    run = _Runner(store)
    types = [
        {
            "type": type_,
            "count": int(total),
            "names": int(names),
            "last_seen": iso(int(last_ms)),
            "step": type_step(type_),
        }
        for type_, total, last_ms, names in run(*types_sql(query))
    ]
    pairs = run(*names_sql(query))
    data = [
        {
            "type": type_,
            "event": event,
            "count": int(n),
            "last_seen": iso(int(last_ms)),
            "step": name_step(type_, event),
        }
        for type_, event, n, last_ms in pairs[: query.limit]
    ]
    return {
        "types": types,
        "data": data,
        "rows": len(data),
        "has_more": len(pairs) > query.limit,
        "statistics": run.statistics,
    }


def _operand(name: str, count: int = 0, numeric: int = 0) -> dict[str, Any]:
    return {"operand": name, "count": count, "numeric": numeric, "values": []}


def seen_operands(store: EventStore, query: OperandsQuery) -> dict[str, Any]:
    """`GET /v0/events/properties`: every standard column and the property keys seen, with top values."""
    run = _Runner(store)
    sampled = 0
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for source, name, total, numeric, text, n in run(*operands_sql(query)):
        if source == "sample":
            sampled = int(n)
            continue
        operand = found.setdefault((source, name), _operand(name, int(total), int(numeric)))
        if text and len(text) <= MAX_TEXT and len(operand["values"]) < TOP_VALUES:
            operand["values"].append({"value": text, "count": int(n)})
    columns = [found.get(("column", name)) or _operand(name) for name in STANDARD_COLUMNS]
    properties = [operand for (source, _name), operand in found.items() if source == "property"]
    return {
        "step": {"type": query.step.type, "event": query.step.event},
        "columns": sorted(columns, key=lambda operand: -operand["count"]),
        "properties": properties[: query.limit],
        "has_more": len(properties) > query.limit,
        "sample": _sample_info(sampled),
        "statistics": run.statistics,
    }


def seen_values(store: EventStore, query: ValuesQuery) -> dict[str, Any]:
    """`GET /v0/events/values`: one operand's values by events, capped."""
    run = _Runner(store)
    rows = run(*values_sql(query))
    wanted = [(value, int(n)) for value, n, _sampled, wanted in rows if wanted]
    values = [{"value": value, "count": n} for value, n in wanted[: query.limit] if len(value) <= MAX_TEXT]
    return {
        "step": {"type": query.step.type, "event": query.step.event},
        "operand": query.operand,
        "column": query.operand in STANDARD_COLUMNS,
        "data": values,
        "rows": len(values),
        "has_more": len(wanted) > query.limit,
        "sample": _sample_info(int(rows[0][2]) if rows else 0),
        "statistics": run.statistics,
    }


def seen_users(store: EventStore, query: UsersQuery) -> dict[str, Any]:
    """`GET /v0/events/users`: user keys with events (raw ids, not stitched), in key order, a page at a time."""
    run = _Runner(store)
    rows = run(*users_sql(query))
    data = [
        {"user_key": key, "events": int(n), "last_seen": iso(int(last_ms)), "identified": bool(identified)}
        for key, n, last_ms, identified in rows[: query.limit]
    ]
    more = len(rows) > query.limit
    return {
        "data": data,
        "rows": len(data),
        "next_cursor": data[-1]["user_key"] if more else None,
        "statistics": run.statistics,
    }


def seen_extent(store: EventStore) -> tuple[date, date] | None:
    """The UTC days of the first and the last event, or None when the store is empty."""
    row = store.query(extent_sql()).first()
    if row is None or row[0] is None:
        return None
    return utc_day(int(row[0])), utc_day(int(row[1]))
