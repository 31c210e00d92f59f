"""`GET /v0/lift` (scope `query:read`): each action with a holdout, its treated and held-out groups on its
goal, and the difference (`funnels.automation.lift`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from funnels.api.deps import require, services
from funnels.api.errors import ApiError
from funnels.api.schemas import AUTH, Lifts, documented
from funnels.automation.lift import action_lifts

router = APIRouter(tags=["Automation"], dependencies=[require("query:read")])


@router.get(
    "/v0/lift",
    summary="What each action with a holdout does: treated against held out, on its goal",
    description=(
        "For every action of the loaded config with `holdout`: its goal (a later step of its funnel within "
        "a window from the job's due time), the treated and the held-out jobs whose outcome is known "
        "(converted, or the window closed), their conversion rates, the absolute difference with Newcombe's "
        "95% interval, the relative lift with its 95% interval, the score test's two-sided p-value, and "
        "while that is 0.05 or more, the jobs each group would need to detect the observed difference with "
        "80% power. See docs/automation.md, Holdouts."
    ),
    **documented(Lifts, (400, *AUTH, 404)),
)
async def lift(
    request: Request,
    funnel: Annotated[str | None, Query(max_length=200, description="Only this funnel's actions")] = None,
) -> dict[str, Any]:
    svc = services(request)
    plan = svc.automation.plan
    if plan is None:
        raise ApiError("NOT_FOUND", "No automation config is loaded: no action has a holdout.")
    if funnel is not None and all(each.id != funnel for each in plan.config.funnels):
        raise ApiError("NOT_FOUND", f"No funnel {funnel!r} in the loaded config.")
    data = await run_in_threadpool(action_lifts, svc.state, plan.config, svc.clock.now_ms(), funnel)
    return {"data": data}
