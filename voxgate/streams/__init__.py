"""Live streams: the per-stream engine (:class:`StreamSession`) and the registry of running streams."""

from voxgate.streams.registry import StreamRegistry
from voxgate.streams.session import (
    CHUNK_S,
    StreamCapacity,
    StreamClosed,
    StreamError,
    StreamExists,
    StreamNotFound,
    StreamSession,
    StreamType,
)

__all__ = [
    "CHUNK_S",
    "StreamCapacity",
    "StreamClosed",
    "StreamError",
    "StreamExists",
    "StreamNotFound",
    "StreamRegistry",
    "StreamSession",
    "StreamType",
]
