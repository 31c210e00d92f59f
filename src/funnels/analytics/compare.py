"""`compare=previous_period` on `GET /v0/funnel`: the same funnel over the period of equal length that ends
the day before its `date_from`, and each row's change.

How it works: the previous period's query is the funnel's own with both dates moved back by the range's
length in days (every other parameter kept, the window included, so its users may convert into the current
dates as the current users may past `date_to`). Both run as `/v0/funnel` runs them; the answer is the
current funnel's body as without `compare`, plus `comparison`: the previous dates and one row per current
row (a step, or a step and breakdown value) with both periods' users and conversion from the start, the
change in users (and as a ratio of the previous users) and the change in conversion in percentage points.
Ratios are computed from the counts, not from the rounded ratios of the rows. With a breakdown, rows are
matched by their label: a value outside the previous period's top N has no previous numbers (null), and
`Others` holds whatever fell outside each period's own top N.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any, Final, Literal

from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import FunnelQuery, QueryValidationError, parse_funnel_part
from funnels.store.events import EventStore

Comparison = Literal["previous_period"]
COMPARISONS: Final[tuple[Comparison, ...]] = ("previous_period",)
EARLIEST: Final = date(1970, 1, 1)  # the earliest date_from /v0/funnel takes


@dataclass(frozen=True)
class ComparedQuery:
    """`/v0/funnel`'s parameters: the funnel, and what to compare it with (None: nothing, the plain answer)."""

    funnel: FunnelQuery
    compare: Comparison | None = None


def previous_period(query: FunnelQuery) -> FunnelQuery:
    """The same funnel over the days just before its own, as many of them."""
    days = timedelta(days=(query.date_to - query.date_from).days + 1)
    return replace(query, date_from=query.date_from - days, date_to=query.date_from - timedelta(days=1))


def parse_compared_query(params: dict[str, Any]) -> ComparedQuery:
    """`/v0/funnel`'s parameters with the optional `compare`; every problem collected."""
    errors: dict[str, str] = {}
    funnel = parse_funnel_part(params, errors)
    compare = params.get("compare") or None
    if compare is not None and compare not in COMPARISONS:
        errors["compare"] = f"must be {' or '.join(COMPARISONS)}"
    elif compare is not None and funnel is not None and previous_period(funnel).date_from < EARLIEST:
        errors["compare"] = f"the previous period would start before {EARLIEST.isoformat()}"
    if errors:
        raise QueryValidationError(errors)
    assert funnel is not None
    return ComparedQuery(funnel, compare)


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def change_rows(
    current: list[dict[str, Any]], previous: list[dict[str, Any]], breakdown: bool
) -> list[dict[str, Any]]:
    """One row per current row: both periods' users and conversion from the start, and the changes."""

    def label(row: dict[str, Any]) -> str | None:
        return row["breakdown"] if breakdown else None

    before = {(row["step"], label(row)): row["users"] for row in previous}
    first_now = {label(row): row["users"] for row in current if row["step"] == 1}
    first_before = {label(row): row["users"] for row in previous if row["step"] == 1}
    rows = []
    for row in current:
        users, value = row["users"], label(row)
        start, start_before = first_now.get(value, 0), first_before.get(value, 0)
        was: int | None = before.get((row["step"], value))
        change: dict[str, Any] = {"step": row["step"], "event": row["event"]}
        if breakdown:
            change["breakdown"] = value
        points = None
        if was is not None and start and start_before:
            points = round((users / start - was / start_before) * 100, 2)
        change |= {
            "users": users,
            "previous_users": was,
            "users_change": None if was is None else users - was,
            "users_change_ratio": None if was is None else _ratio(users - was, was),
            "conversion_from_start": _ratio(users, start),
            "previous_conversion_from_start": None if was is None else _ratio(was, start_before),
            "conversion_from_start_change_points": points,
        }
        rows.append(change)
    return rows


def run_compared(store: EventStore, query: ComparedQuery) -> dict[str, Any]:
    """The `GET /v0/funnel` body: the funnel's, plus `comparison` when `compare` is given."""
    body = run_funnel(store, query.funnel)
    if query.compare is None:
        return body
    earlier = previous_period(query.funnel)
    previous = run_funnel(store, earlier)
    data = change_rows(body["data"], previous["data"], bool(query.funnel.breakdown))
    body["comparison"] = {
        "compare": query.compare,
        "date_from": earlier.date_from.isoformat(),
        "date_to": earlier.date_to.isoformat(),
        "data": data,
        "rows": len(data),
        "statistics": previous["statistics"],
    }
    return body
