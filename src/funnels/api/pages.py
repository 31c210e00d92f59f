"""Pages and probes outside the dashboard: `GET /errors` (what `doc_url` points to), `GET /healthz`."""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from funnels.api.deps import services
from funnels.api.errors import ERROR_CODES, ApiError, store_unavailable
from funnels.api.schemas import Health, documented
from funnels.services import Services
from funnels.store import StoreUnavailable

router = APIRouter()


@router.get("/errors", response_class=HTMLResponse, include_in_schema=False)
async def errors_page() -> HTMLResponse:
    rows = "".join(
        f'<tr id="{code.lower()}"><td><code>{code}</code></td><td>{status}</td><td>{html.escape(text_)}</td></tr>'
        for code, (status, text_) in ERROR_CODES.items()
    )
    return HTMLResponse(
        "<!doctype html><meta charset=utf-8><title>funnels · error codes</title>"
        "<h1>Error codes</h1><p>Every non-2xx response is <code>{error: {code, message, doc_url, param?, details?}}"
        f"</code>. Branch on <code>code</code>.</p><table><tr><th>code<th>status<th>meaning</tr>{rows}</table>"
    )


def _probe(svc: Services) -> dict[str, str]:
    checks = {}
    svc.state.probe(svc.clock.now_ms())  # a write (with headroom after a failed one) proves it writable
    checks["state"] = "ok"
    svc.events.probe()
    if svc.shipper.failure is not None:  # the event store refused the last batch: it is retried
        raise StoreUnavailable("events", svc.shipper.failure)
    checks["events"] = "ok"
    checks["shipper_backlog"] = str(svc.shipper.backlog())
    lease = svc.shipper.lease
    checks["shipper"] = (
        "this node" if svc.shipper.ships_here else (lease.holder if lease else "not known yet")
    )
    return checks


@router.get(
    "/healthz",
    tags=["Health"],
    summary="200 when the stores can be read and written",
    **documented(Health, (503,)),
)
async def healthz(request: Request) -> JSONResponse:
    try:
        checks = await run_in_threadpool(_probe, services(request))
    except StoreUnavailable as error:
        raise store_unavailable(error) from None
    except Exception as error:  # a probe answers: any store failure is a 503 in the usual envelope
        raise ApiError("SERVICE_UNAVAILABLE", f"A store is unavailable: {error}") from None
    return JSONResponse({"status": "ok", **checks})
