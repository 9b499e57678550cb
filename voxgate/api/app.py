"""The FastAPI application: Swagger UI at ``/swagger/``, the OpenAPI document beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel, Field

from voxgate import __version__
from voxgate.api import errors
from voxgate.api.routers import MODULES
from voxgate.api.state import Services
from voxgate.settings import Settings, get_settings
from voxgate.store import cache, events
from voxgate.store.db import Store


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    version: str = Field(examples=["0.1.0"])
    store: str = Field(description="Database backend in use.", examples=["sqlite"])


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cache.configure(settings.cache_ttl_s)
        store = await Store(settings.resolved_database_url).open()
        services = Services(settings=settings, store=store)
        app.state.services = services
        started = []
        try:
            for module in MODULES:
                await module.startup(services)
                started.append(module)
            yield
        finally:
            for module in reversed(started):
                await module.shutdown(services)
            await events.flush(store.sessions)
            await store.close()

    app = FastAPI(
        title="voxgate",
        version=__version__,
        description="Self-hosted voice biometrics for contact centres. Authenticate with "
        "`Authorization: Token <token>` from `POST /rest-auth/login/`.",
        docs_url="/swagger/",
        redoc_url=None,
        openapi_url="/swagger/openapi.json",
        lifespan=lifespan,
    )
    errors.install(app)
    for module in MODULES:
        app.include_router(module.router)

    @app.get("/health", response_model=Health, tags=["operations"], summary="Liveness and store check")
    async def health() -> Health:
        services: Services = app.state.services
        return Health(status="ok", version=__version__, store=services.store.engine.dialect.name)

    return app
