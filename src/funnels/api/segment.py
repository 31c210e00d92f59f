"""Segment-compatible ingestion (`/v1/*`): point a Segment SDK's host at this server and change nothing else.

Endpoints: `POST /v1/batch` and one per message type (`/v1/track`, `/v1/page`, `/v1/identify`, `/v1/screen`,
`/v1/group`, `/v1/alias`), plus analytics.js's short paths `/v1/b`, `/v1/t`, `/v1/p`, `/v1/i`, `/v1/s`,
`/v1/g`, `/v1/a`. A single-message endpoint takes the type from its path; the body's `type` is ignored.
How a message becomes an event is documented in `funnels.ingest.segment`.

Auth (scope `events:write`): the API key from the `Authorization` header (HTTP Basic with the key as
username, as analytics-python and analytics.js send it, or `Bearer`), else the body's `writeKey`. A header
key wins over `writeKey`. With a header key the key is checked before the body is read.

Bodies are JSON whatever the Content-Type (analytics.js sends text/plain), optionally gzip/deflate encoded.
Limits are Segment's: 32 KB per message (a single-message body, or each message of a batch) and 500 KB per
batch request, measured after decoding. A request body over its limit is a 400 BAD_REQUEST naming the limit;
a batch message over 32 KB is listed in `rejected` like any other invalid message.

Errors: a single-message endpoint rejects an invalid message with 400 INVALID_VALIDATION_REQUEST and
per-field `details` (`body.userId`, …). A batch stores its valid messages and answers 200 with the invalid
ones listed in `rejected` (`{"index": i, "details": {"body.batch.i.field": problem}}`), because Segment
clients only look at the status code and would drop the whole batch on a 400. Only a batch that is not
`{"batch": [...]}` at all is a 400. A repeated `messageId` is a no-op, counted in `duplicates`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from funnels.api.deps import authorize, key_from_headers, read_json, services
from funnels.api.errors import ApiError, validation_error
from funnels.api.events import raise_if_refused, refusal_details
from funnels.api.schemas import WRITE, Ingested, SegmentBatchIngested, documented
from funnels.events import Event, nesting_problem
from funnels.ingest.segment import (
    MAX_BATCH_BYTES,
    MAX_MESSAGE_BYTES,
    SEGMENT_TYPES,
    SegmentValidationError,
    segment_event,
)
from funnels.services import IngestResult

router = APIRouter(tags=["Segment"])
TRAITS: Final[dict[str, str]] = {"properties": "traits"}  # what an identify's properties are called here

SCOPE: Final[str] = "events:write"
SHORT_PATHS: Final[dict[str, str]] = {
    "track": "t",
    "page": "p",
    "identify": "i",
    "screen": "s",
    "group": "g",
    "alias": "a",
}
JSON_OBJECT_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/plain": {
                "schema": {"type": "string", "description": "The same JSON, as analytics.js sends it"}
            },
        },
    }
}


async def read_authorized(request: Request, limit: int, what: str) -> dict[str, Any]:
    """The body as a JSON object, after checking the key (header, else the body's `writeKey`)."""
    header_key = key_from_headers(request)
    if header_key:
        authorize(request, SCOPE, key=header_key)
    payload = await read_json(request, limit, what)
    if not header_key:
        write_key = payload.get("writeKey") if isinstance(payload, dict) else None
        if not isinstance(write_key, str) or not write_key.strip():
            raise ApiError(
                "UNAUTHORIZED",
                "An API key is required: as the HTTP Basic username, as `writeKey` in the body, "
                "or as `Authorization: Bearer <key>`.",
            )
        authorize(request, SCOPE, key=write_key.strip())
    if not isinstance(payload, dict):
        raise ApiError("BAD_REQUEST", f"The {what} must be a JSON object.")
    return payload


async def store(request: Request, events: list[Event]) -> tuple[dict[str, Any], IngestResult]:
    """Make the events durable; the response fields every Segment endpoint shares, and the result."""
    result = await services(request).ingest_async(events)
    return {"success": True, "accepted": result.accepted, "duplicates": result.duplicates}, result


def single_message_endpoint(type_: str) -> Callable[[Request], Awaitable[dict[str, Any]]]:
    """The route handler for one message type (`/v1/track` and friends)."""

    async def endpoint(request: Request) -> dict[str, Any]:
        payload = await read_authorized(request, MAX_MESSAGE_BYTES, "message")
        try:
            event = segment_event(payload, services(request).clock.now_ms(), type_=type_)
        except SegmentValidationError as error:
            raise validation_error(error.details) from None
        body, result = await store(request, [event])
        raise_if_refused(result, TRAITS)  # an identify over a cap: nothing was stored
        return body

    endpoint.__name__ = f"segment_{type_}"
    return endpoint


for _type in SEGMENT_TYPES:
    for _path, _note in ((f"/v1/{_type}", ""), (f"/v1/{SHORT_PATHS[_type]}", " (analytics.js short path)")):
        router.add_api_route(
            _path,
            single_message_endpoint(_type),
            methods=["POST"],
            summary=f"Segment {_type}{_note}",
            description=(
                f"One Segment `{_type}` message (the body's `type` is ignored). Auth: the key as HTTP "
                "Basic username, `writeKey` in the body, or bearer. Invalid → 400 with per-field `details`; "
                "200 means the event is durable."
            ),
            openapi_extra=JSON_OBJECT_BODY,
            **documented(Ingested, WRITE),
        )


def map_batch(payload: dict[str, Any], received_ms: int) -> tuple[list[Event], list[dict[str, Any]]]:
    """A batch body's valid messages as events, and the invalid ones as `{index, details}`."""
    batch = payload.get("batch")
    if not isinstance(batch, list):
        raise validation_error({"body.batch": "must be an array of messages"})
    context = payload.get("context")
    if context is not None and not isinstance(context, dict):
        raise validation_error({"body.context": "must be an object"})
    # measured as each message's context, which it is merged under
    if context is not None and (too_deep := nesting_problem({"context": context}, "body")):
        raise validation_error(too_deep)
    events: list[Event] = []
    rejected: list[dict[str, Any]] = []
    for index, message in enumerate(batch):
        path = f"body.batch.{index}"
        if too_deep := nesting_problem(message, path):  # before measuring: orjson writes 255 levels at most
            rejected.append({"index": index, "details": too_deep})
            continue
        if len(orjson.dumps(message)) > MAX_MESSAGE_BYTES:
            limit = f"the message is larger than the limit of {MAX_MESSAGE_BYTES // 1024} KB"
            rejected.append({"index": index, "details": {path: limit}})
            continue
        try:
            sent_at = payload.get("sentAt")
            events.append(
                segment_event(message, received_ms, path=path, batch_sent_at=sent_at, batch_context=context)
            )
        except SegmentValidationError as error:
            rejected.append({"index": index, "details": error.details})
    return events, rejected


async def segment_batch(request: Request) -> dict[str, Any]:
    """`POST /v1/batch`: store the valid messages, list the invalid ones."""
    payload = await read_authorized(request, MAX_BATCH_BYTES, "batch")
    # Mapping parses user agents (CPU-bound, up to a few ms each): keep it off the event loop.
    events, rejected = await run_in_threadpool(map_batch, payload, services(request).clock.now_ms())
    body, result = await store(request, events)
    if result.refused:  # identifies over a cap: listed like invalid messages, by their index in the batch
        invalid = {item["index"] for item in rejected}
        positions = [index for index in range(len(payload["batch"])) if index not in invalid]
        rejected += [
            {"index": positions[i], "details": refusal_details(outcome, f"body.batch.{positions[i]}", TRAITS)}
            for i, outcome in result.refused
        ]
        rejected.sort(key=lambda item: int(item["index"]))
    return {**body, "rejected": rejected}


for _path in ("/v1/batch", "/v1/b"):
    router.add_api_route(
        _path,
        segment_batch,
        methods=["POST"],
        summary="Segment batch" + (" (analytics.js short path)" if _path == "/v1/b" else ""),
        description=(
            '`{"batch": [messages], "writeKey"?, "sentAt"?, "context"?}`, up to 500 KB, each message up to '
            "32 KB with its own `type`. Valid messages are stored even when others are not: the response "
            "lists the invalid ones in `rejected` with per-field `details`."
        ),
        openapi_extra=JSON_OBJECT_BODY,
        **documented(SegmentBatchIngested, WRITE),
    )
