"""A call's media side: its RTP port, and the stream its audio feeds.

Each answered call opens one ``SIP`` stream in the registry (info ``callid``, ``caller``, ``callee``,
``pbx``), so ``POST /api/v2/streams`` finds the stream uuid by call id. RTP audio reaches the stream through the
shared :class:`~voxgate.streams.feeder.Feeder` (batches, a bounded queue, its own feeding task): the
socket callback only offers samples. RTP arrives in real time and cannot be slowed, so when the stream
falls ``max_backlog_s`` behind, the oldest queued audio is dropped and counted (the stream's
``dropped_s``). A feed that fails closes the stream with reason ``error``; the call itself goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Protocol

from voxgate.audio.types import FloatArray
from voxgate.errors import VoxgateError
from voxgate.streams.feeder import Feeder
from voxgate.streams.session import InfoValue, StreamNotFound, StreamType
from voxgate.telephony.rtp import RtpReceiver

log = logging.getLogger(__name__)

FEED_FAILED = "error"  # close reason of a call's stream whose audio could not be fed


class CallStream(Protocol):
    """What a call needs of a live stream (:class:`~voxgate.streams.session.StreamSession` is one)."""

    uuid: str
    sample_rate_hz: int
    max_backlog_s: float
    closed: bool
    dropped_s: float

    async def feed(self, samples: FloatArray) -> None: ...

    def touch(self) -> None: ...


class StreamOpener(Protocol):
    """What a call needs of the stream registry (:class:`~voxgate.streams.registry.StreamRegistry`)."""

    async def create(
        self,
        type: StreamType,
        sample_rate_hz: int,
        info: Mapping[str, InfoValue] | None = None,
        *,
        uuid: str | None = None,
    ) -> CallStream: ...

    async def close(self, stream_uuid: str, reason: str = "closed") -> object: ...


class NoRtpPort(VoxgateError):
    """Every port of the configured RTP range is in use."""


class PortPool:
    """Even RTP ports of ``[low, high]`` handed out round-robin; a port busy elsewhere is skipped."""

    def __init__(self, low: int, high: int) -> None:
        if not 0 < low <= high < 65536:
            raise ValueError(f"bad RTP port range {low}-{high}")
        self.ports = list(range(low + low % 2, high + 1, 2))
        if not self.ports:
            raise ValueError(f"the RTP port range {low}-{high} holds no even port")
        self.in_use: set[int] = set()
        self._next = 0

    async def open(self, host: str, receiver: RtpReceiver) -> tuple[asyncio.DatagramTransport, int]:
        loop = asyncio.get_running_loop()
        for _ in range(len(self.ports)):
            port = self.ports[self._next]
            self._next = (self._next + 1) % len(self.ports)
            if port in self.in_use:
                continue
            try:
                transport, _ = await loop.create_datagram_endpoint(lambda: receiver, local_addr=(host, port))
            except OSError:
                continue  # taken by another process or another PBX instance
            self.in_use.add(port)
            return transport, port
        raise NoRtpPort(f"no free RTP port in {self.ports[0]}-{self.ports[-1]}")

    def release(self, port: int) -> None:
        self.in_use.discard(port)


def call_feeder(stream: CallStream, streams: StreamOpener) -> Feeder[CallStream]:
    """The feeder of a call's stream. The RTP socket callback calls its ``offer`` (never waits); a feed
    that fails is logged and closes the stream with reason ``error``."""

    async def failed(exc: Exception) -> None:
        log.error("feeding call audio failed: %s", exc, exc_info=exc, extra={"stream_uuid": stream.uuid})
        if not stream.closed:
            with contextlib.suppress(StreamNotFound):
                await streams.close(stream.uuid, FEED_FAILED)

    return Feeder(stream, on_failure=failed, name="sip-feed")
