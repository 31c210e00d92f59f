"""The API's response shapes as pydantic models, for the OpenAPI document: every endpoint's success body and
the error envelope on every error status it can answer.

How it is used: a route's decorator takes `**documented(Model, errors)`, which puts the model under the
success status and `ErrorEnvelope` under each error status in `responses`. The routes still return plain
dicts, serialized as before (FastAPI's pydantic JSON path for `dict[str, Any]`), so a response's bytes do
not depend on these models and the ingest routes pay nothing for them; `tests/api/test_contract.py` runs
schemathesis against the document to check that every response conforms. The models leave out
`additionalProperties: false` on purpose: a field added to a response is not a breaking change.
`install_openapi` drops FastAPI's default 422 response (request validation errors are answered 400 in the
envelope, by `api/errors.py`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from funnels.api.errors import ERROR_CODES
from funnels.automation.deliveries import STATUSES

# What each error status means on the routes that document it (the codes themselves: `ERROR_CODES`).
ERROR_STATUSES: dict[int, str] = {
    400: "Invalid parameters or body (`INVALID_VALIDATION_REQUEST` with `details`), an unreadable body "
    "(`BAD_REQUEST`), or an invalid `Idempotency-Key`",
    401: "No API key, or an unknown or revoked one (`UNAUTHORIZED`)",
    403: "The key lacks the endpoint's scope (`FORBIDDEN`), a session request lacks its CSRF token, or (on "
    "`/v1/*`) the request's `Origin` is not allowed",
    404: "No such resource (`NOT_FOUND`)",
    409: "Conflicts with the current state (`CONFLICT`), or the same `Idempotency-Key` is in progress",
    413: "Over a size limit",
    429: "Too many requests or bytes in flight; retry later",
    503: "A store cannot be written right now (`SERVICE_UNAVAILABLE`); retry later. On analytics endpoints also "
    "a query past the server's time limit (`details.reason` `query_timeout`, `details.limit_seconds`)",
}
# The error statuses of families of routes (each route's own are in its decorator).
AUTH = (401, 403)
WRITE = (400, 401, 403, 409, 429, 503)  # POST: idempotency keys, bytes in flight, a store that cannot write
ANALYTICS = (400, 401, 403, 503)  # a query: its parameters, and a query past the time limit (or a layout)


class ErrorDetail(BaseModel):
    code: Annotated[
        str,
        Field(
            description="Branch on this; the list is at `/errors`",
            json_schema_extra={"enum": list(ERROR_CODES)},
        ),
    ]
    message: str
    doc_url: str = Field(description="Where the code is explained")
    param: str | None = Field(None, description="The parameter or field at fault, when there is one")
    details: dict[str, Any] | None = Field(None, description="Each field at fault and its problem")


class ErrorEnvelope(BaseModel):
    """Every non-2xx response: `{error: {code, message, doc_url, param?, details?}}`."""

    error: ErrorDetail


def documented(model: type[BaseModel], errors: Iterable[int], status: int = 200) -> dict[str, Any]:
    """A route decorator's `responses`: `model` on `status`, the envelope on each of `errors`."""
    responses: dict[int | str, dict[str, Any]] = {status: {"model": model}}
    for code in sorted(set(errors)):
        responses[code] = {"model": ErrorEnvelope, "description": ERROR_STATUSES[code]}
    return {"responses": responses}


def install_openapi(app: FastAPI) -> None:
    """The app's OpenAPI document without FastAPI's 422 (never answered) and with each success schema
    exactly the declared model (FastAPI merges it into the `dict[str, Any]` schema of the return type)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                responses.pop("422", None)
                for response in responses.values():
                    body = response.get("content", {}).get("application/json", {}).get("schema", {})
                    if "$ref" in body:
                        for key in [key for key in body if key != "$ref"]:
                            del body[key]
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# --- ingestion ---


class Ingested(BaseModel):
    success: Literal[True]
    accepted: int = Field(description="Events new to the store")
    duplicates: int = Field(description="Events whose message id was seen before (no-ops)")


class NativeIngested(Ingested):
    ids: list[str] = Field(description="Each event's id, in the order sent")


class Rejected(BaseModel):
    index: int
    details: dict[str, str]


class SegmentBatchIngested(Ingested):
    rejected: list[Rejected] = Field(description="The invalid messages (the valid ones were stored)")


class SegmentioSettings(BaseModel):
    api_key: str = Field(
        alias="apiKey", description="The write key of the request's path: analytics.js sends events with it"
    )
    api_host: str = Field(
        alias="apiHost", description="Where analytics.js sends events: this server's host and `/v1`"
    )
    protocol: Literal["http", "https"]


class SegmentIntegrations(BaseModel):
    segment_io: SegmentioSettings = Field(alias="Segment.io")


class SegmentMetrics(BaseModel):
    sample_rate: float = Field(
        alias="sampleRate", description="0: analytics.js collects and sends no usage metrics"
    )
    host: str = Field(description="Where it would send them (`POST /v1/m` here)")


class SegmentSettings(BaseModel):
    """What analytics.js reads from Segment's CDN, pointing it at this server instead."""

    integrations: SegmentIntegrations
    metrics: SegmentMetrics
    remote_plugins: list[Any] = Field(alias="remotePlugins")


class InstanceRef(BaseModel):
    model: str
    id: str | None


class SatisfiedStep(BaseModel):
    funnel: str
    step: int
    event: str


class ScheduledAction(BaseModel):
    id: int
    funnel: str
    step: int
    action: int
    type: str
    due_ms: int


class Outcome(BaseModel):
    id: str = Field(description="The event's id")
    event: str
    status: str = Field(description="processed, duplicate, unmatched, conflict or off")
    instance: InstanceRef | None = None
    satisfied: list[SatisfiedStep]
    scheduled: list[ScheduledAction]
    cancelled: list[int] = Field(default_factory=list, description="Action jobs this event cancelled")
    reason: str | None = None


class AutomationIngested(Ingested):
    results: list[Outcome] = Field(description="One per item, in the order sent")


# --- analytics ---


class Statistics(BaseModel):
    elapsed: float
    rows_read: int
    bytes_read: int


class Column(BaseModel):
    name: str
    type: str


class FunnelRow(BaseModel):
    step: int
    event: str
    breakdown: str | None = Field(None, description="With `breakdown` only")
    users: int
    total: int
    conversion_from_start: float | None
    conversion_from_previous: float | None
    dropoff_from_previous: float | None
    dropped_off_users: int | None = Field(None, description="Open funnels only")
    median_seconds_from_previous: float | None
    median_seconds_from_start: float | None
    users_sampled: int | None = Field(
        None, description="With `sample` only: the users of the sample (`users` is this scaled by 1/sample)"
    )
    users_interval: list[int] | None = Field(
        None, description="With `sample` only: a 95% interval [low, high] for `users`"
    )
    conversion_from_start_interval: list[float] | None = Field(
        None, description="With `sample` only: a 95% interval [low, high] for `conversion_from_start`"
    )
    conversion_from_previous_interval: list[float] | None = Field(
        None, description="With `sample` only: a 95% interval for `conversion_from_previous` (null at step 1)"
    )


class FunnelSample(BaseModel):
    """What a sampled answer (`sample=`) was computed from (docs/semantics.md, "Sampling")."""

    rate: float = Field(description="The fraction of users in the sample")
    unit: Literal["user_key", "person", "group"] = Field(description="What was sampled, whole")
    users_sampled: int = Field(description="The users of the sample who entered the funnel")
    scale: float = Field(description="1/rate: what the sample's counts were multiplied by")
    confidence: float = Field(description="The intervals' confidence level")
    method: str


class ChangeRow(BaseModel):
    step: int
    event: str
    breakdown: str | None = Field(None, description="With `breakdown` only")
    users: int
    previous_users: int | None = Field(description="null: the value is not among the previous period's rows")
    users_change: int | None
    users_change_ratio: float | None = Field(description="The change over the previous users")
    conversion_from_start: float | None
    previous_conversion_from_start: float | None
    conversion_from_start_change_points: float | None = Field(description="In percentage points")


class Comparison(BaseModel):
    compare: Literal["previous_period"]
    date_from: str = Field(description="The previous period's first day")
    date_to: str = Field(description="The previous period's last day (the day before `date_from`)")
    data: list[ChangeRow] = Field(description="One per row of `data`, in its order")
    rows: int
    statistics: Statistics = Field(description="The previous period's query")


class AnalyticsResponse(BaseModel):
    """The spec's analytics shape (ClickHouse's JSON output format)."""

    meta: list[Column]
    data: list[FunnelRow]
    rows: int
    rows_before_limit_at_least: int
    statistics: Statistics
    comparison: Comparison | None = Field(None, description="With `compare` only")
    sample: FunnelSample | None = Field(None, description="With `sample` only")


class HistogramBin(BaseModel):
    from_seconds: float | None = Field(description="Inclusive lower edge; null: open-ended below")
    to_seconds: float | None = Field(description="Exclusive upper edge; null: open-ended above")
    users: int


class TimeToConvertGroup(BaseModel):
    breakdown: str | None = Field(None, description="With `breakdown` only")
    users: int = Field(description="Users who reached `to_step` (each measured once)")
    mean_seconds: float | None
    p25_seconds: float | None
    p50_seconds: float | None
    p75_seconds: float | None
    p90_seconds: float | None
    p99_seconds: float | None
    histogram: list[HistogramBin] = Field(description="The same bins in every group")


class TimeToConvertResponse(BaseModel):
    from_step: int
    to_step: int
    from_event: str
    to_event: str
    bins: int | str = Field(description="`auto`, or the number of equal bins asked for")
    data: list[TimeToConvertGroup]
    rows: int
    statistics: Statistics


class TrendsRow(BaseModel):
    period: str = Field(description="The period's first day (YYYY-MM-DD), possibly before date_from")
    date_from: str = Field(description="The period's first day within the range")
    date_to: str = Field(description="The period's last day within the range")
    breakdown: str | None = Field(None, description="With `breakdown` only")
    entered: int = Field(description="Users whose measured path starts in the period")
    converted: int = Field(description="Of those, users who completed the funnel within the window")
    conversion: float | None = Field(description="converted / entered; null when nobody entered")
    window_closed: bool = Field(description="False while users who entered in the period may still convert")


class TrendsResponse(BaseModel):
    interval: str
    data: list[TrendsRow]
    rows: int
    statistics: Statistics


class PeopleRow(BaseModel):
    user_key: str = Field(
        description="The user key; stitched, the person's key: the user id its keys link to, or the key itself"
    )
    last_step: int = Field(description="The furthest step the user reached")
    breakdown: str | None = Field(None, description="With `breakdown` only: the first-touch value, or (none)")
    times: list[str | None] = Field(
        description="Each step's time on the path /v0/funnel measures (ISO 8601, UTC); null past last_step"
    )


class PeopleResponse(BaseModel):
    step: int
    event: str = Field(description="The step's name")
    outcome: str
    breakdown_value: str | None = Field(None, description="With `breakdown_value` only")
    steps: list[str] = Field(description="The funnel's step names, in the order of each row's `times`")
    users: int = Field(description="Every user behind the step with this outcome, on all pages")
    data: list[PeopleRow]
    rows: int
    next_cursor: str | None = Field(description="The `cursor` of the next page; null on the last page")
    statistics: Statistics


class FunnelStep(BaseModel):
    type: str
    event: str
    name: str | None = None


class ConfiguredStep(BaseModel):
    event: str
    step: FunnelStep


class ConfiguredFunnel(BaseModel):
    id: str
    for_models: list[str] = Field(alias="forModels")
    steps: list[ConfiguredStep]
    query: dict[str, str] | None = Field(description="The `/v0/funnel` parameters, or null (see `reason`)")
    reason: str | None


class ConfiguredFunnels(BaseModel):
    data: list[ConfiguredFunnel]
    rows: int


class SeenType(BaseModel):
    type: str
    count: int
    names: int
    last_seen: str | None
    step: FunnelStep


class SeenName(BaseModel):
    type: str
    event: str
    count: int
    last_seen: str | None
    step: FunnelStep | None


class EventNames(BaseModel):
    types: list[SeenType]
    data: list[SeenName]
    rows: int
    has_more: bool
    statistics: Statistics


class SeenUser(BaseModel):
    user_key: str
    events: int
    last_seen: str
    identified: bool = Field(description="Whether any of its events carried a user id")


class EventUsers(BaseModel):
    data: list[SeenUser]
    rows: int
    next_cursor: str | None = Field(description="Pass back as `cursor` for the next page; null on the last")
    statistics: Statistics


class ValueCount(BaseModel):
    value: str
    count: int


class Operand(BaseModel):
    operand: str
    count: int
    numeric: int
    values: list[ValueCount]


class Sample(BaseModel):
    events: int
    limit: int
    complete: bool


class StepRef(BaseModel):
    type: str
    event: str


class EventProperties(BaseModel):
    step: StepRef
    columns: list[Operand]
    properties: list[Operand]
    has_more: bool
    sample: Sample
    statistics: Statistics


class EventValues(BaseModel):
    step: StepRef
    operand: str
    column: bool
    data: list[ValueCount]
    rows: int
    has_more: bool
    sample: Sample
    statistics: Statistics


# --- import ---


class SkippedRow(BaseModel):
    file: str = Field(description="The `name` the file was sent under")
    line: int = Field(
        description="1-based: the line (NDJSON, CSV; the CSV header is line 1) or row (Parquet)"
    )
    unit: Literal["line", "row"]
    message: str


class Imported(BaseModel):
    imported: int = Field(description="Rows stored")
    skipped: int = Field(description="Bad rows, not stored (exact)")
    seconds: float
    errors: list[SkippedRow] = Field(description="The first 1,000 skipped rows, in file order")


# --- automation admin ---


class Attempt(BaseModel):
    attempt: int
    at: str | None
    outcome: str
    status_code: int | None
    error: str | None
    response: Any


class ActionJob(BaseModel):
    id: int
    status: str = Field(
        description=(
            "scheduled, sending, sent, failed, dead, cancelled; held_out (in the action's holdout), capped "
            "(over a frequency cap) and suppressed (the recipient unsubscribed), never sent; unknown (an "
            "at-most-once send cut off by a crash)"
        ),
        json_schema_extra={"enum": list(STATUSES)},
    )
    funnel: str
    step: int
    action: int
    type: str
    instance: InstanceRef
    event: str | None
    event_id: str | None
    idempotency_key: str
    due_at: str | None
    next_attempt_at: str | None
    attempts: int
    last_error: str | None
    rendered: Any = Field(description="The rendered args of the last attempt (secrets redacted), or null")
    created_at: str | None
    updated_at: str | None
    sent_at: str | None
    attempt_log: list[Attempt]


class ActionJobs(BaseModel):
    data: list[ActionJob]
    total: int
    page: int
    size: int
    has_more: bool


class ActionStatusCounts(BaseModel):
    funnel: str
    step: int
    action: int
    type: str
    statuses: dict[str, int] = Field(
        description=f"The action's jobs by status: every status of the delivery log ({', '.join(STATUSES)}), 0 "
        "where none",
        json_schema_extra={"propertyNames": {"enum": list(STATUSES)}, "required": list(STATUSES)},
    )
    total: int


class ActionSummary(BaseModel):
    data: list[ActionStatusCounts]


class Related(BaseModel):
    model: str
    id: str
    exists: bool


class ProgressStep(BaseModel):
    step: int
    event: str
    satisfied_at: str | None
    event_id: str | None
    event_at: str | None


class HoldoutGroup(BaseModel):
    step: int
    action: int
    type: str
    holdout_percent: float
    group: Literal["held_out", "treated"]


class Progress(BaseModel):
    id: str
    level: int
    completed: bool
    steps: list[ProgressStep]
    holdouts: list[HoldoutGroup]


class TimelineEvent(BaseModel):
    kind: Literal["event"]
    at: str | None
    id: str
    type: str
    event: str
    properties: dict[str, Any]


class TimelineAction(ActionJob):
    kind: Literal["action"]
    at: str | None


class Timeline(BaseModel):
    items: list[Annotated[TimelineEvent | TimelineAction, Field(discriminator="kind")]]
    next_before: str | None = Field(description="`before` for the next page, or null on the last")


class ListedInstance(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    model: str
    id: str = Field(description="The primary id: the first the instance was identified with")
    ids: list[str] = Field(description="Its first ids, in the order added (at most 5)")
    id_count: int = Field(description="How many ids it has")
    display_name: str | None = Field(alias="displayName")
    created_at: str | None
    updated_at: str | None


class ModelInstances(BaseModel):
    data: list[ListedInstance]
    next_cursor: str | None = Field(description="Pass back as `cursor` for the next page; null on the last")


class OptOut(BaseModel):
    topic: str
    at: str | None
    source: str  # api, import, link


class Subscriptions(BaseModel):
    unsubscribed: list[OptOut]


class ModelInstance(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    model: str
    id: str
    ids: list[str]
    linked_ids: list[str] = Field(
        description="Anonymous or aliased ids that events link to one of `ids` (identity stitching): their "
        "events are in the timeline, and the instance is found by them"
    )
    display_name: str | None = Field(alias="displayName")
    properties: dict[str, Any]
    created_at: str | None
    updated_at: str | None
    children: list[Related]
    parents: list[Related]
    funnels: list[Progress]
    unsubscribed: list[OptOut] = Field(
        description="What the instance unsubscribed from: `email` or `sms` (the whole channel) or "
        "`email:<topic>`; its emails and SMS there end `suppressed` (transactional actions excepted)"
    )
    timeline: Timeline


class InstanceId(BaseModel):
    model: str
    id: str = Field(description="The instance's primary id")


class UserPerson(BaseModel):
    user_key: str
    person: str = Field(
        description="The key its events count under in stitched funnels: the user it links to, or itself"
    )
    keys: list[str] = Field(description="The person's keys: `person` first, then every id linked to it")
    instances: list[InstanceId] = Field(description="Model instances any of `keys` names")
    timeline: Timeline = Field(
        description="The events of all `keys`, newest first (no actions: see instances)"
    )


class ConfiguredAction(BaseModel):
    type: str
    delay_seconds: float | None
    unless: list[str]


class ConfigStep(BaseModel):
    event: str
    actions: list[ConfiguredAction]


class ConfigFunnel(BaseModel):
    id: str
    for_models: list[str] = Field(alias="forModels")
    steps: list[ConfigStep]


class LoadedConfig(BaseModel):
    path: str | None
    loaded_at: str | None
    valid: bool
    errors: list[str]
    models: list[str]
    funnels: list[ConfigFunnel]


# --- lift (holdouts) ---


class LiftGoal(BaseModel):
    step: int
    event: str
    within_seconds: int


class LiftGroup(BaseModel):
    jobs: int  # decided: converted, or the goal's window closed without
    converted: int
    rate: float | None
    pending: int  # not converted, window still open: not in `jobs` or `rate`


class LiftNeeded(BaseModel):
    treated: int
    holdout: int


class LiftComparison(BaseModel):
    absolute: float | None
    absolute_ci: list[float] | None
    relative: float | None
    relative_ci: list[float] | None
    p_value: float | None
    significant: bool
    needed_per_group: LiftNeeded | None


class ActionLift(BaseModel):
    funnel: str
    step: int
    event: str
    action: int
    type: str
    holdout_percent: float
    goal: LiftGoal | None
    treated: LiftGroup | None
    holdout: LiftGroup | None
    lift: LiftComparison | None


class Lifts(BaseModel):
    data: list[ActionLift]


# --- saved funnels ---


class SavedFunnelListed(BaseModel):
    id: str = Field(description="Stable: never changes, names the funnel in links")
    name: str
    version: int = Field(description="1 when saved, then one more per update")
    created: str | None
    updated: str | None
    link: str = Field(description="The dashboard's Funnels page opening it")


class SavedFunnelView(SavedFunnelListed):
    parameters: dict[str, str] = Field(description="`/v0/funnel` parameters, as a query string carries them")


class SavedFunnelList(BaseModel):
    data: list[SavedFunnelListed]
    rows: int


# --- keys, health ---


class KeyView(BaseModel):
    id: str
    name: str
    scopes: list[str]
    created: str | None
    revoked: bool
    revoked_at: str | None


class CreatedKey(KeyView):
    key: str = Field(description="The secret: shown in this response only")


class KeyList(BaseModel):
    data: list[KeyView]


class Health(BaseModel):
    status: str
    state: str
    events: str
    shipper_backlog: str
    shipper: str = Field(
        description="who ships the event log into the event store: `this node`, or (a shared ClickHouse server) "
        "the node holding the shipping lease"
    )


def json_items_body(item: type[BaseModel], max_items: int) -> dict[str, Any]:
    """A route's `openapi_extra` for a body read by hand: one `item` object or an array of them."""
    schema = item.model_json_schema(by_alias=True)
    either = {"anyOf": [schema, {"type": "array", "items": schema, "minItems": 1, "maxItems": max_items}]}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": either}}}}
