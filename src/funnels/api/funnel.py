"""`GET /v0/funnel`: the funnel analytics endpoint of the spec; `GET /v0/funnels`: the configured funnels,
each with the parameters that chart it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from funnels.analytics.catalog import seen_extent, utc_day
from funnels.analytics.configured import configured_funnels
from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import parse_funnel_query
from funnels.api.deps import require, run_query, services
from funnels.api.schemas import AUTH, AnalyticsResponse, ConfiguredFunnels, documented
from funnels.types import BREAKDOWN_COLUMNS

router = APIRouter(tags=["Query"])

BREAKDOWN = list(BREAKDOWN_COLUMNS)


@router.get(
    "/v0/funnel",
    summary="Get multi-step conversion funnel",
    description=(
        "Per-step unique users, conversion from start and from the previous step, drop-off, and exact median "
        "time-to-convert. `funnel_type=closed` (default): ordered, distinct events, within `window_seconds` of "
        "the first step; `open`: each step fired at least once in any order, adds `dropped_off_users`. "
        "`breakdown` groups users by first-touch value (top N + `Others`). Users are persons: an anonymous id "
        "and the user id it was identified or aliased as count as one (`identity=raw` counts each stored user "
        "key on its own). See docs/semantics.md."
    ),
    dependencies=[require("query:read", local=True)],  # `funnels query` beside a running server
    **documented(AnalyticsResponse, (400, *AUTH)),
)
async def get_funnel(
    request: Request,
    date_from: Annotated[
        str | None, Query(description="Inclusive start date (YYYY-MM-DD, UTC); alias dateFrom")
    ] = None,
    date_to: Annotated[
        str | None, Query(description="Inclusive end date for step 1 (YYYY-MM-DD, UTC); alias dateTo")
    ] = None,
    steps: Annotated[
        str | None, Query(description="JSON array of 2–10 step specs {type, event, name, filters?}")
    ] = None,
    window_seconds: Annotated[
        str | None, Query(description="Conversion window in seconds (default 1209600)")
    ] = None,
    funnel_type: Annotated[str | None, Query(json_schema_extra={"enum": ["closed", "open"]})] = None,
    breakdown: Annotated[
        str | None,
        Query(description="First-touch dimension to break down by", json_schema_extra={"enum": BREAKDOWN}),
    ] = None,
    breakdown_top_n: Annotated[str | None, Query(description="Breakdown values kept (default 8)")] = None,
    identity: Annotated[
        str | None,
        Query(
            description="`stitched` (default): users are persons, anonymous ids joined to the users they were "
            "identified or aliased as; `raw`: each stored user key is a user",
            json_schema_extra={"enum": ["stitched", "raw"]},
        ),
    ] = None,
) -> dict[str, Any]:
    return await run_query(request, parse_funnel_query, run_funnel)


@router.get(
    "/v0/funnels",
    summary="The configured funnels, each with the /v0/funnel parameters that chart it",
    description=(
        "The funnels of the loaded automation config (an empty list without one): id, `forModels`, each step's "
        "event with the `/v0/funnel` step that matches the events automation counts for it, and `query`, the "
        "`/v0/funnel` parameters (closed, longest window, every day with events), or null and `reason` when "
        "the funnel API cannot chart it (it takes 2–10 steps)."
    ),
    dependencies=[require("query:read")],
    **documented(ConfiguredFunnels, AUTH),
)
async def get_funnels(request: Request) -> dict[str, Any]:
    svc = services(request)
    plan = svc.automation.plan
    extent = await run_in_threadpool(seen_extent, svc.events) if plan is not None else None
    today = utc_day(svc.clock.now_ms())
    date_from, date_to = extent or (today, today)
    funnels = configured_funnels(plan.config if plan else None, date_from, date_to)
    return {"data": funnels, "rows": len(funnels)}
