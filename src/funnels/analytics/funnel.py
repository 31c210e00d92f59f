"""Run a `FunnelQuery` on the event store and shape the spec's response (`meta`, `data`, `rows`, ...)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from funnels.analytics.query import FunnelQuery
from funnels.analytics.sampling import sample_row, sample_summary, scaled
from funnels.analytics.sql import funnel_statement
from funnels.store.events import EventStore, Results


@dataclass(frozen=True)
class Bucket:
    """One breakdown value's (or the whole funnel's) per-step numbers, before ratios are derived."""

    name: str
    users: tuple[int, ...]  # users reaching step k, k = 1..n
    median_from_previous_ms: tuple[float | None, ...]  # index k-1; None at step 1 and where nobody reached
    median_from_start_ms: tuple[float | None, ...]


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def _median(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def meta(query: FunnelQuery) -> list[dict[str, str]]:
    columns = [("step", "UInt64"), ("event", "String")]
    if query.breakdown:
        columns.append(("breakdown", "String"))
    columns += [
        ("users", "UInt64"),
        ("total", "UInt64"),
        ("conversion_from_start", "Nullable(Float64)"),
        ("conversion_from_previous", "Nullable(Float64)"),
        ("dropoff_from_previous", "Nullable(Float64)"),
    ]
    if query.funnel_type == "open":
        columns.append(("dropped_off_users", "Nullable(UInt64)"))
    columns += [
        ("median_seconds_from_previous", "Nullable(Float64)"),
        ("median_seconds_from_start", "Nullable(Float64)"),
    ]
    if query.sample is not None:  # the sample's own counts, the 95% intervals (`analytics.sampling`)
        columns += [
            ("users_sampled", "UInt64"),
            ("users_interval", "Array(UInt64)"),
            ("conversion_from_start_interval", "Nullable(Array(Float64))"),
            ("conversion_from_previous_interval", "Nullable(Array(Float64))"),
        ]
    return [{"name": name, "type": type_} for name, type_ in columns]


def build_response(query: FunnelQuery, buckets: list[Bucket], statistics: dict[str, Any]) -> dict[str, Any]:
    """Rows ordered by step, then by breakdown rank; ratios rounded to 4 decimals, medians in seconds."""
    n = len(query.steps)
    if not buckets and not query.breakdown:  # nobody entered: still one row per step, with zeros
        buckets = [
            Bucket(
                name="", users=(0,) * n, median_from_previous_ms=(None,) * n, median_from_start_ms=(None,) * n
            )
        ]
    totals = [sum(bucket.users[k] for bucket in buckets) for k in range(n)]
    data = []
    for k, step in enumerate(query.steps):
        for bucket in buckets:
            users = bucket.users[k]
            previous = bucket.users[k - 1] if k else None
            row: dict[str, Any] = {"step": k + 1, "event": step.name}
            if query.breakdown:
                row["breakdown"] = bucket.name
            conversion = _ratio(users, previous) if previous is not None else None
            row |= {
                "users": users,
                "total": totals[k],
                "conversion_from_start": _ratio(users, bucket.users[0]),
                "conversion_from_previous": conversion,
                "dropoff_from_previous": None if conversion is None else round(1 - users / previous, 4),  # type: ignore[operator]
            }
            if query.funnel_type == "open":
                row["dropped_off_users"] = None if previous is None else previous - users
            row["median_seconds_from_previous"] = _seconds(bucket.median_from_previous_ms[k])
            row["median_seconds_from_start"] = _seconds(bucket.median_from_start_ms[k])
            if query.sample is not None:  # counts scaled from the sample's, with their intervals
                row["total"] = scaled(totals[k], query.sample)
                sample_row(row, users, previous, bucket.users[0], query.sample)
            data.append(row)
    body = {
        "meta": meta(query),
        "data": data,
        "rows": len(data),
        "rows_before_limit_at_least": len(data),
        "statistics": statistics,
    }
    if query.sample is not None:
        body["sample"] = sample_summary(query.sample, totals[0] if totals else 0, sample_unit(query))
    return body


def sample_unit(query: FunnelQuery) -> str:
    """What a sample is of: groups (`aggregate_by`), persons (stitched) or user keys (raw)."""
    return "group" if query.aggregate_by else "person" if query.stitched else "user_key"


def buckets_from_rows(query: FunnelQuery, rows: list[list[Any]]) -> list[Bucket]:
    n = len(query.steps)
    buckets = []
    for row in rows:
        users = tuple(int(v) for v in row[1 : 1 + n])
        previous = row[1 + n : 1 + n + (n - 1)]
        start = row[1 + n + (n - 1) : 1 + n + 2 * (n - 1)]
        buckets.append(
            Bucket(
                name=row[0],
                users=users,
                median_from_previous_ms=(None, *(_median(v) for v in previous)),
                median_from_start_ms=(None, *(_median(v) for v in start)),
            )
        )
    return buckets


def timed_query(
    store: EventStore, sql: str, params: Mapping[str, Any], stitched: bool
) -> tuple[Results, dict[str, Any]]:
    """Run an analysis's query; its rows, and the response's `statistics` (elapsed seconds, rows and bytes
    read)."""
    started = time.perf_counter()
    results = store.query(sql, params, persons=stitched)
    statistics = {
        "elapsed": round(time.perf_counter() - started, 6),
        "rows_read": int(results.statistics.get("rows_read", 0)),
        "bytes_read": int(results.statistics.get("bytes_read", 0)),
    }
    return results, statistics


def run_funnel(store: EventStore, query: FunnelQuery) -> dict[str, Any]:
    """The `GET /v0/funnel` response body for a validated query (on a cluster, a raw one runs on the shards:
    `funnel_statement`)."""
    sql, params = funnel_statement(query, store.cluster)
    results, statistics = timed_query(store, sql, params, query.stitched)
    return build_response(query, buckets_from_rows(query, results.rows), statistics)
