"""`POST /v0/events`: the native ingestion endpoint (one event or an array of up to 1,000)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError

from funnels.api.deps import default_event_ids, read_json, require, services
from funnels.api.errors import ApiError, validation_error
from funnels.api.schemas import WRITE, NativeIngested, documented, json_items_body
from funnels.automation.engine import Outcome
from funnels.events import Event, NativeEvent, nesting_problem
from funnels.services import IngestResult

router = APIRouter(tags=["Events"])

MAX_BATCH = 1_000
MAX_EVENT_BYTES = 32 * 1024
MAX_BODY_BYTES = 5 * 1024 * 1024


def pydantic_details(error: ValidationError, prefix: str) -> dict[str, str]:
    details = {}
    for item in error.errors():
        path = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        details[path] = item["msg"].removeprefix("Value error, ")
    return details


def refusal_details(outcome: Outcome, path: str, fields: dict[str, str] | None = None) -> dict[str, str]:
    """An identify refused for a cap (`automation.identity`), as `details` naming the field over it
    (`fields` renames it: Segment's identify sends its properties as `traits`)."""
    field = outcome.refused_field or "properties"
    return {f"{path}.{(fields or {}).get(field, field)}": outcome.reason or "over a cap"}


def refused_items(result: IngestResult, paths: list[str]) -> list[dict[str, Any]]:
    """`rejected` entries (`{index, details}`, as a Segment batch lists invalid messages) for the refused
    identifies of a batch; `paths[i]` is the body path of the i-th ingested item."""
    return [
        {"index": index, "details": refusal_details(outcome, paths[index])}
        for index, outcome in result.refused
    ]


def raise_if_refused(result: IngestResult, fields: dict[str, str] | None = None) -> None:
    """A request of one item whose identify was refused for a cap: 400 naming the field; nothing was stored."""
    for _index, outcome in result.refused:
        raise validation_error(refusal_details(outcome, "body", fields), outcome.reason)


def parse_native(payload: Any, received_ms: int, default_ids: list[str | None] | None = None) -> list[Event]:
    """Validate a body into events, all or nothing; every problem is reported with its path."""
    items, prefix = (payload, "body.{}") if isinstance(payload, list) else ([payload], "body")
    default_ids = default_ids or [None] * len(items)
    if isinstance(payload, list) and not 1 <= len(payload) <= MAX_BATCH:
        raise validation_error({"body": f"must hold 1 to {MAX_BATCH} events; got {len(payload)}"})
    details: dict[str, str] = {}
    events = []
    for index, item in enumerate(items):
        path = prefix.format(index)
        if too_deep := nesting_problem(item, path):  # before measuring: orjson writes 255 levels at most
            details |= too_deep
            continue
        if len(orjson.dumps(item)) > MAX_EVENT_BYTES:
            details[path] = f"the event is larger than the limit of {MAX_EVENT_BYTES // 1024} KB"
            continue
        try:
            events.append(NativeEvent.model_validate(item).to_event(received_ms, default_ids[index]))
        except ValidationError as error:
            details |= pydantic_details(error, path)
            if isinstance(item, dict) and not item.get("user_id") and not item.get("anonymous_id"):
                details.setdefault(path, "one of user_id or anonymous_id is required")
    if details:
        raise validation_error(details, f"{len(details)} invalid field(s); nothing was stored")
    return events


@router.post(
    "/v0/events",
    summary="Ingest events",
    description=(
        "One event object or a JSON array of up to 1,000. Fields: `type` (default `track`), `event`, `user_id` "
        "and/or `anonymous_id`, `timestamp` (ISO 8601 or epoch ms; default now), `message_id` (dedup key), "
        "`properties`, and the standard columns top-level or inside `context`. All or nothing: an invalid event "
        "rejects the request with per-field `details`. 200 means every event is durable."
    ),
    dependencies=[require("events:write")],
    openapi_extra=json_items_body(NativeEvent, MAX_BATCH),
    **documented(NativeIngested, WRITE),
)
async def post_events(request: Request) -> dict[str, Any]:
    svc = services(request)
    payload = await read_json(request, MAX_BODY_BYTES)
    if not isinstance(payload, dict | list):
        raise ApiError("BAD_REQUEST", "The body must be a JSON object or an array of objects.")
    count = len(payload) if isinstance(payload, list) else 1
    events = parse_native(payload, svc.clock.now_ms(), default_event_ids(request, payload, count))
    result = await svc.ingest_async(events)
    if not isinstance(payload, list):
        raise_if_refused(result)
    body: dict[str, Any] = {
        "success": True,
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "ids": [event.event_id for event in events],
    }
    if result.refused:
        body["rejected"] = refused_items(result, [f"body.{index}" for index in range(len(events))])
    return body
