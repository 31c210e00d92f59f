"""`POST /v0/import`: one history file, streamed in the request body, imported into the event store exactly
as `funnels import` imports it (`funnels.ingest.importer`): `funnels import` sends its files here while
`funnels serve` holds the data directory.

How it works: the body is written to a private directory inside the data directory
(`Services.importing`, one import at a time), under the extension of the `name` the client gives, so the
importer reads a file as it would read the client's own: the same formats, the native Parquet fast path,
the same rows imported and skipped. Row errors name the client's file, not the upload's. The server never
reads a path a client names: only bytes it was sent.
"""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from funnels.api.deps import require, services
from funnels.api.errors import ApiError, store_unavailable, validation_error
from funnels.api.schemas import AUTH, Imported, documented
from funnels.ingest.columns import ImportFileError
from funnels.ingest.importer import FORMATS, file_format, import_files
from funnels.services import ImportRunning
from funnels.store import StoreUnavailable

router = APIRouter(tags=["Import"])

MAX_NAME = 4096
WRITE_BYTES = 1024 * 1024  # the upload is written to disk in pieces of about this size

BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "/v0/import",
    summary="Import a history file into the event store",
    description=(
        f"The body is the file's bytes ({', '.join(FORMATS)}, chosen by `name`'s extension), imported as "
        "`funnels import` imports a file: straight into the event store, firing no automation; bad rows are "
        "skipped and reported (the first 1,000) with their line or row, under `name`. One import at a time "
        "(409 while one runs). Scope `admin`, or the server's local credential (`funnels import` on the same "
        "machine)."
    ),
    dependencies=[require("admin", local=True)],
    openapi_extra=BODY,
    **documented(Imported, (400, *AUTH, 409, 503)),
)
async def import_file(
    request: Request,
    name: Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_NAME,
            description="The file's name on the client: its extension chooses the format, and bad rows are "
            "reported under it",
        ),
    ],
) -> dict[str, Any]:
    try:
        suffix = PurePath(name).suffix.lower()
        file_format(PurePath(name))
    except ImportFileError as error:
        raise validation_error({"query.name": str(error)}) from None
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ApiError("BAD_REQUEST", "Send the file's bytes as they are, without a Content-Encoding.")
    svc = services(request)
    try:
        with svc.importing() as uploads:
            upload = uploads / f"upload{suffix}"
            await _receive(request, upload)
            try:
                report = await run_in_threadpool(import_files, svc.events, [upload])
            except ImportFileError as error:  # unreadable, or a required column missing
                raise ApiError("BAD_REQUEST", str(error).replace(str(upload), name)) from None
    except ImportRunning:
        raise ApiError(
            "CONFLICT", "An import into this data directory is running: try again when it has finished."
        ) from None
    return {
        "imported": report.imported,
        "skipped": report.skipped,
        "seconds": round(report.seconds, 3),
        "errors": [
            {"file": name, "line": error.line, "unit": error.unit, "message": error.message}
            for error in report.errors
        ],
    }


async def _receive(request: Request, path: Path) -> None:
    """The request body into `path`, written in pieces off the event loop; a disk that refuses it is a 503."""
    try:
        with path.open("wb") as file:
            pending = bytearray()
            async for chunk in request.stream():
                pending += chunk
                if len(pending) >= WRITE_BYTES:
                    await run_in_threadpool(file.write, pending)
                    pending = bytearray()
            await run_in_threadpool(file.write, pending)
    except ClientDisconnect:  # nothing to answer; the upload is removed with its directory
        raise ApiError("BAD_REQUEST", "The client went away before it had sent the whole file.") from None
    except OSError as error:
        raise store_unavailable(
            StoreUnavailable("events", f"the upload cannot be written: {error}")
        ) from None
