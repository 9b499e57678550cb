"""One router per resource. Each module has ``router`` and ``startup``/``shutdown`` hooks."""

from voxgate.api.routers import (
    auth,
    logging,
    maintenance,
    pbx,
    streams,
    subscriptions,
    voiceprints,
    websocket,
)

# order matters for startup: the account and profiles exist before streams start
# webhooks and the WebSocket door listen to streams
MODULES = (auth, maintenance, logging, voiceprints, streams, pbx, subscriptions, websocket)

__all__ = ["MODULES"]
