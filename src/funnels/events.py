"""The one normalized `Event` every ingestion path produces, and the native event shape (`POST /v0/events`)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from funnels.types import MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, NAMED_BY_TYPE, STANDARD_COLUMNS, JSONDict

MAX_NAME_LENGTH = 200
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_ID_LENGTH = 400
# Objects and arrays nested below one event or message (its `properties` is the first level). orjson reads
# 1,024 levels and writes 255: past this limit a message is rejected at the door, not failed on later.
MAX_NESTING = 32


@dataclass(slots=True)
class Event:
    """An event as stored: one row of the event store."""

    event_id: str
    type: str
    event: str
    user_key: str
    ts_ms: int
    received_ms: int
    user_id: str = ""
    anonymous_id: str = ""
    properties: JSONDict = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)  # standard columns with a non-empty value

    def properties_json(self) -> str:
        return dumps_properties(self.properties)

    def to_log_record(self) -> bytes:
        """The event as written to the durable event log."""
        return orjson.dumps(
            {
                "event_id": self.event_id,
                "type": self.type,
                "event": self.event,
                "user_key": self.user_key,
                "user_id": self.user_id,
                "anonymous_id": self.anonymous_id,
                "ts_ms": self.ts_ms,
                "received_ms": self.received_ms,
                "properties": self.properties,
                "columns": self.columns,
            }
        )

    @classmethod
    def from_log_record(cls, raw: bytes) -> Event:
        return cls(**orjson.loads(raw))


def dumps_properties(properties: JSONDict) -> str:
    """Properties as stored: compact JSON (one serializer everywhere, so stored text is predictable)."""
    return orjson.dumps(properties, option=orjson.OPT_NON_STR_KEYS).decode()


def nesting_problem(message: Any, path: str) -> dict[str, str]:
    """`{path of the first object or array nested more than MAX_NESTING levels below message: problem}`,
    or {} when the message is shallow enough. Iterative, so any depth orjson parsed is walked safely.

    Every event passes here, so the common case is a walk over values alone (no keys, no paths); only a
    message over the limit is walked again to spell out where."""
    if not isinstance(message, _CONTAINERS) or _depth(message) <= MAX_NESTING:
        return {}
    # (value, depth, its key, its parent's entry): the path is spelled out only for the problem
    pending: list[tuple[Any, int, Any, Any]] = [(message, 0, None, None)]
    while pending:
        entry = pending.pop()
        value, depth = entry[0], entry[1]
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            if isinstance(child, _CONTAINERS):
                if depth + 1 > MAX_NESTING:
                    keys = [key]
                    while entry[3] is not None:
                        keys.append(entry[2])
                        entry = entry[3]
                    where = ".".join([path, *(str(part) for part in reversed(keys))])
                    return {where: f"nested more than {MAX_NESTING} levels deep"}
                pending.append((child, depth + 1, key, entry))
    raise AssertionError("_depth found a level that the path walk did not")  # pragma: no cover


_CONTAINERS = (dict, list)


def _depth(message: dict[str, Any] | list[Any]) -> int:
    """How many levels of objects and arrays lie below `message` (0: only scalars), stopping early once
    past MAX_NESTING."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(message, 0)]
    while pending:
        value, depth = pending.pop()
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, _CONTAINERS):
                if depth == MAX_NESTING:
                    return depth + 1
                deepest = max(deepest, depth + 1)
                pending.append((child, depth + 1))
    return deepest


def new_event_id() -> str:
    """An id for an event that came without one: 128 bits from the OS's CSPRNG, as hex (32 characters).
    Unpredictable on purpose: an id a client could guess, it could send first and have the real event
    dropped as its duplicate. `secrets.token_hex` is a third of `uuid.uuid4().hex`'s cost (1.2 vs 3.2 µs)."""
    return secrets.token_hex(16)


def parse_timestamp(value: Any) -> int:
    """ISO 8601 text or epoch milliseconds → epoch milliseconds (UTC). Naive ISO times are taken as UTC."""
    if isinstance(value, bool):
        raise ValueError("must be an ISO 8601 string or epoch milliseconds")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number of epoch milliseconds")
        ms = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            ms = int(text)
        else:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                raise ValueError("must be an ISO 8601 string or epoch milliseconds") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            # Exact integer arithmetic: `timestamp() * 1000` is 1 ms off for some times (float rounding).
            ms = (parsed - EPOCH) // timedelta(milliseconds=1) if parsed.year >= 1970 else -1
    else:
        raise ValueError("must be an ISO 8601 string or epoch milliseconds")
    if not MIN_TIMESTAMP_MS <= ms <= MAX_TIMESTAMP_MS:
        raise ValueError("must be between 1970-01-01 and 2199-12-31")
    return ms


def _check_timestamp(value: Any) -> Any:
    if value is not None:
        parse_timestamp(value)
    return value


# A request's raw `timestamp`, checked where it is read (so errors name the field) and parsed when used.
RawTimestamp = Annotated[str | int | float | None, BeforeValidator(_check_timestamp)]


def column_text(value: Any) -> str | None:
    """A standard column's stored text: strings as they are, numbers and booleans spelled out, else None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError("must be a string, number or boolean")


def id_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a string or a number")
    text = str(value)
    if len(text) > MAX_ID_LENGTH:
        raise ValueError(f"must be at most {MAX_ID_LENGTH} characters")
    return text


class NativeEvent(BaseModel):
    """The body of `POST /v0/events` (one element of it, when the body is an array)."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(default="track", min_length=1, max_length=MAX_NAME_LENGTH)
    event: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)
    user_id: str | int | None = None
    anonymous_id: str | int | None = None
    timestamp: RawTimestamp = None
    message_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_LENGTH)
    properties: JSONDict = Field(default_factory=dict)
    context: JSONDict = Field(default_factory=dict)
    columns: dict[str, str] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _collect_columns(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("an event must be a JSON object")
        columns: dict[str, str] = {}
        context = data.get("context")
        for source in (context if isinstance(context, dict) else {}, data):
            for name in STANDARD_COLUMNS:
                if name in source:
                    text = column_text(source[name])
                    if text:
                        columns[name] = text
        return {**data, "columns": columns}

    @field_validator("user_id", "anonymous_id", mode="before")
    @classmethod
    def _id(cls, value: Any) -> str:
        return id_text(value)

    @model_validator(mode="after")
    def _check(self) -> NativeEvent:
        if not self.user_id and not self.anonymous_id:
            raise ValueError("one of user_id or anonymous_id is required")
        if self.event is None and self.type not in NAMED_BY_TYPE:
            raise ValueError(f"event (the event name) is required for type {self.type!r}")
        return self

    def to_event(self, received_ms: int, default_id: str | None = None) -> Event:
        user_id = str(self.user_id or "")
        anonymous_id = str(self.anonymous_id or "")
        return Event(
            event_id=self.message_id or default_id or new_event_id(),
            type=self.type,
            event=self.event or self.type,
            user_key=user_id or anonymous_id,
            user_id=user_id,
            anonymous_id=anonymous_id,
            ts_ms=parse_timestamp(self.timestamp) if self.timestamp is not None else received_ms,
            received_ms=received_ms,
            properties=self.properties,
            columns=self.columns,
        )
