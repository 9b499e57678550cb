"""FastAPI dependencies shared by the routers: the running services, the token check, maintenance mode."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from voxgate.api.errors import MaintenanceMode, Unauthorized
from voxgate.api.state import Services
from voxgate.store import accounts


async def get_services(request: Request) -> Services:
    """Async, as every dependency here: a plain ``def`` would cost each request a trip through the thread pool."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


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
    services: ServicesDep, authorization: Annotated[str | None, Depends(token_header)] = None
) -> str:
    """The username behind a valid, unexpired token; 401 otherwise."""
    token = token_from_header(authorization)
    if token is None:
        raise Unauthorized(
            "authentication credentials were not provided: send `Authorization: Token <token>`"
        )
    username = await accounts.user_for_token(services.store.sessions, token)
    if username is None:
        raise Unauthorized("invalid or expired token")
    return username


async def require_unlocked(services: ServicesDep) -> None:
    if services.locked:
        raise MaintenanceMode("voxgate is in maintenance mode: unlock it with GET /api/v2/maintenance/unlock")


User = Annotated[str, Depends(require_token)]
Unlocked = Depends(require_unlocked)
