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

from voxgate.api.deps import RuntimeDep, User
from voxgate.api.errors import error_response
from voxgate.api.schemas import UNAUTHORIZED, PbxRegistration, registration_model
from voxgate.service import telephony
from voxgate.service.runtime import Runtime
from voxgate.store import pbx as store
from voxgate.store.pbx import PbxRecord
from voxgate.telephony.agent import Registration

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v2/pbx", tags=["pbx"])

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


def _instance(record: PbxRecord, runtime: Runtime) -> PbxInstance:
    config = record.config
    running = runtime.pbx_instances
    agent = running.agents.get(record.uuid) if running is not None else None
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


# -- endpoints -------------------------------------------------------------------------------------------


@router.post(
    "/",
    status_code=201,
    response_model=PbxInstance,
    summary="Add a PBX instance",
    description="Stores a SIP account to register with. It does not register until started.",
    responses={401: UNAUTHORIZED},
)
async def create_pbx(body: PbxCreate, user: User, runtime: RuntimeDep) -> PbxInstance:
    config = body.model_dump(exclude={"name", "password"})
    record = await store.create(runtime.store.sessions, body.name, config, body.password)
    log.info("PBX instance added", extra={"pbx": record.uuid, "host": body.host})
    return _instance(record, runtime)


@router.get("/", response_model=PbxList, summary="List PBX instances", responses={401: UNAUTHORIZED})
async def list_pbx(user: User, runtime: RuntimeDep) -> PbxList:
    records = await store.list_all(runtime.store.sessions)
    return PbxList(instances=[_instance(r, runtime) for r in records])


@router.get(
    "/{pbx_id}",
    response_model=PbxInstance,
    summary="A PBX instance and its registration",
    responses={401: UNAUTHORIZED, 404: PBX_NOT_FOUND},
)
async def get_pbx(pbx_id: str, user: User, runtime: RuntimeDep) -> PbxInstance:
    return _instance(await store.get(runtime.store.sessions, pbx_id), runtime)


@router.delete(
    "/{pbx_id}",
    status_code=204,
    summary="Remove a PBX instance",
    description="Stops it first if it runs (its calls are hung up, it unregisters).",
    responses={401: UNAUTHORIZED, 404: PBX_NOT_FOUND},
)
async def delete_pbx(pbx_id: str, user: User, runtime: RuntimeDep) -> None:
    record = await store.get(runtime.store.sessions, pbx_id)
    await runtime.pbx.stop(record.uuid)
    await store.delete(runtime.store.sessions, record.uuid)
    await telephony.announce_change(runtime.shared)


@router.post(
    "/{pbx_id}/start",
    response_model=PbxInstance,
    summary="Start a PBX instance",
    description="Binds its SIP port, registers (in the background: see `registration`) and takes calls. "
    "It stays started across server restarts until stopped.",
    responses={401: UNAUTHORIZED, 404: PBX_NOT_FOUND, 400: error_response("It cannot start.", "...")},
)
async def start_pbx(pbx_id: str, user: User, runtime: RuntimeDep) -> PbxInstance:
    record = await store.get(runtime.store.sessions, pbx_id)
    if runtime.telephony:  # with --workers, worker 0 runs the box's SIP agents (it hears the signal)
        await telephony.start_instance(runtime.pbx, record, runtime.settings)
    await store.set_started(runtime.store.sessions, record.uuid, True)
    await telephony.announce_change(runtime.shared)  # every node runs it
    return _instance(await store.get(runtime.store.sessions, pbx_id), runtime)


@router.post(
    "/{pbx_id}/stop",
    response_model=PbxInstance,
    summary="Stop a PBX instance",
    description="Hangs up its calls (their streams close), unregisters and closes its ports.",
    responses={401: UNAUTHORIZED, 404: PBX_NOT_FOUND},
)
async def stop_pbx(pbx_id: str, user: User, runtime: RuntimeDep) -> PbxInstance:
    record = await store.get(runtime.store.sessions, pbx_id)
    await runtime.pbx.stop(record.uuid)
    await store.set_started(runtime.store.sessions, record.uuid, False)
    await telephony.announce_change(runtime.shared)
    return _instance(await store.get(runtime.store.sessions, pbx_id), runtime)
