"""The automation spec's ingestion: `POST /api/v1/identify` and `POST /api/v1/events` (alias `/api/v1/event`).

Each takes one object or an array of up to 1,000, all or nothing: an invalid item rejects the request with
per-field `details` (`body.0.ids`). 200 means every item is durable, together with what automation made of
it: one result per item saying which steps it satisfied and which actions it scheduled, or why nothing
happened (`unmatched`: no instance has these ids; `duplicate`: the message id was seen before).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from funnels.api.deps import default_event_ids, read_json, require, services
from funnels.api.errors import ApiError, validation_error
from funnels.api.events import MAX_BATCH, MAX_BODY_BYTES, pydantic_details, raise_if_refused
from funnels.api.schemas import WRITE, AutomationIngested, documented, json_items_body
from funnels.automation.engine import Signal
from funnels.automation.identity import MAX_IDENTIFY_PROPERTIES_BYTES, MAX_INSTANCE_IDS, Identify
from funnels.automation.runtime import Automation
from funnels.events import (
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    Event,
    RawTimestamp,
    id_text,
    nesting_problem,
    new_event_id,
    parse_timestamp,
)
from funnels.types import JSONDict

router = APIRouter(tags=["Automation"])


def _ids(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError("must name at least one id")
    texts = [id_text(item) for item in values]
    if any(text == "" for text in texts):
        raise ValueError("ids must be non-empty strings or numbers")
    return list(dict.fromkeys(texts))


def _capped(ids: list[str]) -> list[str]:
    if len(ids) > MAX_INSTANCE_IDS:
        raise ValueError(
            f"at most {MAX_INSTANCE_IDS} ids (an instance holds at most that many); got {len(ids)}"
        )
    return ids


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    timestamp: RawTimestamp = None
    message_id: str | None = Field(default=None, alias="messageId", min_length=1, max_length=MAX_ID_LENGTH)
    properties: JSONDict = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _object(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("must be a JSON object")
        if "message_id" in data and "messageId" not in data:
            data = {**data, "messageId": data["message_id"]}
        return data

    def event(self, type_: str, name: str, user: str, received_ms: int, default_id: str | None) -> Event:
        return Event(
            event_id=self.message_id or default_id or new_event_id(),
            type=type_,
            event=name,
            user_key=user,
            user_id=user,
            ts_ms=parse_timestamp(self.timestamp) if self.timestamp is not None else received_ms,
            received_ms=received_ms,
            properties=self.properties,
        )


class IdentifyBody(_Body):
    model: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    ids: list[str]
    display_name: str | None = Field(default=None, alias="displayName", max_length=1_000)
    child_ids: list[str] = Field(default_factory=list, alias="childIds")
    child_model: str | None = Field(default=None, alias="childModel")
    parent_ids: list[str] = Field(default_factory=list, alias="parentIds")
    parent_model: str | None = Field(default=None, alias="parentModel")

    @field_validator("ids", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> list[str]:
        return _capped(_ids(value))

    @field_validator("child_ids", "parent_ids", mode="before")
    @classmethod
    def _related_ids(cls, value: Any) -> list[str]:
        return [] if value is None or value == [] else _capped(_ids(value))

    @field_validator("properties")
    @classmethod
    def _properties_size(cls, value: JSONDict) -> JSONDict:
        size = len(orjson.dumps(value))
        if size > MAX_IDENTIFY_PROPERTIES_BYTES:
            raise ValueError(
                f"properties of one identify: {size:,} bytes as JSON, over the limit of "
                f"{MAX_IDENTIFY_PROPERTIES_BYTES:,} bytes"
            )
        return value

    @model_validator(mode="after")
    def _pairs(self) -> IdentifyBody:
        if self.child_ids and not self.child_model:
            raise ValueError("childIds needs childModel")
        if self.parent_ids and not self.parent_model:
            raise ValueError("parentIds needs parentModel")
        return self

    def signal(self, received_ms: int, default_id: str | None = None) -> Signal:
        identify = Identify(
            model=self.model,
            ids=tuple(self.ids),
            display_name=self.display_name,
            properties=self.properties,
            child_model=self.child_model,
            child_ids=tuple(self.child_ids),
            parent_model=self.parent_model,
            parent_ids=tuple(self.parent_ids),
        )
        event = self.event("identify", "identify", self.ids[0], received_ms, default_id)
        return Signal(event, model=self.model, ids=tuple(self.ids), identify=identify, explicit=True)


class EventBody(_Body):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    ids: list[str]
    model: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)

    @model_validator(mode="before")
    @classmethod
    def _name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and "event" in data:
            data = {**data, "name": data["event"]}
        return data

    @field_validator("ids", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> list[str]:
        return _ids(value)

    def signal(self, received_ms: int, default_id: str | None = None) -> Signal:
        event = self.event("track", self.name, self.ids[0], received_ms, default_id)
        return Signal(event, model=self.model, ids=tuple(self.ids), explicit=True)


def unknown_models(automation: Automation, body: IdentifyBody | EventBody, path: str) -> dict[str, str]:
    """Problems with model names: every model named must be declared in the config."""
    plan = automation.plan
    declared = plan.config.models if plan else ()
    hint = f"declared: {', '.join(declared)}" if declared else "no config is loaded: start with --config"
    named = [("model", body.model)]
    if isinstance(body, IdentifyBody):
        named += [("childModel", body.child_model), ("parentModel", body.parent_model)]
    return {
        f"{path}.{field}": f"unknown model {name!r} ({hint})"
        for field, name in named
        if name and name not in declared
    }


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
