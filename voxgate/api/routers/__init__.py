"""One router per resource: tables of endpoints that call the service layer. No router imports another
or owns a lifecycle (the runtime does, see :mod:`voxgate.service.runtime`)."""

from fastapi import APIRouter

from voxgate.api.routers import (
    auth,
    bots,
    logging,
    maintenance,
    pbx,
    streams,
    subscriptions,
    voiceprints,
    websocket,
)

ROUTERS: tuple[APIRouter, ...] = tuple(
    m.router for m in (auth, maintenance, logging, voiceprints, streams, pbx, subscriptions, bots, websocket)
)

__all__ = ["ROUTERS"]
