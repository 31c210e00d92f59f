"""The automation spec's ingestion: `POST /api/v1/identify` and `POST /api/v1/events` (alias `/api/v1/event`).

Each takes one object or an array of up to 1,000, all or nothing: an invalid item rejects the request with
per-field `details` (`body.0.ids`). 200 means every item is durable, together with what automation made of
it: one result per item saying which steps it satisfied and which actions it scheduled, or why nothing
happened (`unmatched`: no instance has these ids; `duplicate`: the message id was seen before).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from funnels.api.deps import default_event_ids, read_json, require, services
from funnels.api.errors import ApiError, validation_error
from funnels.api.events import MAX_BATCH, MAX_BODY_BYTES, pydantic_details, raise_if_refused
from funnels.api.schemas import WRITE, AutomationIngested, documented, json_items_body
from funnels.automation.engine import Signal
from funnels.automation.inputs import EventBody, IdentifyBody, unknown_models
from funnels.automation.runtime import Automation
from funnels.events import nesting_problem

router = APIRouter(tags=["Automation"])


def parse_items(
    payload: Any,
    shape: type[IdentifyBody | EventBody],
    automation: Automation,
    now: int,
    default_ids: list[str | None] | None = None,
) -> list[Signal]:
    items, prefix = (payload, "body.{}") if isinstance(payload, list) else ([payload], "body")
    if isinstance(payload, list) and not 1 <= len(payload) <= MAX_BATCH:
        raise validation_error({"body": f"must hold 1 to {MAX_BATCH} items; got {len(payload)}"})
    details: dict[str, str] = {}
    signals = []
    for index, item in enumerate(items):
        path = prefix.format(index)
        if too_deep := nesting_problem(item, path):
            details |= too_deep
            continue
        try:
            body = shape.model_validate(item)
        except ValidationError as error:
            details |= pydantic_details(error, path)
            continue
        if problems := unknown_models(automation, body, path):
            details |= problems
            continue
        signals.append(body.signal(now, default_ids[index] if default_ids else None))
    if details:
        raise validation_error(details, f"{len(details)} invalid field(s); nothing was stored")
    return signals


async def _ingest(request: Request, shape: type[IdentifyBody | EventBody]) -> dict[str, Any]:
    svc = services(request)
    payload = await read_json(request, MAX_BODY_BYTES)
    if not isinstance(payload, dict | list):
        raise ApiError("BAD_REQUEST", "The body must be a JSON object or an array of objects.")
    count = len(payload) if isinstance(payload, list) else 1
    signals = parse_items(
        payload, shape, svc.automation, svc.clock.now_ms(), default_event_ids(request, payload, count)
    )
    result = await svc.ingest_async(signals)
    if not isinstance(payload, list):
        raise_if_refused(result)
    return {
        "success": True,
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "results": [outcome.as_dict() for outcome in result.outcomes],
    }


@router.post(
    "/api/v1/identify",
    summary="Identify a model instance",
    description=(
        "`{model, ids, displayName?, properties?, childIds?+childModel?, parentIds?+parentModel?, timestamp?, "
        "messageId?}` or an array of them. Creates or updates the instance the ids name (a match on any id; new "
        "ids are added; properties merge, last write wins) and fires `onFunctionaryIdentify` for it."
    ),
    dependencies=[require("events:write")],
    openapi_extra=json_items_body(IdentifyBody, MAX_BATCH),
    **documented(AutomationIngested, (*WRITE, 413)),
)
async def post_identify(request: Request) -> dict[str, Any]:
    return await _ingest(request, IdentifyBody)


async def post_automation_events(request: Request) -> dict[str, Any]:
    return await _ingest(request, EventBody)


for _path in ("/api/v1/events", "/api/v1/event"):
    router.add_api_route(
        _path,
        post_automation_events,
        methods=["POST"],
        summary="Send events for model instances" + (" (alias)" if _path.endswith("event") else ""),
        description=(
            "`{name (or event), ids, model?, properties?, timestamp?, messageId?}` or an array. Without `model`, "
            "the first declared model with an instance holding one of the ids. An event for no known instance "
            "is kept for analytics and its result says `unmatched`."
        ),
        dependencies=[require("events:write")],
        openapi_extra=json_items_body(EventBody, MAX_BATCH),
        **documented(AutomationIngested, WRITE),
    )
