"""Automation's admin endpoints (scope `admin`): the delivery log, retries, one instance, the config."""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from funnels.api.deps import read_json, require, services
from funnels.api.errors import ApiError, validation_error
from funnels.api.events import pydantic_details
from funnels.api.schemas import (
    AUTH,
    WRITE,
    ActionJob,
    ActionJobs,
    ActionSummary,
    LoadedConfig,
    ModelInstance,
    ModelInstances,
    Subscriptions,
    UserPerson,
    documented,
)
from funnels.automation.deliveries import STATUSES, action_summary, get_job, iso, list_jobs
from funnels.automation.people import (
    Cursor,
    describe,
    describe_user,
    find,
    opted_out,
    parse_list_cursor,
    search,
    set_subscribed,
)
from funnels.config import SUBSCRIPTION_TOPIC, ConfigInvalid
from funnels.store import outbox
from funnels.store.outbox import JobFilter

router = APIRouter(tags=["Automation admin"], dependencies=[require("admin")])

MAX_INT64 = 2**63 - 1  # SQLite's largest integer: a job id, or a page's offset, past it is a 400, not a 500
MAX_PAGE_SIZE = 200
MAX_CHANGE_BYTES = 4_096  # a subscription change is one small object
JobId = Annotated[int, Path(ge=1, le=MAX_INT64, description="An action job's id")]
_reload_lock = threading.Lock()


@router.get(
    "/v0/actions",
    summary="The delivery log: action jobs, newest first",
    **documented(ActionJobs, (400, *AUTH)),
)
async def actions(
    request: Request,
    status: Annotated[
        str | None,
        Query(description=f"One of {', '.join(STATUSES)}", json_schema_extra={"enum": list(STATUSES)}),
    ] = None,
    funnel: Annotated[str | None, Query(description="A funnel id")] = None,
    model: Annotated[str | None, Query(description="A model name")] = None,
    id: Annotated[str | None, Query(description="Any id of one instance")] = None,
    page: Annotated[int, Query(ge=1, le=MAX_INT64 // MAX_PAGE_SIZE)] = 1,
    size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
) -> dict[str, Any]:
    if status is not None and status not in STATUSES:
        raise validation_error({"status": f"must be one of {', '.join(STATUSES)}"})
    svc = services(request)

    def run() -> dict[str, Any]:
        with svc.state.read() as connection:
            return list_jobs(connection, JobFilter(status, funnel, model, id), page, size)

    return await run_in_threadpool(run)


@router.get(
    "/v0/actions/summary",
    summary="Each action's jobs by status (sent, held out, capped, cancelled, …)",
    **documented(ActionSummary, AUTH),
)
async def actions_summary(request: Request) -> dict[str, Any]:
    svc = services(request)

    def run() -> list[dict[str, Any]]:
        with svc.state.read() as connection:
            return action_summary(connection)

    return {"data": await run_in_threadpool(run)}


@router.get(
    "/v0/actions/{job_id}",
    summary="One action job with its attempts",
    **documented(ActionJob, (400, *AUTH, 404)),
)
async def action(request: Request, job_id: JobId) -> dict[str, Any]:
    svc = services(request)

    def run() -> dict[str, Any] | None:
        with svc.state.read() as connection:
            return get_job(connection, job_id)

    job = await run_in_threadpool(run)
    if job is None:
        raise ApiError("NOT_FOUND", f"No action job {job_id}.")
    return job


@router.post(
    "/v0/actions/{job_id}/retry",
    summary="Send a dead, failing or unknown action job again now",
    **documented(ActionJob, (*WRITE, 404)),
)
async def retry(request: Request, job_id: JobId) -> dict[str, Any]:
    svc = services(request)

    def run() -> tuple[str | None, dict[str, Any] | None]:
        with svc.state.write() as connection:
            before = outbox.retry(connection, job_id, svc.clock.now_ms())
            return before, get_job(connection, job_id)

    before, job = await run_in_threadpool(run)
    if before is None or job is None:
        raise ApiError("NOT_FOUND", f"No action job {job_id}.")
    if job["status"] != "scheduled" or before not in outbox.RETRYABLE:
        raise ApiError(
            "CONFLICT", f"Action job {job_id} is {before}; only dead, failed or unknown jobs can be retried."
        )
    svc.wake_worker()
    return job


@router.get(
    "/v0/models/{model}",
    summary="A model's instances, newest first, optionally searched by id or name",
    description=(
        "Instances of `model`, newest first, those one of whose ids or whose display name contains `q` (any "
        "case) when given; each with its first ids. Pass `next_cursor` back as `cursor` for the next page."
    ),
    **documented(ModelInstances, (400, *AUTH)),
)
async def instances(
    request: Request,
    model: str,
    q: Annotated[str | None, Query(max_length=500, description="Text any id or the name contains")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 25,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> dict[str, Any]:
    svc = services(request)
    after = None
    if cursor is not None:
        try:
            after = parse_list_cursor(cursor)
        except ValueError:
            raise validation_error({"cursor": "must be the next_cursor of a previous page"}) from None

    def run() -> dict[str, Any]:
        with svc.state.read() as connection:
            return search(connection, model, q.strip() if q else None, after, limit)

    return await run_in_threadpool(run)


# A timeline's page (an instance's, a user key's).
TimelineBefore = Annotated[
    str | None,
    Query(description="Timeline page: `next_before` of the previous page, or a time (ISO 8601 or epoch ms)"),
]
TimelineLimit = Annotated[int, Query(ge=1, le=200)]


class SubscriptionChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str = Field(
        pattern=SUBSCRIPTION_TOPIC, description="`email`, `sms`, or `email:<topic>` / `sms:<topic>`"
    )
    subscribed: StrictBool


@router.put(
    "/v0/models/{model}/{instance_id}/subscriptions",
    summary="Unsubscribe an instance from a channel or topic, or subscribe it again",
    description=(
        "`{topic, subscribed}`: `topic` is `email` or `sms` (the whole channel) or `email:<topic>` / "
        "`sms:<topic>` (an action's `topic`, else its funnel's id); `subscribed: false` unsubscribes (the "
        "instance's non-transactional emails or SMS there end `suppressed`), `true` subscribes again. "
        "Answers what the instance is unsubscribed from afterwards."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SubscriptionChange.model_json_schema()}},
        }
    },
    **documented(Subscriptions, (400, *WRITE, 404)),
)
async def change_subscription(request: Request, model: str, instance_id: str) -> dict[str, Any]:
    svc = services(request)
    try:
        change = SubscriptionChange.model_validate(await read_json(request, MAX_CHANGE_BYTES))
    except ValidationError as error:
        raise validation_error(pydantic_details(error, "body")) from None

    def run() -> list[dict[str, Any]] | None:
        with svc.state.write() as connection:
            found = find(connection, svc.events, model, instance_id)
            if found is None:
                return None
            set_subscribed(connection, found.id, change.topic, change.subscribed, svc.clock.now_ms())
            return opted_out(connection, found.id)

    unsubscribed = await run_in_threadpool(run)
    if unsubscribed is None:
        raise ApiError("NOT_FOUND", f"No {model} instance has the id {instance_id!r}.")
    return {"unsubscribed": unsubscribed}


@router.get(
    "/v0/models/{model}/{instance_id}",
    summary="One model instance: ids, properties, progress, timeline",
    description=(
        "The instance one of whose ids is `instance_id`, or else the instance of the user that id links to "
        "by identity stitching (an anonymous id identified as that user, an aliased id; see "
        "docs/semantics.md). `linked_ids`: the ids linked to the instance's ids; their events are in the "
        "timeline."
    ),
    **documented(ModelInstance, (400, *AUTH, 404)),
)
async def instance(
    request: Request,
    model: str,
    instance_id: str,
    before: TimelineBefore = None,
    limit: TimelineLimit = 50,
) -> dict[str, Any]:
    svc = services(request)
    cursor = _cursor(before)

    def run() -> dict[str, Any] | None:
        with svc.state.read() as connection:
            found = find(connection, svc.events, model, instance_id)
            if found is None:
                return None
            return describe(connection, svc.events, svc.automation.plan, found, cursor, limit)

    body = await run_in_threadpool(run)
    if body is None:
        raise ApiError("NOT_FOUND", f"No {model} instance has the id {instance_id!r}.")
    return body


@router.get(
    "/v0/users/{user_key}",
    summary="Any user key as a person: its keys, instances and events",
    description=(
        "A user key whether or not it was ever identified: the person it counts as in stitched funnels "
        "(`person`: the user it links to, or itself), every key linked to that person, the model instances "
        "those keys name, and the events of all of them, newest first (`before`/`limit` page them as in "
        "`/v0/models/{model}/{id}`). 404 when no event and no link names the key."
    ),
    **documented(UserPerson, (400, *AUTH, 404)),
)
async def user(
    request: Request,
    user_key: str,
    before: TimelineBefore = None,
    limit: TimelineLimit = 50,
) -> dict[str, Any]:
    svc = services(request)
    cursor = _cursor(before)

    def run() -> dict[str, Any] | None:
        with svc.state.read() as connection:
            return describe_user(connection, svc.events, user_key, cursor, limit)

    body = await run_in_threadpool(run)
    if body is None:
        raise ApiError("NOT_FOUND", f"No event and no identity link names the user key {user_key!r}.")
    return body


def _cursor(before: str | None) -> Cursor | None:
    """The timeline's `before` parameter as a cursor (absent: the newest page); a 400 naming it if bad."""
    if before is None:
        return None
    try:
        return Cursor.parse(before)
    except ValueError as error:
        raise validation_error({"before": f"{error}, or the next_before of a previous page"}) from None


def _config_body(request: Request) -> dict[str, Any]:
    automation = services(request).automation
    plan = automation.plan
    status = automation.status
    return {
        "path": status.path,
        "loaded_at": iso(status.loaded_ms),
        "valid": not status.errors,
        "errors": list(status.errors),
        "models": list(plan.config.models) if plan else [],
        "funnels": [
            {
                "id": funnel.id,
                "forModels": list(funnel.for_models),
                "steps": [
                    {
                        "event": step.event,
                        "actions": [
                            {
                                "type": action.type,
                                "delay_seconds": action.delay.total_seconds() if action.delay else None,
                                "unless": list(action.unless),
                            }
                            for action in step.actions
                        ],
                    }
                    for step in funnel.steps
                ],
            }
            for funnel in (plan.config.funnels if plan else ())
        ],
    }


@router.get(
    "/v0/config",
    summary="The loaded automation config and the state of the last reload",
    **documented(LoadedConfig, AUTH),
)
async def config(request: Request) -> dict[str, Any]:
    return _config_body(request)


@router.post(
    "/v0/config/reload",
    summary="Re-read the config file; on any problem keep the current one",
    **documented(LoadedConfig, WRITE),
)
async def reload(request: Request) -> dict[str, Any]:
    automation = services(request).automation
    if automation.path is None:
        raise ApiError(
            "CONFLICT", "The server was started without a config file (--config or FUNNELS_CONFIG)."
        )

    def run() -> None:
        with _reload_lock:
            automation.reload()

    try:
        await run_in_threadpool(run)
    except ConfigInvalid as invalid:
        details = {error.path: error.message for error in invalid.errors}
        raise validation_error(
            details, f"The config has {len(invalid.errors)} problem(s); the previous config stays in effect."
        ) from None
    return _config_body(request)
