"""Saved funnels over HTTP (scope `query:read`): list, create, read, update (optionally at a version), delete.

A saved funnel holds `/v0/funnel` parameters and nothing a `query:read` key could not already ask for, so
the scope that runs funnels also saves them; the limits (`analytics.saved`) bound what a key can store.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from funnels.analytics import saved
from funnels.analytics.query import QueryValidationError
from funnels.analytics.saved import ListedFunnel, SavedFunnel, SavedFunnelConflict, SavedFunnelMissing
from funnels.api.deps import read_json, require, services
from funnels.api.errors import ApiError, validation_error
from funnels.api.events import pydantic_details
from funnels.api.schemas import AUTH, WRITE, SavedFunnelList, SavedFunnelView, documented
from funnels.automation.deliveries import iso

router = APIRouter(tags=["Saved funnels"], dependencies=[require("query:read")])

FunnelId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$")]
MAX_BODY_BYTES = 2 * saved.MAX_PARAMETERS_BYTES  # the parameters' cap, with room for `steps` as an array


class NewSavedFunnel(BaseModel):
    """The body of `POST /v0/saved_funnels`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description=f"Unique, 1–{saved.MAX_NAME} characters (trimmed)")
    parameters: dict[str, Any] = Field(
        description="`/v0/funnel` parameters (`date_from`, `date_to`, `steps`, … `compare`), validated as "
        "`/v0/funnel` validates them; `steps` as its JSON text or as an array"
    )


class SavedFunnelUpdate(NewSavedFunnel):
    """The body of `PUT /v0/saved_funnels/{funnel_id}`."""

    version: int | None = Field(
        None, ge=1, description="The version this update replaces: another one is a 409 (optional)"
    )


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def listed_body(request: Request, funnel: ListedFunnel | SavedFunnel) -> dict[str, Any]:
    public_url = getattr(request.app.state, "public_url", None) or ""
    return {
        "id": funnel.id,
        "name": funnel.name,
        "version": funnel.version,
        "created": iso(funnel.created_ms),
        "updated": iso(funnel.updated_ms),
        "link": f"{public_url}/funnels?saved={funnel.id}",
    }


def funnel_body(request: Request, funnel: SavedFunnel) -> dict[str, Any]:
    return {**listed_body(request, funnel), "parameters": funnel.parameters}


async def _read(request: Request, model: type[NewSavedFunnel]) -> NewSavedFunnel:
    """The body (read after the router's auth dependency), in its model's shape."""
    try:
        return model.model_validate(await read_json(request, MAX_BODY_BYTES))
    except ValidationError as error:
        raise validation_error(pydantic_details(error, "body")) from None


def _refused(error: QueryValidationError | SavedFunnelConflict | SavedFunnelMissing) -> ApiError:
    if isinstance(error, QueryValidationError):
        return validation_error({f"body.{path}": problem for path, problem in error.details.items()})
    if isinstance(error, SavedFunnelConflict):
        return ApiError("CONFLICT", str(error), param=f"body.{error.param}")
    return ApiError("NOT_FOUND", str(error))


@router.get(
    "/v0/saved_funnels",
    summary="Every saved funnel by name (without parameters)",
    **documented(SavedFunnelList, AUTH),
)
async def list_funnels(request: Request) -> dict[str, Any]:
    funnels = await run_in_threadpool(saved.list_saved, services(request).state)
    return {"data": [listed_body(request, funnel) for funnel in funnels], "rows": len(funnels)}


@router.post(
    "/v0/saved_funnels",
    status_code=201,
    summary="Save a funnel's parameters under a new name",
    openapi_extra=_body_doc(NewSavedFunnel),
    **documented(SavedFunnelView, WRITE, status=201),
)
async def create_funnel(request: Request) -> dict[str, Any]:
    body = await _read(request, NewSavedFunnel)
    svc = services(request)
    try:
        funnel = await run_in_threadpool(saved.create, svc.state, svc.clock, body.name, body.parameters)
    except (QueryValidationError, SavedFunnelConflict) as error:
        raise _refused(error) from None
    return funnel_body(request, funnel)


@router.get(
    "/v0/saved_funnels/{funnel_id}",
    summary="One saved funnel, with its parameters",
    **documented(SavedFunnelView, (400, *AUTH, 404)),
)
async def get_funnel(request: Request, funnel_id: FunnelId) -> dict[str, Any]:
    funnel = await run_in_threadpool(saved.find, services(request).state, funnel_id)
    if funnel is None:
        raise ApiError("NOT_FOUND", f"No saved funnel {funnel_id}.")
    return funnel_body(request, funnel)


@router.put(
    "/v0/saved_funnels/{funnel_id}",
    summary="Replace a saved funnel's name and parameters (at `version`, when given); its id stays",
    openapi_extra=_body_doc(SavedFunnelUpdate),
    **documented(SavedFunnelView, (*WRITE, 404)),
)
async def update_funnel(request: Request, funnel_id: FunnelId) -> dict[str, Any]:
    body = await _read(request, SavedFunnelUpdate)
    assert isinstance(body, SavedFunnelUpdate)
    svc = services(request)
    try:
        funnel = await run_in_threadpool(
            saved.update, svc.state, svc.clock, funnel_id, body.name, body.parameters, body.version
        )
    except (QueryValidationError, SavedFunnelConflict, SavedFunnelMissing) as error:
        raise _refused(error) from None
    return funnel_body(request, funnel)


@router.delete(
    "/v0/saved_funnels/{funnel_id}",
    summary="Delete a saved funnel; the answer is the funnel as it was",
    **documented(SavedFunnelView, (*WRITE, 404)),
)
async def delete_funnel(request: Request, funnel_id: FunnelId) -> dict[str, Any]:
    state = services(request).state

    def run() -> SavedFunnel | None:
        funnel = saved.find(state, funnel_id)
        return funnel if funnel is not None and saved.delete(state, funnel_id) else None

    funnel = await run_in_threadpool(run)
    if funnel is None:
        raise ApiError("NOT_FOUND", f"No saved funnel {funnel_id}.")
    return funnel_body(request, funnel)
