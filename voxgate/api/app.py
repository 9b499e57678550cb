"""The FastAPI application: Swagger UI at ``/swagger/``, the OpenAPI document beside it.

Its lifespan is the runtime's: :meth:`Runtime.start` before the first request, :meth:`Runtime.stop` after
the last. The WebSocket door's connections are the only state the web layer holds itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel, Field

from voxgate import __version__
from voxgate.api import errors
from voxgate.api.aliases import PathAliases
from voxgate.api.cluster import NodeHeader
from voxgate.api.limits import OVERHEAD_BYTES, Limits, RequestLimits
from voxgate.api.monitoring import RequestMetrics
from voxgate.api.routers import ROUTERS, metrics, websocket
from voxgate.api.websocket.connection import WebSocketDoor
from voxgate.service.runtime import Runtime
from voxgate.settings import Settings, get_settings


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    version: str = Field(examples=["0.1.0"])
    store: str = Field(description="Database backend in use.", examples=["sqlite"])


def body_limits(settings: Settings) -> Limits:
    """The most body bytes each endpoint takes, counted before anything parses it."""
    uploads = {
        "/api/v2/import": settings.max_audio_bytes,  # all the recordings of one request together
        "/api/v2/snapshot/import": settings.max_snapshot_bytes,
        "/api/v2/maintenance/loadbackup": settings.max_snapshot_bytes,
        "/api/v2/maintenance/asp/": settings.max_profile_bytes,
    }

    def limit(method: str, path: str) -> int | None:
        if path.startswith("/api/v2/stream/HTTP/data/"):
            return None  # audio streams in: the route counts it as it feeds the stream
        if path in uploads:
            return uploads[path] + OVERHEAD_BYTES
        return settings.max_json_bytes

    return limit


def create_app(settings: Settings | None = None, *, telephony: bool = True) -> FastAPI:
    """``telephony=False``: stored PBX instances are not started here (``--workers``: worker 0 runs them)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings, telephony=telephony)
        await runtime.start()
        door = WebSocketDoor(runtime)
        runtime.streams.listen(on_stop=door.on_stop)
        websocket.redact_server_logs()
        app.state.runtime, app.state.door = runtime, door
        try:
            yield
        finally:
            door.hang_up_all()  # their streams close with the registry
            await runtime.stop()

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
    app.add_middleware(RequestLimits, limits=body_limits(settings))
    app.add_middleware(NodeHeader, node_id=settings.node_id)
    app.add_middleware(RequestMetrics)  # counts what the limits refuse too
    app.add_middleware(PathAliases)  # outermost: an alias is its original for everything inside
    for router in ROUTERS:
        app.include_router(router)

    @app.get("/health", response_model=Health, tags=["operations"], summary="Liveness and store check")
    async def health() -> Health:
        runtime: Runtime = app.state.runtime
        return Health(status="ok", version=__version__, store=runtime.store.engine.dialect.name)

    return app


def create_metrics_app(app: FastAPI) -> FastAPI:
    """The metrics listener's app (``VOXGATE_METRICS_PORT``): ``GET /metrics`` and nothing else, no token.

    It reads the runtime of ``app`` (they share ``state``), whose lifespan starts and stops it: this app has
    no lifespan and no API routes, so the metrics port never exposes the API, wherever it listens."""
    metrics_app = FastAPI(title="voxgate metrics", docs_url=None, redoc_url=None, openapi_url=None)
    metrics_app.state = app.state
    metrics_app.include_router(metrics.router)
    return metrics_app
