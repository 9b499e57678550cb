"""The FastAPI application: Swagger UI at ``/swagger/``, the OpenAPI document beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel, Field

from voxgate import __version__
from voxgate.settings import Settings, get_settings
from voxgate.store.db import Store


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    version: str = Field(examples=["0.1.0"])
    store: str = Field(description="Database backend in use.", examples=["sqlite"])


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await Store(settings.resolved_database_url).open()
        app.state.store = store
        app.state.settings = settings
        try:
            yield
        finally:
            await store.close()

    app = FastAPI(
        title="voxgate",
        version=__version__,
        description="Self-hosted voice biometrics for contact centres.",
        docs_url="/swagger/",
        redoc_url=None,
        openapi_url="/swagger/openapi.json",
        lifespan=lifespan,
    )

    @app.get("/health", response_model=Health, tags=["operations"], summary="Liveness and store check")
    async def health() -> Health:
        store: Store = app.state.store
        return Health(status="ok", version=__version__, store=store.engine.dialect.name)

    return app
