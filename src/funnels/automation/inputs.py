"""Automation's input shapes: the bodies of `/api/v1/identify` and `/api/v1/events`, and what they become.

An `IdentifyBody` or `EventBody` validates one item (ids as strings, capped; properties' size; related ids
with their model) and turns into the `Signal` the ingest transaction applies. They live here, below both
the HTTP route (`api/automation.py`) and `funnels replay` / `funnels demo`, which validate their files'
events with the very shapes the server accepts.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from funnels.automation.engine import Signal
from funnels.automation.identity import MAX_IDENTIFY_PROPERTIES_BYTES, MAX_INSTANCE_IDS, Identify
from funnels.automation.runtime import Automation
from funnels.events import (
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    Event,
    RawTimestamp,
    id_text,
    new_event_id,
    parse_timestamp,
)
from funnels.types import JSONDict


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
