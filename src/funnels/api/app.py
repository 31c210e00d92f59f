"""The ASGI application: `create_app(services)` wires routes, error handlers, and the lifetimes of the
event-log shipper and the action worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from funnels import __version__
from funnels.api import admin, automation, catalog, events, funnel, pages, segment
from funnels.api.errors import install_error_handlers
from funnels.api.idempotency import IdempotencyMiddleware
from funnels.services import Services


def create_app(svc: Services, *, run_shipper: bool = True, run_worker: bool = True) -> FastAPI:
    """The app over these services. While it runs, so do the event-log shipper (`run_shipper`) and, when
    a config is loaded, the action worker (`run_worker`)."""
    run_worker = run_worker and svc.automation.plan is not None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_shipper:
            svc.shipper.start()
        if run_worker:
            svc.worker.start()
        try:
            yield
        finally:
            if run_worker:
                svc.worker.stop()
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
    )
    app.state.services = svc
    install_error_handlers(app)
    app.add_middleware(IdempotencyMiddleware)
    for module in (pages, events, segment, funnel, catalog, automation, admin):
        app.include_router(module.router)
    return app
