"""Schema pieces and OpenAPI examples that several routers share (so that no router imports another)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from voxgate.api.errors import error_response
from voxgate.service.maintenance import LOCK_HINT
from voxgate.service.runtime import Runtime
from voxgate.telephony.agent import Registration

UNAUTHORIZED = error_response("No token, or an invalid or expired one.", "invalid or expired token")
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {401: UNAUTHORIZED}
LOCKED = error_response("Maintenance mode.", LOCK_HINT)

MAX_INFO_KEYS = 64
InfoKey = Annotated[str, StringConstraints(min_length=1, max_length=128)]
InfoValue = (
    Annotated[str, StringConstraints(max_length=1024)]
    | bool
    | int
    | Annotated[float, Field(allow_inf_nan=False)]
)
Info = dict[InfoKey, InfoValue]

INFO_EXAMPLE = {"source_uuid": "crm-line-7", "callid": "a84b4c76e66710", "caller": "+420123456789"}
UUID_EXAMPLE = "3f2b8c1e-7d4a-4e8b-9c0d-5a6b7c8d9e0f"

STREAM_NOT_FOUND = error_response(
    "No running stream with that uuid (never opened, closed, timed out, or not a uuid).",
    f"no running HTTP stream {UUID_EXAMPLE} (never opened, closed, or timed out)",
)


# -- PBX registration (the PBX instances and the server status show it) --------------------------------


class PbxRegistration(BaseModel):
    state: Literal["stopped", "registering", "registered", "failed"] = Field(
        description="`registered`; `registering` (first attempt under way); `failed` (retrying with "
        "backoff, see `reason`); `stopped`.",
    )
    reason: str | None = Field(default=None, description="Why the last registration failed.")
    registered_until: datetime | None = Field(default=None, description="When the registration expires.")
    next_refresh: datetime | None = Field(
        default=None, description="When it is refreshed (or retried after a failure)."
    )


def registration_model(registration: Registration) -> PbxRegistration:
    return PbxRegistration(
        state=registration.state,  # type: ignore[arg-type]
        reason=registration.reason,
        registered_until=registration.registered_until,
        next_refresh=registration.next_refresh,
    )


def registration_states(runtime: Runtime) -> dict[str, PbxRegistration]:
    """The registration of every started instance, by id (for ``/api/v2/status``)."""
    running = runtime.pbx_instances
    if running is None:
        return {}
    return {pbx_id: registration_model(agent.registration) for pbx_id, agent in running.agents.items()}
