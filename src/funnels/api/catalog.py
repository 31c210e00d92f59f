"""`GET /v0/events/names`, `/v0/events/properties`, `/v0/events/values`: what a funnel builder can choose
from, as seen in the event store (`funnels.analytics.catalog`); `/v0/events/users`: the user keys seen."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from funnels.analytics.catalog import (
    SAMPLE_EVENTS,
    TOP_VALUES,
    parse_names_query,
    parse_operands_query,
    parse_users_query,
    parse_values_query,
    seen_names,
    seen_operands,
    seen_users,
    seen_values,
)
from funnels.analytics.query import MAX_TEXT
from funnels.api.deps import require, run_query
from funnels.api.schemas import ANALYTICS, EventNames, EventProperties, EventUsers, EventValues, documented

# `funnels catalog` beside a running server uses the local credential.
router = APIRouter(tags=["Query"], dependencies=[require("query:read", local=True)])

DateFrom = Annotated[str | None, Query(description="Inclusive first day (YYYY-MM-DD, UTC); alias dateFrom")]
DateTo = Annotated[str | None, Query(description="Inclusive last day (YYYY-MM-DD, UTC); alias dateTo")]
StepType = Annotated[
    str | None,
    Query(description="Step type as in `/v0/funnel` steps (`event`: any name of the type in `event`)"),
]
StepEvent = Annotated[str | None, Query(description="Step event as in `/v0/funnel` steps")]


@router.get(
    "/v0/events/names",
    summary="Event names seen, per type, with counts and last seen time",
    description=(
        "Each stored type (with the step that matches any of its names) and the (type, event) pairs seen in "
        "the date range, by count, with the step that matches each. Read from a per-day summary of the "
        "events table, so it costs a few rows per name and day."
    ),
    **documented(EventNames, ANALYTICS),
)
async def event_names(
    request: Request,
    date_from: DateFrom = None,
    date_to: DateTo = None,
    type: Annotated[str | None, Query(description="Only this stored type (e.g. `track`, `page`)")] = None,
    q: Annotated[str | None, Query(description="Only names containing this text (any case)")] = None,
    limit: Annotated[str | None, Query(description="Names listed, 1–1000 (default 200)")] = None,
) -> dict[str, Any]:
    return await run_query(request, parse_names_query, seen_names)


@router.get(
    "/v0/events/properties",
    summary="The operands a step can filter on, with top values",
    description=(
        f"Every standard column and the property keys seen for the step, each with how many events have it, "
        f"how many of those hold a number, and its top {TOP_VALUES} values, from a sample: the first "
        f"{SAMPLE_EVENTS:,} events of the step in the date range the store reads."
    ),
    **documented(EventProperties, ANALYTICS),
)
async def event_properties(
    request: Request,
    type: StepType = None,
    event: StepEvent = None,
    date_from: DateFrom = None,
    date_to: DateTo = None,
    limit: Annotated[str | None, Query(description="Property keys listed, 1–1000 (default 100)")] = None,
) -> dict[str, Any]:
    return await run_query(request, parse_operands_query, seen_operands)


@router.get(
    "/v0/events/values",
    summary="Values of one operand of a step, by count",
    description=(
        f"The values a filter on `operand` (a standard column or a property key) can match, by count, "
        f"optionally only those starting with `q` (any case), from the same sample as "
        f"`/v0/events/properties` (the first {SAMPLE_EVENTS:,} events of the step)."
    ),
    **documented(EventValues, ANALYTICS),
)
async def event_values(
    request: Request,
    type: StepType = None,
    event: StepEvent = None,
    operand: Annotated[str | None, Query(description="A standard column or a property key")] = None,
    q: Annotated[str | None, Query(description="Only values starting with this text (any case)")] = None,
    date_from: DateFrom = None,
    date_to: DateTo = None,
    limit: Annotated[str | None, Query(description="Values listed, 1–1000 (default 20)")] = None,
) -> dict[str, Any]:
    return await run_query(request, parse_values_query, seen_values)


@router.get(
    "/v0/events/users",
    summary="User keys with events (identified or anonymous), in key order, searched and paged",
    description=(
        "Each user key (the user id, else the anonymous id, as sent: not stitched) with events in the date "
        "range, with its events, last seen time and whether any event carried a user id; in key order, "
        "`limit` at a time. Pass `next_cursor` back as `cursor` for the next page (null on the last)."
    ),
    **documented(EventUsers, ANALYTICS),
)
async def event_users(
    request: Request,
    date_from: DateFrom = None,
    date_to: DateTo = None,
    q: Annotated[
        str, Query(max_length=MAX_TEXT, description="Only keys containing this text (any case)")
    ] = "",
    limit: Annotated[str | None, Query(description="Keys listed, 1–1000 (default 100)")] = None,
    cursor: Annotated[
        str | None, Query(max_length=MAX_TEXT, description="`next_cursor` of the previous page")
    ] = None,
) -> dict[str, Any]:
    return await run_query(request, parse_users_query, seen_users)
