"""`GET /v0/funnel/trends`: a funnel's conversion over time, per day, week or month of entry.

How it works: the funnel's own per-user SQL (`choose_per_user`: one row per user who entered, its furthest
step `lvl` and the times `t1..tn` of the path `/v0/funnel` measures) is the source. Each user belongs to
the period holding t1, the start of that path, and converted when `lvl` is the last step; ClickHouse counts
entered and converted users per (breakdown value, period). Breakdown values are ranked by entered users
over the whole range (the funnel's step-1 users), the top N kept and the rest merged into `Others`, as in
`/v0/funnel`. Summed over periods the counts are the funnel's step-1 and last-step users, by construction.
Periods are UTC days, ISO weeks (Monday to Sunday) or calendar months, clipped to the date range; every
period of the range is in the answer, with zeros where nobody entered. A period whose last moment plus the
window is not yet past (by the server's clock) is marked `window_closed: false`: its users may still
convert.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final, Literal

from funnels.analytics.funnel import timed_query
from funnels.analytics.query import (
    FunnelQuery,
    QueryValidationError,
    parse_choice,
    parse_funnel_part,
    reject_sample,
)
from funnels.analytics.sql import Params, choose_per_user, initiator_tables
from funnels.store.events import ClusterLayout, EventStore

Interval = Literal["day", "week", "month"]
INTERVALS: tuple[Interval, ...] = ("day", "week", "month")
MAX_PERIODS: Final = 3_660  # ten years of days
DAY_MS: Final = 86_400_000
EPOCH: Final = date(1970, 1, 1)

# A period's key from t1 (ms): days since the epoch of its first day (day, week), or months since year 0.
_DAYS = "intDiv(assumeNotNull(t1), 86400000)"
PERIOD_KEY_SQL: Final = {
    "day": _DAYS,
    "week": f"{_DAYS} - ({_DAYS} + 3) % 7",  # 1970-01-01 was a Thursday: back to Monday
    "month": "toYear(d32_) * 12 + toMonth(d32_) - 1",
}


@dataclass(frozen=True)
class TrendsQuery:
    funnel: FunnelQuery
    interval: Interval = "day"


@dataclass(frozen=True)
class Period:
    key: int  # as PERIOD_KEY_SQL
    start: date  # the period's first day (may be before the range's date_from)
    date_from: date  # clipped to the range
    date_to: date


def period_start(interval: Interval, day: date) -> date:
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    return day


def period_key(interval: Interval, start: date) -> int:
    if interval == "month":
        return start.year * 12 + start.month - 1
    return (start - EPOCH).days


def periods(interval: Interval, date_from: date, date_to: date) -> list[Period]:
    """Every period that holds a day of [date_from, date_to], in order."""
    found: list[Period] = []
    day = date_from
    while day <= date_to:
        start = period_start(interval, day)
        if interval == "month":
            following = date(start.year + start.month // 12, start.month % 12 + 1, 1)
        else:
            following = start + timedelta(days=7 if interval == "week" else 1)
        last = min(following - timedelta(days=1), date_to)
        found.append(Period(period_key(interval, start), start, day, last))
        day = last + timedelta(days=1)
    return found


def parse_trends_query(params: dict[str, Any]) -> TrendsQuery:
    """The funnel's parameters plus `interval` (day, the default, week or month); every problem of either
    collected into one `QueryValidationError`, including a range of more than `MAX_PERIODS` periods."""
    errors: dict[str, str] = {}
    funnel = parse_funnel_part(params, errors)
    reject_sample(funnel, errors)
    interval = parse_choice(params.get("interval"), INTERVALS, errors, "interval")
    if funnel is not None and "interval" not in errors:
        days = (funnel.date_to - funnel.date_from).days + 1
        count = days if interval == "day" else len(periods(interval, funnel.date_from, funnel.date_to))
        if count > MAX_PERIODS:
            errors["interval"] = (
                f"at most {MAX_PERIODS:,} periods between date_from and date_to; use a longer one"
            )
    if errors:
        raise QueryValidationError(errors)
    assert funnel is not None
    return TrendsQuery(funnel, interval)


def trends_sql(query: TrendsQuery, layout: ClusterLayout | None = None) -> tuple[str, Params]:
    """Rows of (bucket, period key, entered, converted, bucket rank); only (bucket, period) pairs with
    someone entered. On a cluster (`layout`) users are folded on the initiator over the Distributed
    `events`, as a stitched funnel is (`initiator_tables`)."""
    funnel = query.funnel
    params: Params = {}
    per_user = choose_per_user(funnel)(funnel, params, initiator_tables(layout))
    n = len(funnel.steps)
    key = PERIOD_KEY_SQL[query.interval]
    day32 = (
        "toDate32(fromUnixTimestamp64Milli(assumeNotNull(t1), 'UTC')) AS d32_, "
        if query.interval == "month"
        else ""
    )
    if not funnel.breakdown:
        return (
            f"SELECT '' AS bucket, period, count() AS entered, countIf(lvl >= {n}) AS converted, 1 AS r "
            f"FROM (SELECT {day32}{key} AS period, lvl FROM ({per_user}) WHERE lvl >= 1) "
            f"GROUP BY period ORDER BY period",
            params,
        )
    top_n = f"{{p{len(params)}:UInt32}}"
    params[f"p{len(params)}"] = funnel.breakdown_top_n
    sql = (
        f"SELECT if(rnk <= {top_n}, bd, 'Others') AS bucket, period, sum(entered) AS entered, "
        f"sum(converted) AS converted, min(rnk) AS r FROM ("
        f"SELECT *, dense_rank() OVER (ORDER BY total DESC, bd ASC) AS rnk FROM ("
        f"SELECT *, sum(entered) OVER (PARTITION BY bd) AS total FROM ("
        f"SELECT bd, period, count() AS entered, countIf(lvl >= {n}) AS converted FROM ("
        f"SELECT {day32}if(bd0 = '', '(none)', bd0) AS bd, {key} AS period, lvl FROM ({per_user}) "
        f"WHERE lvl >= 1) GROUP BY bd, period))) GROUP BY bucket, period ORDER BY r, period"
    )
    return sql, params


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def build_trends(
    query: TrendsQuery,
    counts: dict[tuple[str, int], tuple[int, int]],
    buckets: list[str],
    now_ms: int,
    statistics: dict[str, Any],
) -> dict[str, Any]:
    """The response: a row per period (in order), then per bucket (in rank order; one row per period
    without a breakdown), with entered and converted users, the rate and whether the window has closed.
    `counts` maps (bucket, period key) to (entered, converted); missing pairs are zeros."""
    funnel = query.funnel
    if not funnel.breakdown:
        buckets = [""]
    data = []
    for period in periods(query.interval, funnel.date_from, funnel.date_to):
        last_ms = (period.date_to - EPOCH).days * DAY_MS + DAY_MS - 1  # its last millisecond in the range
        closed = now_ms > last_ms + funnel.window_ms
        for bucket in buckets:
            entered, converted = counts.get((bucket, period.key), (0, 0))
            row: dict[str, Any] = {
                "period": period.start.isoformat(),
                "date_from": period.date_from.isoformat(),
                "date_to": period.date_to.isoformat(),
            }
            if funnel.breakdown:
                row["breakdown"] = bucket
            row |= {
                "entered": entered,
                "converted": converted,
                "conversion": _ratio(converted, entered),
                "window_closed": closed,
            }
            data.append(row)
    return {
        "interval": query.interval,
        "data": data,
        "rows": len(data),
        "statistics": statistics,
    }


def run_trends(store: EventStore, query: TrendsQuery, now_ms: int) -> dict[str, Any]:
    """The `GET /v0/funnel/trends` response body for a validated query, `now_ms` deciding which periods'
    windows have closed."""
    sql, params = trends_sql(query, store.cluster)
    results, statistics = timed_query(store, sql, params, query.funnel.stitched)
    counts: dict[tuple[str, int], tuple[int, int]] = {}
    rank: dict[str, int] = {}
    for bucket, key, entered, converted, r in results.rows:
        counts[(bucket, int(key))] = (int(entered), int(converted))
        rank[bucket] = min(rank.get(bucket, int(r)), int(r))
    return build_trends(query, counts, sorted(rank, key=rank.__getitem__), now_ms, statistics)
