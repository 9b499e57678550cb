"""One router per resource. Each module has ``router`` and ``startup``/``shutdown`` hooks."""

from voxgate.api.routers import auth, logging, maintenance, streams, voiceprints

# order matters for startup: the account and profiles exist before streams start
MODULES = (auth, maintenance, logging, voiceprints, streams)

__all__ = ["MODULES"]
