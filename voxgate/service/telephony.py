"""PBX instances as the runtime runs them: a stored record becomes a started SIP agent."""

from __future__ import annotations

import logging

from voxgate.errors import VoxgateError
from voxgate.service.shared import SharedState, Signal
from voxgate.settings import Settings
from voxgate.store.pbx import PbxRecord
from voxgate.telephony.agent import PbxConfig
from voxgate.telephony.instances import PbxInstances

log = logging.getLogger(__name__)


class PbxStartFailed(VoxgateError):
    """A PBX instance could not start here (its local SIP port is taken, a bad RTP range, ...)."""


def agent_config(record: PbxRecord, settings: Settings) -> PbxConfig:
    """The SIP agent's configuration: the stored instance plus this server's SIP addresses."""
    config = record.config
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


async def start_instance(instances: PbxInstances, record: PbxRecord, settings: Settings) -> None:
    try:
        await instances.start(agent_config(record, settings))
    except (OSError, ValueError) as exc:
        raise PbxStartFailed(f"PBX instance {record.uuid} cannot start: {exc}") from exc


async def start_stored(instances: PbxInstances, records: list[PbxRecord], settings: Settings) -> None:
    """At start-up: the instances that were started when the server stopped (a failure is logged)."""
    for record in records:
        if record.started:
            try:
                await start_instance(instances, record, settings)
            except PbxStartFailed as exc:
                log.error("%s", exc, extra={"pbx": record.uuid})


async def reconcile(instances: PbxInstances, records: list[PbxRecord], settings: Settings) -> None:
    """Run exactly the stored instances marked started: what every node does when another node started,
    stopped or removed one, or restored a backup (PBX instances are configured once, for the cluster)."""
    wanted = {record.uuid: record for record in records if record.started}
    for pbx_id in list(instances.agents):
        if pbx_id not in wanted:
            await instances.stop(pbx_id)
    await start_stored(instances, [r for r in wanted.values() if r.uuid not in instances.agents], settings)


async def announce_change(shared: SharedState) -> None:
    """Tell the other nodes that the stored PBX instances changed (after this node acted on them)."""
    await shared.announce(Signal.PBX)
