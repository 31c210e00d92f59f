"""The spec's error envelope: every non-2xx response is `{error: {code, message, doc_url, param?, details?}}`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from funnels.store import StoreUnavailable
from funnels.store.events import LayoutOutdated, QueryTimeout

log = logging.getLogger(__name__)

# code → (HTTP status, what it means); also rendered on the /errors page that doc_url points to.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "INVALID_VALIDATION_REQUEST": (
        400,
        "A parameter or body field is invalid; `details` maps each field to the problem.",
    ),
    "BAD_REQUEST": (
        400,
        "The request cannot be read: malformed JSON, an unsupported encoding, or over a size limit; or "
        "`POST /v0/import` cannot read the file.",
    ),
    "INVALID_IDEMPOTENCY_KEY": (
        400,
        "The Idempotency-Key header is not 1 to 255 printable ASCII characters, or it was already used "
        "with a different request (method, path, query or body).",
    ),
    "UNAUTHORIZED": (401, "No API key, or an unknown or revoked one."),
    "FORBIDDEN": (
        403,
        "The API key lacks the scope this endpoint requires, or (on `/v1/*`) the request's `Origin` is not "
        "among the server's `--cors-origins`, or the server's local credential was sent to an endpoint it "
        "does not open.",
    ),
    "CSRF_FAILED": (
        403,
        "A request authenticated by the dashboard's session cookie changed state without the session's "
        "CSRF token (the `X-CSRF-Token` header, or the `csrf_token` field of a form).",
    ),
    "NOT_FOUND": (404, "No such endpoint or resource."),
    "CONFLICT": (409, "The request conflicts with the current state."),
    "IDEMPOTENCY_IN_PROGRESS": (409, "A request with the same Idempotency-Key is still being processed."),
    "TOO_MANY_REQUESTS": (429, "Slow down."),
    "INTERNAL_SERVER_ERROR": (
        500,
        "A bug: the request could not be completed. Nothing acknowledged was lost.",
    ),
    "SERVICE_UNAVAILABLE": (
        503,
        "A store is not available right now (e.g. the disk is full: `details.store` names it); nothing of "
        "the request was stored. Retry later, after `Retry-After` seconds. Or an analytics query ran past "
        "the server's time limit and was stopped (`details.reason` is `query_timeout`, "
        "`details.limit_seconds` the limit, the server's `--query-timeout`): narrow the query (a shorter "
        "date range, fewer breakdown values) rather than retry it as it was.",
    ),
}


class ApiError(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        details: dict[str, Any] | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.details = details
        self.status = status or ERROR_CODES[code][0]
        self.headers = headers


def validation_error(details: dict[str, str], message: str | None = None) -> ApiError:
    param = next(iter(details))
    return ApiError(
        "INVALID_VALIDATION_REQUEST",
        message or f"Invalid {param}: {details[param]}",
        param=param,
        details=details,
    )


def doc_url(code: str, public_url: str | None) -> str:
    """Where the code is explained: on the configured public URL, else a link relative to this server
    (never built from the request's Host header, which the client chooses)."""
    return f"{(public_url or '').rstrip('/')}/errors#{code.lower()}"


def error_body(request: Request, error: ApiError) -> dict[str, Any]:
    return envelope(error, getattr(request.app.state, "public_url", None))


def envelope(error: ApiError, public_url: str | None) -> dict[str, Any]:
    """The error as the spec's envelope."""
    body: dict[str, Any] = {
        "code": error.code,
        "message": error.message,
        "doc_url": doc_url(error.code, public_url),
    }
    if error.param is not None:
        body["param"] = error.param
    if error.details is not None:
        body["details"] = error.details
    return {"error": body}


RETRY_AFTER_SECONDS = 10  # a store refusing writes (`StoreUnavailable`): when to try again


def store_unavailable(error: StoreUnavailable) -> ApiError:
    """A store that refuses writes (disk full or failing) as a retryable 503 naming the store."""
    return ApiError(
        "SERVICE_UNAVAILABLE",
        f"The {error.store} store cannot write right now (the disk is full or failing); nothing of this "
        "request was stored: retry later.",
        details={"store": error.store, "reason": error.reason},
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def layout_outdated(error: LayoutOutdated) -> ApiError:
    """A cluster layout an older version made, lacking what this request needs, as a 503 that says the
    operator's step (the server's log has the whole message)."""
    return ApiError(
        "SERVICE_UNAVAILABLE",
        "The event store's cluster layout was made by an older version and lacks what this request needs: "
        f"an operator must run `funnels events init --cluster {error.cluster}` again.",
        details={"store": "events", "reason": "layout_outdated"},
    )


def query_timeout(error: QueryTimeout) -> ApiError:
    """An analytics query stopped at the server's time limit, as a 503 naming the limit (no `Retry-After`:
    the same query would run as long again)."""
    return ApiError(
        "SERVICE_UNAVAILABLE",
        f"The query ran longer than this server's limit of {error.limit_seconds:g} seconds per query and was "
        "stopped: narrow it (a shorter date range, fewer breakdown values), or ask the operator to raise the "
        "limit (`funnels serve --query-timeout`, FUNNELS_QUERY_TIMEOUT_SECONDS).",
        details={"store": "events", "reason": "query_timeout", "limit_seconds": error.limit_seconds},
    )


def _field_path(location: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in location)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error_body(request, error), status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        details = {_field_path(item["loc"]): item["msg"] for item in error.errors()}
        return await _api_error(request, validation_error(details or {"request": "invalid"}))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {
            401: "UNAUTHORIZED",
            403: "FORBIDDEN",
            404: "NOT_FOUND",
            409: "CONFLICT",
            429: "TOO_MANY_REQUESTS",
        }.get(error.status_code, "BAD_REQUEST" if error.status_code < 500 else "INTERNAL_SERVER_ERROR")
        api_error = ApiError(code, str(error.detail), status=error.status_code)
        return await _api_error(request, api_error)

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(request: Request, error: StoreUnavailable) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, error)
        return await _api_error(request, store_unavailable(error))

    @app.exception_handler(LayoutOutdated)
    async def _layout_outdated(request: Request, error: LayoutOutdated) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, error)
        return await _api_error(request, layout_outdated(error))

    @app.exception_handler(QueryTimeout)
    async def _query_timeout(request: Request, error: QueryTimeout) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, error)
        return await _api_error(request, query_timeout(error))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return await _api_error(request, ApiError("INTERNAL_SERVER_ERROR", "Internal server error."))
