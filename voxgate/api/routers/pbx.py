"""PBX instances: the SIP accounts voxgate registers with to take a contact centre's calls.

An instance is stored configuration (host, account, RTP ports, codecs) plus whether it is started. A
started instance registers to its PBX like a phone and answers calls for its contact user; each call is
a ``SIP`` stream (see :mod:`voxgate.telephony`). Passwords go in, never out. Instances that were started
register again when the server restarts; shutdown hangs up their calls and unregisters.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field, StringConstraints, model_validator

from voxgate.api.deps import ServicesDep, User
from voxgate.api.errors import UNAUTHORIZED, BadRequest, NoCapacity, NotFound, error_response
from voxgate.api.state import Services
from voxgate.store import pbx as store
from voxgate.store.pbx import PbxNotFound, PbxRecord
from voxgate.telephony.agent import AgentOptions, PbxConfig, Registration
from voxgate.telephony.instances import PbxInstances

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v2/pbx", tags=["pbx"])

EXTRAS_KEY = "pbx"
Host = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\[\]_-]+$")]
Token = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\s<>@:;\"\x00-\x1f\x7f]+$")
]
Label = Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")]
Codec = Literal["PCMU", "PCMA"]
DEFAULT_CODECS: tuple[Codec, ...] = ("PCMU", "PCMA")
PBX_NOT_FOUND = error_response("No PBX instance with that id.", "no PBX instance '3f2b8c1e-...'")


class PbxCreate(BaseModel):
    name: Label = Field(default="", description="A label for people.", examples=["main PBX"])
    host: Host = Field(description="The PBX's (registrar's) address or name.", examples=["pbx.example.com"])
    port: int = Field(default=5060, ge=1, le=65535, description="Its SIP port.")
    transport: Literal["udp"] = Field(default="udp", description="SIP transport (UDP).")
    username: Token = Field(description="SIP account (authentication user).", examples=["voxgate"])
    password: str = Field(
        min_length=1, max_length=256, description="SIP password (write-only: never returned)."
    )
    domain: Host | None = Field(
        default=None,
        description="SIP domain of the account and digest realm it registers in; the host when unset.",
        examples=["example.com"],
    )
    expires: int = Field(default=300, ge=10, le=86400, description="Registration expiry asked for, s.")
    contact_user: Token | None = Field(
        default=None,
        description="User part calls arrive for; the username when unset.",
        examples=["recorder"],
    )
    rtp_port_min: int = Field(default=20000, ge=1024, le=65535, description="Lowest RTP port of its calls.")
    rtp_port_max: int = Field(default=20999, ge=1024, le=65535, description="Highest RTP port of its calls.")
    codecs: list[Codec] = Field(
        default_factory=lambda: list(DEFAULT_CODECS),
        min_length=1,
        max_length=2,
        description="Codecs accepted, preferred first (G.711 µ-law PCMU = 0, A-law PCMA = 8, at 8 kHz).",
    )
    local_port: int = Field(
        default=0, ge=0, le=65535, description="Local SIP port; 0 picks a free one at each start."
    )

    @model_validator(mode="after")
    def _check(self) -> PbxCreate:
        if self.rtp_port_min > self.rtp_port_max or self.rtp_port_max - self.rtp_port_min < 1:
            raise ValueError("rtp_port_min must be below rtp_port_max (each call takes an even port)")
        if len(set(self.codecs)) != len(self.codecs):
            raise ValueError("codecs must not repeat")
        return self


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


class PbxInstance(BaseModel):
    id: str = Field(description="The instance's id.")
    name: str
    host: str
    port: int
    transport: str
    username: str
    domain: str | None
    expires: int
    contact_user: str | None
    rtp_port_min: int
    rtp_port_max: int
    codecs: list[str]
    local_port: int
    started: bool = Field(description="Started (registers, takes calls, comes back after a restart).")
    created: datetime
    registration: PbxRegistration
    sip_port: int | None = Field(default=None, description="The local SIP port in use while started.")
    calls: int = Field(default=0, description="Calls in progress.")


class PbxList(BaseModel):
    instances: list[PbxInstance]


# -- helpers --------------------------------------------------------------------------------------------


def instances(services: Services) -> PbxInstances:
    running = services.extras.get(EXTRAS_KEY)
    if not isinstance(running, PbxInstances):
        raise NoCapacity("telephony is not running (the server is starting or stopping)")
    return running


def registration_model(registration: Registration) -> PbxRegistration:
    return PbxRegistration(
        state=registration.state,  # type: ignore[arg-type]
        reason=registration.reason,
        registered_until=registration.registered_until,
        next_refresh=registration.next_refresh,
    )


def registration_states(services: Services) -> dict[str, PbxRegistration]:
    """The registration of every started instance, by id (for ``/api/v2/status``)."""
    running = services.extras.get(EXTRAS_KEY)
    if not isinstance(running, PbxInstances):
        return {}
    return {pbx_id: registration_model(agent.registration) for pbx_id, agent in running.agents.items()}


def agent_config(record: PbxRecord, services: Services) -> PbxConfig:
    config = record.config
    settings = services.settings
    return PbxConfig(
        id=record.uuid,
        host=str(config["host"]),
        port=int(config.get("port", 5060)),
        transport=str(config.get("transport", "udp")),
        username=str(config["username"]),
        password=record.password,
        domain=config.get("domain"),
        expires_s=int(config.get("expires", 300)),
        contact_user=config.get("contact_user"),
        rtp_port_min=int(config.get("rtp_port_min", 20000)),
        rtp_port_max=int(config.get("rtp_port_max", 20999)),
        codecs=list(config.get("codecs", ["PCMU", "PCMA"])),
        local_host=settings.sip_bind_host,
        local_port=int(config.get("local_port", 0)),
        public_host=settings.sip_public_host,
    )


def _instance(record: PbxRecord, services: Services) -> PbxInstance:
    config = record.config
    running = services.extras.get(EXTRAS_KEY)
    agent = running.agents.get(record.uuid) if isinstance(running, PbxInstances) else None
    return PbxInstance(
        id=record.uuid,
        name=record.name,
        host=config["host"],
        port=config.get("port", 5060),
        transport=config.get("transport", "udp"),
        username=config["username"],
        domain=config.get("domain"),
        expires=config.get("expires", 300),
        contact_user=config.get("contact_user"),
        rtp_port_min=config.get("rtp_port_min", 20000),
        rtp_port_max=config.get("rtp_port_max", 20999),
        codecs=config.get("codecs", ["PCMU", "PCMA"]),
        local_port=config.get("local_port", 0),
        started=record.started,
        created=record.created,
        registration=registration_model(agent.registration if agent is not None else Registration()),
        sip_port=agent.local_port if agent is not None else None,
        calls=agent.calls if agent is not None else 0,
    )


async def _record(services: Services, pbx_id: str) -> PbxRecord:
    try:
        return await store.get(services.store.sessions, pbx_id)
    except PbxNotFound as exc:
        raise NotFound(exc.message) from exc


async def _start(services: Services, record: PbxRecord) -> None:
    try:
        await instances(services).start(agent_config(record, services))
    except (OSError, ValueError) as exc:  # the local SIP port is taken, a bad RTP range...
        raise BadRequest(f"PBX instance {record.uuid} cannot start: {exc}") from exc


# -- endpoints -------------------------------------------------------------------------------------------


@router.post(
    "/",
    status_code=201,
    response_model=PbxInstance,
    summary="Add a PBX instance",
    description="Stores a SIP account to register with. It does not register until started.",
    responses={401: UNAUTHORIZED},
)
async def create_pbx(body: PbxCreate, user: User, services: ServicesDep) -> PbxInstance:
    config = body.model_dump(exclude={"name", "password"})
    record = await store.create(services.store.sessions, body.name, config, body.password)
    log.info("PBX instance added", extra={"pbx": record.uuid, "host": body.host})
    return _instance(record, services)


@router.get("/", response_model=PbxList, summary="List PBX instances", responses={401: UNAUTHORIZED})
async def list_pbx(user: User, services: ServicesDep) -> PbxList:
    records = await store.list_all(services.store.sessions)
    return PbxList(instances=[_instance(r, services) for r in records])


@router.get(
    "/{pbx_id}",
    response_model=PbxInstance,
    summary="A PBX instance and its registration",
    responses={401: UNAUTHORIZED, 404: PBX_NOT_FOUND},
)
async def get_pbx(pbx_id: str, user: User, services: ServicesDep) -> PbxInstance:
    return _instance(await _record(services, pbx_id), services)


@router.delete(
    "/{pbx_id}",
    status_code=204,
    summary="Remove a PBX instance",
    description="Stops it first if it runs (its calls are hung up, it unregisters).",
    responses={401: UNAUTHORIZED, 404: PBX_NOT_FOUND},
)
async def delete_pbx(pbx_id: str, user: User, services: ServicesDep) -> None:
    record = await _record(services, pbx_id)
    await instances(services).stop(record.uuid)
    await store.delete(services.store.sessions, record.uuid)


@router.post(
    "/{pbx_id}/start",
    response_model=PbxInstance,
    summary="Start a PBX instance",
    description="Binds its SIP port, registers (in the background: see `registration`) and takes calls. "
    "It stays started across server restarts until stopped.",
    responses={401: UNAUTHORIZED, 404: PBX_NOT_FOUND, 400: error_response("It cannot start.", "...")},
)
async def start_pbx(pbx_id: str, user: User, services: ServicesDep) -> PbxInstance:
    record = await _record(services, pbx_id)
    await _start(services, record)
    await store.set_started(services.store.sessions, record.uuid, True)
    return _instance(await _record(services, pbx_id), services)


@router.post(
    "/{pbx_id}/stop",
    response_model=PbxInstance,
    summary="Stop a PBX instance",
    description="Hangs up its calls (their streams close), unregisters and closes its ports.",
    responses={401: UNAUTHORIZED, 404: PBX_NOT_FOUND},
)
async def stop_pbx(pbx_id: str, user: User, services: ServicesDep) -> PbxInstance:
    record = await _record(services, pbx_id)
    await instances(services).stop(record.uuid)
    await store.set_started(services.store.sessions, record.uuid, False)
    return _instance(await _record(services, pbx_id), services)


# -- lifecycle -------------------------------------------------------------------------------------------


async def startup(services: Services) -> None:
    """Start the instances that were started when the server stopped (after the stream registry)."""
    if services.streams is None:
        raise RuntimeError("the stream registry must start before telephony")
    settings = services.settings
    running = PbxInstances(
        services.streams,
        AgentOptions(rtp_timeout_s=settings.rtp_timeout_s),
        admit=lambda: not services.locked,
    )
    services.extras[EXTRAS_KEY] = running
    for record in await store.list_all(services.store.sessions):
        if record.started:
            try:
                await running.start(agent_config(record, services))
            except (OSError, ValueError) as exc:
                log.error("PBX instance %s did not start: %s", record.uuid, exc, extra={"pbx": record.uuid})


async def shutdown(services: Services) -> None:
    """Hang up every call and unregister every instance (before the stream registry stops)."""
    running = services.extras.pop(EXTRAS_KEY, None)
    if isinstance(running, PbxInstances):
        await running.stop_all()
