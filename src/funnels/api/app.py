"""The ASGI application: `create_app(services)` wires routes, error handlers and the shipper's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from funnels import __version__
from funnels.api import events, funnel, pages, segment
from funnels.api.errors import install_error_handlers
from funnels.services import Services


def create_app(svc: Services, *, run_shipper: bool = True) -> FastAPI:
    """The app over these services. With `run_shipper`, the event-log shipper runs while the app does."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_shipper:
            svc.shipper.start()
        try:
            yield
        finally:
            if run_shipper:
                svc.shipper.stop()

    app = FastAPI(
        title="funnels",
        version=__version__,
        description="Self-hosted funnel engine: event ingestion (native and Segment-compatible) and funnel analytics.",
        lifespan=lifespan,
    )
    app.state.services = svc
    install_error_handlers(app)
    for module in (pages, events, segment, funnel):
        app.include_router(module.router)
    return app
