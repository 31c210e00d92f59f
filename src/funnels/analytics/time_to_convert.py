"""`GET /v0/funnel/time_to_convert`: how long users took between two steps of a funnel, as a histogram with
exact percentiles and the mean.

How it works: the funnel's own per-user SQL (`choose_per_user`, the rows `/v0/funnel` counts: one per user,
its furthest step `lvl` and the times `t1..tn` of the path the medians measure) is the source; every user
who reached `to_step` contributes one value, t(to_step) − t(from_step) in ms. Per breakdown group (the
funnel's: top N by step-1 users, the rest in `Others`) the values are collected into one array, from which
ClickHouse computes the count, the mean (sum / count), the percentiles (`quantilesExactInclusive`, as the
funnel's medians) and each value's bin. Bins are shared by every group: automatic ones are fixed,
roughly logarithmic edges (`AUTO_EDGES_MS`, trimmed to the bins that hold someone), and `bins=N` makes N
equal whole-ms bins from the smallest to the largest value of all groups. One scan, like `/v0/funnel`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from funnels.analytics.funnel import timed_query
from funnels.analytics.query import (
    MAX_STEPS,
    FunnelQuery,
    QueryValidationError,
    parse_funnel_part,
    parse_int,
    reject_sample,
)
from funnels.analytics.sql import Params, choose_per_user, initiator_tables
from funnels.store.events import ClusterLayout, EventStore

MAX_BINS: Final = 100
PERCENTILES: Final = (0.25, 0.5, 0.75, 0.9, 0.99)
PERCENTILE_NAMES: Final = ("p25", "p50", "p75", "p90", "p99")

_SECOND, _MINUTE, _HOUR, _DAY = 1000, 60_000, 3_600_000, 86_400_000
_POSITIVE_EDGES_MS = (
    *(s * _SECOND for s in (1, 2, 5, 10, 20, 30)),
    *(m * _MINUTE for m in (1, 2, 5, 10, 20, 30)),
    *(h * _HOUR for h in (1, 2, 3, 6, 12)),
    *(d * _DAY for d in (1, 2, 3, 7, 14, 30, 60, 90, 180, 365, 730, 1826, 3653)),
)
# 0, then from 1 s to 10 years in roughly logarithmic steps people read at a glance; mirrored below 0 for
# open funnels, whose steps may come in any order. The first and last bins are open-ended.
AUTO_EDGES_MS: Final = (*(-e for e in reversed(_POSITIVE_EDGES_MS)), 0, *_POSITIVE_EDGES_MS)


@dataclass(frozen=True)
class TimeToConvertQuery:
    funnel: FunnelQuery
    from_step: int  # 1-based, as in the funnel's rows
    to_step: int
    bins: int | None = None  # None: automatic bins (AUTO_EDGES_MS); else this many equal ones


def parse_time_to_convert_query(params: dict[str, Any]) -> TimeToConvertQuery:
    """The funnel's parameters plus `from_step`, `to_step` (1-based, from < to ≤ steps; by default 1 and the
    last step: the whole funnel, as the funnel's `median_seconds_from_start` of its last row) and optional
    `bins` (1–100); every problem of either collected into one `QueryValidationError`."""
    errors: dict[str, str] = {}
    funnel = parse_funnel_part(params, errors)
    reject_sample(funnel, errors)
    n = len(funnel.steps) if funnel else MAX_STEPS
    steps: dict[str, int] = {}
    for name, default in (("from_step", 1), ("to_step", n)):
        steps[name] = parse_int(params.get(name), errors, name, default, 1, n)
    valid = not errors.keys() & {"from_step", "to_step"}
    if valid and steps["from_step"] >= steps["to_step"]:
        errors["to_step"] = "must be after from_step"
    bins = None
    if params.get("bins") not in (None, "", "auto"):
        bins = parse_int(params.get("bins"), errors, "bins", 0, 1, MAX_BINS)
    if errors:
        raise QueryValidationError(errors)
    assert funnel is not None
    return TimeToConvertQuery(funnel, steps["from_step"], steps["to_step"], bins)


def time_to_convert_sql(query: TimeToConvertQuery, layout: ClusterLayout | None = None) -> tuple[str, Params]:
    """One row per group (ordered by rank): bucket, users, mean ms, the percentiles (ms), the bin edges
    (ms) and the users per bin: `counts[0]` below `edges[0]`, `counts[i]` in [edges[i-1], edges[i]), the
    last at or above the last edge. On a cluster (`layout`) users are folded on the initiator over the
    Distributed `events`, as a stitched funnel is (`initiator_tables`)."""
    funnel = query.funnel
    params: Params = {}
    per_user = choose_per_user(funnel)(funnel, params, initiator_tables(layout))
    value = f"assumeNotNull(t{query.to_step} - t{query.from_step})"
    if funnel.breakdown:
        top_n = f"{{p{len(params)}:UInt32}}"
        params[f"p{len(params)}"] = funnel.breakdown_top_n
        groups = (
            f"SELECT if(rnk <= {top_n}, bd, 'Others') AS bucket, arrayFlatten(groupArray(ds)) AS ds, "
            f"min(rnk) AS r FROM (SELECT *, row_number() OVER (ORDER BY u1 DESC, bd ASC) AS rnk FROM ("
            f"SELECT if(bd0 = '', '(none)', bd0) AS bd, count() AS u1, groupArrayIf({value}, lvl >= {query.to_step}) "
            f"AS ds FROM ({per_user}) WHERE lvl >= 1 GROUP BY bd)) GROUP BY bucket"
        )
    else:
        groups = (
            f"SELECT '' AS bucket, groupArray({value}) AS ds, 1 AS r "
            f"FROM ({per_user}) WHERE lvl >= {query.to_step}"
        )
    levels = ", ".join(str(p) for p in PERCENTILES)
    if query.bins is None:
        edges = f"CAST([{', '.join(map(str, AUTO_EDGES_MS))}], 'Array(Int64)')"  # our constants
    else:  # nb equal bins of w whole ms from lo: [lo, lo + w), …, the last holding hi
        nb = f"least(toInt64({{p{len(params)}:UInt32}}), hi - lo + 1)"
        params[f"p{len(params)}"] = query.bins
        edges = f"arrayMap(k -> lo + k * intDiv(hi - lo + {nb}, {nb}), range(toUInt64({nb}) + 1))"
    stats = (
        f"SELECT bucket, r, ds, length(ds) AS users, if(users = 0, NULL, arraySum(ds) / users) AS mean, "
        f"arrayReduce('quantilesExactInclusive({levels})', ds) AS qs, "
        f"ifNull(min(if(users = 0, NULL, arrayMin(ds))) OVER (), 0) AS lo, "
        f"ifNull(max(if(users = 0, NULL, arrayMax(ds))) OVER (), 0) AS hi FROM ({groups})"
    )
    sql = (
        f"SELECT bucket, users, mean, qs, edges, arrayMap(k -> countEqual(bs, k), range(length(edges) + 1)) "
        f"FROM (SELECT *, {edges} AS edges, arrayMap(x -> arrayCount(e -> e <= x, edges), ds) AS bs "
        f"FROM ({stats})) ORDER BY r"
    )
    return sql, params


@dataclass(frozen=True)
class Group:
    """One breakdown value's (or the whole funnel's) measured users, before shaping."""

    name: str
    users: int
    mean_ms: float | None
    percentiles_ms: tuple[float | None, ...]  # as PERCENTILES
    counts: tuple[int, ...]  # len(edges) + 1: below the first edge, between edges, at or above the last


def _seconds(ms: float | None) -> float | None:
    return None if ms is None or math.isnan(ms) else ms / 1000


def build_time_to_convert(
    query: TimeToConvertQuery, edges_ms: tuple[int, ...], groups: list[Group], statistics: dict[str, Any]
) -> dict[str, Any]:
    """The response: a group per breakdown value (one without a breakdown, even when nobody converted),
    each with its percentiles, mean and histogram; every group's histogram has the same bins. Automatic
    bins are trimmed to those from the first to the last that holds someone in any group."""
    funnel = query.funnel
    if not groups and not funnel.breakdown:
        groups = [Group("", 0, None, (None,) * len(PERCENTILES), (0,) * (len(edges_ms) + 1))]
    bounds: list[tuple[int | None, int | None]] = list(zip((None, *edges_ms), (*edges_ms, None), strict=True))
    held = [i for i in range(len(bounds)) if any(group.counts[i] for group in groups)]
    if query.bins is None:
        kept = range(held[0], held[-1] + 1) if held else range(0)
    else:  # the N equal bins, between the first edge and the last
        kept = range(1, len(edges_ms)) if held else range(0)
    data = []
    for group in groups:
        row: dict[str, Any] = {}
        if funnel.breakdown:
            row["breakdown"] = group.name
        row["users"] = group.users
        row["mean_seconds"] = _seconds(group.mean_ms)
        for name, ms in zip(PERCENTILE_NAMES, group.percentiles_ms, strict=True):
            row[f"{name}_seconds"] = _seconds(ms)
        row["histogram"] = [
            {
                "from_seconds": _seconds(bounds[i][0]),
                "to_seconds": _seconds(bounds[i][1]),
                "users": group.counts[i],
            }
            for i in kept
        ]
        data.append(row)
    return {
        "from_step": query.from_step,
        "to_step": query.to_step,
        "from_event": funnel.steps[query.from_step - 1].name,
        "to_event": funnel.steps[query.to_step - 1].name,
        "bins": "auto" if query.bins is None else query.bins,
        "data": data,
        "rows": len(data),
        "statistics": statistics,
    }


def _float(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def run_time_to_convert(store: EventStore, query: TimeToConvertQuery) -> dict[str, Any]:
    """The `GET /v0/funnel/time_to_convert` response body for a validated query."""
    sql, params = time_to_convert_sql(query, store.cluster)
    results, statistics = timed_query(store, sql, params, query.funnel.stitched)
    groups, edges = [], AUTO_EDGES_MS
    for name, users, mean, quantiles, row_edges, counts in results.rows:
        edges = tuple(int(e) for e in row_edges)  # the same in every row
        groups.append(
            Group(
                name=name,
                users=int(users),
                mean_ms=_float(mean),
                percentiles_ms=tuple(_float(q) for q in quantiles),
                counts=tuple(int(c) for c in counts),
            )
        )
    return build_time_to_convert(query, edges, groups, statistics)
