"""The ASGI application: `create_app(services)` wires the API's routes, the dashboard's pages and static
files, error handlers, and the lifetimes of the event-log shipper and the action worker.

This is the top of the layering: it imports both `api/` and `web/`, and neither imports it; `web/` uses the
API's request plumbing (`api.deps`, `api.errors`, `api.buffering`) and `api/` never imports `web/`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.staticfiles import StaticFiles

from funnels import __version__
from funnels.api import (
    admin,
    automation,
    catalog,
    events,
    funnel,
    imports,
    keys,
    lift,
    pages,
    saved_funnels,
    segment,
    segment_settings,
)
from funnels.api.buffering import MAX_BUFFERED_BYTES, BodyBudget
from funnels.api.cors import ANY_ORIGIN, SegmentCors
from funnels.api.deps import single_valued_query
from funnels.api.errors import install_error_handlers
from funnels.api.idempotency import IdempotencyMiddleware
from funnels.api.schemas import install_openapi
from funnels.services import Services
from funnels.web import analytics_js, unsubscribe
from funnels.web import routes as dashboard


def create_app(
    svc: Services,
    *,
    run_shipper: bool = True,
    run_worker: bool = True,
    public_url: str | None = None,
    max_buffered_bytes: int = MAX_BUFFERED_BYTES,
    cors_origins: Sequence[str] = ANY_ORIGIN,
    local_credential: str | None = None,
) -> FastAPI:
    """The app over these services. While it runs, so do the event-log shipper (`run_shipper`) and, when
    a config is loaded, the action worker (`run_worker`: a thread here) or the services' worker process.
    `public_url` is where clients reach the server (errors' `doc_url` start with it, else they are
    relative; so do the worker thread's unsubscribe links, else emails carry none); `max_buffered_bytes` caps the request bytes held in memory at once (`api.buffering`);
    `cors_origins` are the origins whose pages may call `/v1/*` (`api.cors`; the other routes stay
    same-origin); `local_credential` is the credential `funnels serve` writes to `server.json` for the CLI
    (`funnels.discovery`; `api.deps.authorize` accepts it on the CLI's endpoints only)."""
    run_worker = run_worker and svc.automation.plan is not None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        svc.committer.start()
        if run_shipper:
            svc.shipper.start()
        if run_worker:
            svc.worker.start()
        if svc.worker_process is not None:
            svc.worker_process.start()
        try:
            yield
        finally:
            svc.committer.stop()  # after the last request: what it holds is committed first
            if run_worker:
                svc.worker.stop()
            if svc.worker_process is not None:
                svc.worker_process.stop()
            if run_shipper:
                svc.shipper.stop()

    app = FastAPI(
        title="funnels",
        version=__version__,
        description=(
            "Self-hosted funnel engine: event ingestion (native and Segment-compatible), funnel analytics, "
            "and funnel automation (identify, step rule, actions)."
        ),
        lifespan=lifespan,
        # The interactive docs pages load their scripts from a CDN; nothing served may load from another
        # host. /openapi.json stays: any OpenAPI viewer reads it.
        docs_url=None,
        redoc_url=None,
        # Starlette's redirect from `/path/` to `/path` is an absolute URL built from the Host header,
        # which the client chooses: paths are exact instead (a trailing slash is a 404).
        redirect_slashes=False,
    )
    app.state.services = svc
    app.state.public_url = public_url
    app.state.local_credential = local_credential
    app.state.body_budget = BodyBudget(max_buffered_bytes)
    app.state.unsubscribe_limiter = unsubscribe.limiter()  # per client address (`web/unsubscribe.py`)
    if public_url is not None:  # the worker thread's unsubscribe links start with it
        svc.worker.public_url = public_url
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(IdempotencyMiddleware)
    # Outside the idempotency middleware: a preflight is answered before anything reads a key or a body.
    app.add_middleware(SegmentCors, origins=cors_origins, public_url=public_url)
    # Starlette tries routes in order: the ingest routes, which take most requests, come first.
    # The routes with query parameters take each once; the ingest routes, which have none, skip the check.
    routes = (
        automation,
        events,
        segment,
        segment_settings,
        funnel,
        catalog,
        imports,
        admin,
        keys,
        saved_funnels,
        lift,
        dashboard,
        unsubscribe,
        pages,
        analytics_js,
    )
    for module in routes:
        checks = [Depends(single_valued_query)] if module in (funnel, catalog, imports, admin, lift) else []
        app.include_router(module.router, dependencies=checks)
    app.mount("/static", StaticFiles(packages=[("funnels.web", "static")]), name="static")
    return app
