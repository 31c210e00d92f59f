"""`GET /v0/funnel`: the funnel analytics endpoint of the spec; `GET /v0/funnels`: the configured funnels,
each with the parameters that chart it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from funnels.analytics.catalog import seen_extent, utc_day
from funnels.analytics.compare import COMPARISONS, parse_compared_query, run_compared
from funnels.analytics.configured import configured_funnels
from funnels.analytics.groups import aggregate_by_problem
from funnels.analytics.people import OUTCOMES, parse_people_query, people_csv, run_people
from funnels.analytics.query import FunnelQuery, QueryValidationError
from funnels.analytics.time_to_convert import parse_time_to_convert_query, run_time_to_convert
from funnels.analytics.trends import INTERVALS, parse_trends_query, run_trends
from funnels.api.deps import require, run_query, services
from funnels.api.schemas import (
    ANALYTICS,
    AUTH,
    AnalyticsResponse,
    ConfiguredFunnels,
    PeopleResponse,
    TimeToConvertResponse,
    TrendsResponse,
    documented,
)
from funnels.store.events import EventStore
from funnels.store.groups import load_groups
from funnels.types import BREAKDOWN_COLUMNS

router = APIRouter(tags=["Query"])

# The funnel's parameters, shared by /v0/funnel and the endpoints under it (all read from the query string).
DateFrom = Annotated[str | None, Query(description="Inclusive start date (YYYY-MM-DD, UTC); alias dateFrom")]
DateTo = Annotated[
    str | None, Query(description="Inclusive end date for step 1 (YYYY-MM-DD, UTC); alias dateTo")
]
Steps = Annotated[
    str | None, Query(description="JSON array of 2–10 step specs {type, event, name, filters?}")
]
WindowSeconds = Annotated[str | None, Query(description="Conversion window in seconds (default 1209600)")]
FunnelType = Annotated[str | None, Query(json_schema_extra={"enum": ["closed", "open", "strict"]})]
Breakdown = Annotated[
    str | None,
    Query(
        description=f"What to break down by: a column ({', '.join(BREAKDOWN_COLUMNS)}), an event property, "
        "`properties.<key>`, or a property of the identified model, `person.<key>` (the value the person's "
        "latest identify set, however long ago; with `aggregate_by`, the group's own, from its identifies)",
        json_schema_extra={"examples": [*BREAKDOWN_COLUMNS[:2], "properties.plan", "person.plan"]},
    ),
]
BreakdownAttribution = Annotated[
    str | None,
    Query(
        description="Which of a user's values puts them in a group: `first_touch` (default: the earliest "
        "event with one), `last_touch` (the latest), or `step:K` (step K's event on the user's path); "
        "only `first_touch` with a `person.<key>` breakdown",
        json_schema_extra={"examples": ["first_touch", "last_touch", "step:2"]},
    ),
]
BreakdownTopN = Annotated[str | None, Query(description="Breakdown values kept (default 8)")]
Exclusions = Annotated[
    str | None,
    Query(
        description="Closed funnels: JSON array of up to 10 exclusion specs {type, event, filters?, from_step, "
        "to_step}; an event matching one after step from_step's event, up to step to_step's, disqualifies "
        "that conversion (docs/semantics.md)"
    ),
]
HoldConstant = Annotated[
    str | None,
    Query(
        description="Any funnel type: JSON array of 1–3 of properties.KEY or a standard column; every "
        "step of a conversion has the same value of each (docs/semantics.md)"
    ),
]
AggregateBy = Annotated[
    str | None,
    Query(
        description="A model the config declares (e.g. `organization`): count its instances instead of users; "
        "each user's events count for every instance its relationships make it a member of, and a user in none "
        "is not counted (docs/semantics.md)",
        json_schema_extra={"examples": ["organization"]},
    ),
]
Sample = Annotated[
    str | None,
    Query(
        description="A fraction of users in [0.0001, 1] (e.g. `0.1`): answer from that deterministic sample of "
        "users (persons when stitched, groups with `aggregate_by`), chosen by a 64-bit hash of each, for an "
        "answer in a fraction of the time. `users`, `total` and `dropped_off_users` are the sample's counts "
        "scaled by 1/sample; conversion rates and medians are the sample's own; each row adds "
        '`users_sampled` and 95% intervals, and the body `sample` (docs/semantics.md, "Sampling"). Absent '
        "or 1: the exact answer",
        json_schema_extra={"examples": ["0.1", "0.01"]},
    ),
]
Identity = Annotated[
    str | None,
    Query(
        description="`stitched` (default): users are persons, anonymous ids joined to the users they were "
        "identified or aliased as; `raw`: each stored user key is a user",
        json_schema_extra={"enum": ["stitched", "raw"]},
    ),
]


class Grouped(Protocol):
    """What the funnel endpoints parse: the funnel, with what else each analysis takes."""

    @property
    def funnel(self) -> FunnelQuery: ...


G = TypeVar("G", bound=Grouped)


async def run_grouped(
    request: Request, parse: Callable[[dict[str, Any]], G], run: Callable[[EventStore, G], dict[str, Any]]
) -> dict[str, Any]:
    """`run_query` for the funnel endpoints: `aggregate_by` must name a model the loaded config declares
    (its problem listed with the others in one 400), and its memberships are brought to the event store
    before the query runs (`funnels.store.groups`)."""
    svc = services(request)
    plan = svc.automation.plan
    models = plan.config.models if plan is not None else ()

    def parse_checked(params: dict[str, Any]) -> G:
        problem = aggregate_by_problem(params.get("aggregate_by"), models)
        errors = {"aggregate_by": problem} if problem else {}
        try:
            parsed = parse(params)
        except QueryValidationError as error:
            raise QueryValidationError(error.details | errors) from None
        if errors:
            raise QueryValidationError(errors)
        return parsed

    def run_loaded(store: EventStore, parsed: G) -> dict[str, Any]:
        if parsed.funnel.aggregate_by:
            load_groups(svc.state, store, parsed.funnel.aggregate_by)
        return run(store, parsed)

    return await run_query(request, parse_checked, run_loaded)


@router.get(
    "/v0/funnel",
    summary="Get multi-step conversion funnel",
    description=(
        "Per-step unique users, conversion from start and from the previous step, drop-off, and exact median "
        "time-to-convert. `funnel_type=closed` (default): ordered, distinct events, within `window_seconds` of "
        "the first step; `strict`: closed, and each step the user's very next event after the previous step (no other event of the user in between); `open`: each step fired at least once in any order, adds `dropped_off_users`. "
        "`breakdown` (a column, `properties.<key>` or `person.<key>`) groups users by their value, first touch unless "
        "`breakdown_attribution` says `last_touch` or `step:K` (top N + `Others`). Users are persons: an anonymous id "
        "and the user id it was identified or aliased as count as one (`identity=raw` counts each stored user "
        "key on its own). `compare=previous_period` adds `comparison`: the same funnel over the period of equal "
        "length just before `date_from`, each row's users and conversion from the start in both periods and "
        "the change (users, and conversion in percentage points). `sample=0.1` answers from a deterministic 10% of "
        "users, counts scaled, with the sampling error stated. See docs/semantics.md."
    ),
    dependencies=[require("query:read", local=True)],  # `funnels query` beside a running server
    **documented(AnalyticsResponse, ANALYTICS),
)
async def get_funnel(
    request: Request,
    date_from: DateFrom = None,
    date_to: DateTo = None,
    steps: Steps = None,
    window_seconds: WindowSeconds = None,
    funnel_type: FunnelType = None,
    breakdown: Breakdown = None,
    breakdown_top_n: BreakdownTopN = None,
    breakdown_attribution: BreakdownAttribution = None,
    identity: Identity = None,
    exclusions: Exclusions = None,
    hold_constant: HoldConstant = None,
    aggregate_by: AggregateBy = None,
    sample: Sample = None,
    compare: Annotated[
        str | None,
        Query(
            description="`previous_period`: also the same funnel over the days just before `date_from`, as "
            "many, and each row's change",
            json_schema_extra={"enum": list(COMPARISONS)},
        ),
    ] = None,
) -> dict[str, Any]:
    return await run_grouped(request, parse_compared_query, run_compared)


@router.get(
    "/v0/funnel/time_to_convert",
    summary="Time to convert between two steps of a funnel",
    description=(
        "The funnel's users who reached `to_step`, by the seconds between `from_step` and `to_step` on the path "
        "`/v0/funnel`'s medians measure: a histogram (automatic, roughly logarithmic bins; `bins=N`: N equal "
        "bins), the exact percentiles p25/p50/p75/p90/p99 (inclusive definition) and the mean, per breakdown "
        "group when `breakdown` is given. Every `/v0/funnel` parameter applies. See docs/semantics.md."
    ),
    dependencies=[require("query:read", local=True)],
    **documented(TimeToConvertResponse, ANALYTICS),
)
async def get_time_to_convert(
    request: Request,
    date_from: DateFrom = None,
    date_to: DateTo = None,
    steps: Steps = None,
    window_seconds: WindowSeconds = None,
    funnel_type: FunnelType = None,
    breakdown: Breakdown = None,
    breakdown_top_n: BreakdownTopN = None,
    breakdown_attribution: BreakdownAttribution = None,
    identity: Identity = None,
    exclusions: Exclusions = None,
    hold_constant: HoldConstant = None,
    aggregate_by: AggregateBy = None,
    from_step: Annotated[str | None, Query(description="The step measured from (1-based; default 1)")] = None,
    to_step: Annotated[
        str | None, Query(description="The step measured to (1-based, after from_step; default the last)")
    ] = None,
    bins: Annotated[
        str | None, Query(description="`auto` (default: roughly logarithmic) or 1–100 equal bins")
    ] = None,
) -> dict[str, Any]:
    return await run_grouped(request, parse_time_to_convert_query, run_time_to_convert)


@router.get(
    "/v0/funnel/trends",
    summary="A funnel's conversion over time",
    description=(
        "Per `interval` (`day`, the default, `week`: ISO weeks from Monday, or `month`; UTC, clipped to the date "
        "range): the users who entered the funnel in the period (the start of the path `/v0/funnel` measures), "
        "how many of them completed it within the window, and the rate; `window_closed` is false for periods "
        "whose users may still convert. Every `/v0/funnel` parameter applies; summed over periods, the counts "
        "are the funnel's step-1 and last-step users. See docs/semantics.md."
    ),
    dependencies=[require("query:read", local=True)],
    **documented(TrendsResponse, ANALYTICS),
)
async def get_trends(
    request: Request,
    date_from: DateFrom = None,
    date_to: DateTo = None,
    steps: Steps = None,
    window_seconds: WindowSeconds = None,
    funnel_type: FunnelType = None,
    breakdown: Breakdown = None,
    breakdown_top_n: BreakdownTopN = None,
    breakdown_attribution: BreakdownAttribution = None,
    identity: Identity = None,
    exclusions: Exclusions = None,
    hold_constant: HoldConstant = None,
    aggregate_by: AggregateBy = None,
    interval: Annotated[
        str | None,
        Query(description="Period length (default day)", json_schema_extra={"enum": list(INTERVALS)}),
    ] = None,
) -> dict[str, Any]:
    now_ms = services(request).clock.now_ms()
    return await run_grouped(
        request, parse_trends_query, lambda store, query: run_trends(store, query, now_ms)
    )


def csv_too(documentation: dict[str, Any]) -> dict[str, Any]:
    """A route's `responses` whose success may also be `text/csv` (`format=csv`)."""
    documentation["responses"][200]["content"] = {"text/csv": {"schema": {"type": "string"}}}
    return documentation


@router.get(
    "/v0/funnel/people",
    summary="The users behind a step of a funnel",
    description=(
        "The funnel's users at `step` (1-based, default 1) with `outcome`: `reached` (default: reached the step, "
        "the step's `users`), `converted` (reached the last step) or `dropped` (reached the step before and not "
        "this one; step 2 or later). Each with the furthest step reached, each step's time on the path "
        "`/v0/funnel` measures, and the breakdown value (as attributed). Ordered by a hash of the user key, `limit` "
        "per page (default 100, at most 10,000), `cursor` the previous page's `next_cursor`; `users` counts "
        "every page. `format=csv` answers text/csv (a header row; `limit` up to 1,000,000, by default that; "
        "the next page's cursor in `X-Next-Cursor`). With `breakdown`, `breakdown_value` keeps the users of one "
        "row (a value, `(none)` or `Others`). Every `/v0/funnel` parameter applies. "
        "See docs/semantics.md."
    ),
    dependencies=[require("query:read", local=True)],
    **csv_too(documented(PeopleResponse, ANALYTICS)),
)
async def get_people(
    request: Request,
    date_from: DateFrom = None,
    date_to: DateTo = None,
    steps: Steps = None,
    window_seconds: WindowSeconds = None,
    funnel_type: FunnelType = None,
    breakdown: Breakdown = None,
    breakdown_top_n: BreakdownTopN = None,
    breakdown_attribution: BreakdownAttribution = None,
    identity: Identity = None,
    exclusions: Exclusions = None,
    hold_constant: HoldConstant = None,
    aggregate_by: AggregateBy = None,
    step: Annotated[str | None, Query(description="The step (1-based; default 1)")] = None,
    outcome: Annotated[
        str | None,
        Query(
            description="Which users of the step (default reached)",
            json_schema_extra={"enum": list(OUTCOMES)},
        ),
    ] = None,
    limit: Annotated[str | None, Query(description="Users per page (default 100; csv: 1,000,000)")] = None,
    cursor: Annotated[str | None, Query(description="The previous page's `next_cursor`")] = None,
    breakdown_value: Annotated[
        str | None,
        Query(
            description="With `breakdown`: only the users of the row with this label (a value, (none), Others)"
        ),
    ] = None,
    format: Annotated[str | None, Query(json_schema_extra={"enum": ["json", "csv"]})] = None,
) -> Any:
    body = await run_grouped(request, parse_people_query, run_people)
    if format != "csv":
        return body
    filename = f"funnel-people-step{body['step']}-{body['outcome']}.csv"
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        "X-Total-Users": str(body["users"]),
    }
    if body["next_cursor"]:
        headers["X-Next-Cursor"] = body["next_cursor"]
    content = people_csv(body, breakdown=bool(breakdown))
    return Response(content, media_type="text/csv; charset=utf-8", headers=headers)


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
