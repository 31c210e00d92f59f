"""API keys over HTTP (scope `admin`): list, create (the secret is in that response only), revoke."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from funnels.api.deps import read_json, require, services
from funnels.api.errors import ApiError, validation_error
from funnels.api.events import pydantic_details
from funnels.api.schemas import AUTH, WRITE, CreatedKey, KeyList, KeyView, documented
from funnels.auth import KeyInfo, create_key, key_id_of, key_info, list_keys
from funnels.automation.deliveries import iso
from funnels.types import SCOPES

router = APIRouter(tags=["API keys"], dependencies=[require("admin")])

KeyId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$")]


class NewKey(BaseModel):
    """The body of `POST /v0/keys`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200, description="A label, e.g. who or what uses the key")
    scopes: list[str] = Field(min_length=1, description=f"Some of {', '.join(SCOPES)}")


def key_body(info: KeyInfo) -> dict[str, Any]:
    """A key as the API shows it: never its secret."""
    return {
        "id": info.id,
        "name": info.name,
        "scopes": list(info.scopes),
        "created": iso(info.created_ms),
        "revoked": info.revoked,
        "revoked_at": iso(info.revoked_ms),
    }


@router.get(
    "/v0/keys",
    summary="Every API key, newest first (ids, names, scopes; never secrets)",
    **documented(KeyList, AUTH),
)
async def keys(request: Request) -> dict[str, Any]:
    infos = await run_in_threadpool(list_keys, services(request).state)
    return {"data": [key_body(info) for info in reversed(infos)]}


# Read by the handler, after the router's auth dependency (FastAPI reads a body parameter before it
# solves dependencies, so an unauthenticated client could make the server buffer a body first).
NEW_KEY_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": NewKey.model_json_schema()}}}
}
MAX_NEW_KEY_BYTES = 16 * 1024


@router.post(
    "/v0/keys",
    status_code=201,
    summary="Create an API key; the response is the only one with it",
    openapi_extra=NEW_KEY_BODY,
    **documented(CreatedKey, WRITE, status=201),
)
async def create(request: Request, response: Response) -> dict[str, Any]:
    try:
        body = NewKey.model_validate(await read_json(request, MAX_NEW_KEY_BYTES))
    except ValidationError as error:
        raise validation_error(pydantic_details(error, "body")) from None
    # The secret is shown once: no cache (nor the idempotency middleware) may keep this response.
    response.headers["Cache-Control"] = "no-store"
    unknown = [scope for scope in body.scopes if scope not in SCOPES]
    if unknown:
        raise validation_error(
            {"body.scopes": f"unknown scope(s) {', '.join(unknown)}; use {', '.join(SCOPES)}"}
        )
    svc = services(request)

    def run() -> tuple[str, KeyInfo | None]:
        key = create_key(svc.state, svc.clock, body.scopes, body.name.strip())
        return key, key_info(svc.state, key_id_of(key))

    key, info = await run_in_threadpool(run)
    assert info is not None  # just created
    return {**key_body(info), "key": key}


@router.post(
    "/v0/keys/{key_id}/revoke",
    summary="Revoke an API key: it stops working at once, sessions too",
    **documented(KeyView, (*WRITE, 404)),
)
async def revoke(request: Request, key_id: KeyId) -> dict[str, Any]:
    svc = services(request)

    def run() -> tuple[bool, KeyInfo | None]:
        revoked = svc.keys.revoke(svc.clock, key_id)
        return revoked, key_info(svc.state, key_id)

    revoked, info = await run_in_threadpool(run)
    if info is None:
        raise ApiError("NOT_FOUND", f"No API key {key_id}.")
    if not revoked:
        raise ApiError("CONFLICT", f"API key {key_id} is already revoked.")
    return key_body(info)
