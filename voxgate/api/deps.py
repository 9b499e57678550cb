"""FastAPI dependencies shared by the routers: the runtime, the token check, maintenance mode."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from voxgate.api.errors import Unauthorized
from voxgate.service import maintenance
from voxgate.service.calibration import Calibrations
from voxgate.service.live import LiveFeed
from voxgate.service.runtime import Runtime
from voxgate.store import accounts


async def get_runtime(request: Request) -> Runtime:
    """Async, as every dependency here: a plain ``def`` would cost each request a trip through the thread pool."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_live(request: Request) -> LiveFeed:
    """The live view of this process's streams (made with the app's runtime, see ``create_app``)."""
    live: LiveFeed = request.app.state.live
    return live


LiveDep = Annotated[LiveFeed, Depends(get_live)]


async def get_calibrations(request: Request) -> Calibrations:
    """The calibration jobs of this process (made with the app's runtime, see ``create_app``)."""
    calibrations: Calibrations = request.app.state.calibrations
    return calibrations


CalibrationsDep = Annotated[Calibrations, Depends(get_calibrations)]


def token_from_header(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Token <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "token" or not token.strip():
        return None
    return token.strip()


# Declared as a security scheme so Swagger UI shows an "Authorize" button (enter `Token <token>`).
token_header = APIKeyHeader(
    name="Authorization",
    auto_error=False,
    scheme_name="Token",
    description="`Token <token>`, the key returned by `POST /rest-auth/login/`.",
)


async def require_token(
    runtime: RuntimeDep, authorization: Annotated[str | None, Depends(token_header)] = None
) -> str:
    """The username behind a valid, unexpired token; 401 otherwise."""
    token = token_from_header(authorization)
    if token is None:
        raise Unauthorized(
            "authentication credentials were not provided: send `Authorization: Token <token>`"
        )
    username = await accounts.user_for_token(runtime.store.sessions, token)
    if username is None:
        raise Unauthorized("invalid or expired token")
    return username


async def require_unlocked(runtime: RuntimeDep) -> None:
    maintenance.require_unlocked(runtime)


User = Annotated[str, Depends(require_token)]
Unlocked = Depends(require_unlocked)
