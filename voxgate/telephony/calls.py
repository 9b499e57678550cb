"""A call's media side: its RTP port, and the stream its audio feeds.

Each answered call opens one ``SIP`` stream in the registry (info ``callid``, ``caller``, ``callee``,
``pbx``), so ``POST /api/v2/streams`` finds the stream uuid by call id. RTP audio reaches the stream in
batches of ``BATCH_S`` (one worker-thread hop per batch, not per 20 ms packet); a batch queue between the
socket and the stream keeps the event loop free: the socket callback only appends samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from voxgate.errors import VoxgateError
from voxgate.streams.session import InfoValue, StreamNotFound, StreamType
from voxgate.telephony.rtp import SAMPLE_RATE_HZ, FloatArray, RtpReceiver

log = logging.getLogger(__name__)

BATCH_S = 0.25  # audio handed to the stream at once
MAX_QUEUED_S = 60.0  # audio waiting for a slow stream beyond this is dropped (oldest first)


class CallStream(Protocol):
    """What a call needs of a live stream (:class:`~voxgate.streams.session.StreamSession` is one)."""

    uuid: str
    closed: bool

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


class CallAudio:
    """RTP samples -> batches -> ``stream.feed``, in order, off the socket callback."""

    def __init__(self, stream: CallStream, sample_rate_hz: int = SAMPLE_RATE_HZ) -> None:
        self.stream = stream
        self.batch_samples = round(BATCH_S * sample_rate_hz)
        self.max_queued = max(1, round(MAX_QUEUED_S / BATCH_S))
        self.dropped_samples = 0
        self.fed_samples = 0
        self._pending: list[FloatArray] = []
        self._pending_samples = 0
        self._queue: asyncio.Queue[FloatArray | None] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._feed(), name=f"sip-feed-{stream.uuid}")

    def sink(self, samples: FloatArray) -> None:
        """Called from the RTP socket callback: only collects (never blocks the event loop)."""
        self._pending.append(samples)
        self._pending_samples += samples.size
        if self._pending_samples >= self.batch_samples:
            self._enqueue()

    def _enqueue(self) -> None:
        if not self._pending:
            return
        batch = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_samples = [], 0
        if self._queue.qsize() >= self.max_queued:
            with contextlib.suppress(asyncio.QueueEmpty):
                old = self._queue.get_nowait()
                if old is not None:
                    self.dropped_samples += old.size
                    log.warning(
                        "stream falls behind its call: audio dropped", extra={"stream_uuid": self.stream.uuid}
                    )
        self._queue.put_nowait(batch)

    async def _feed(self) -> None:
        while True:
            batch = await self._queue.get()
            if batch is None:
                return
            if self.stream.closed:
                continue
            try:
                await self.stream.feed(batch)
                self.fed_samples += batch.size
            except StreamNotFound:  # closed under us (maintenance, shutdown): the call ends anyway
                continue
            except Exception:  # a broken batch must not stop the call's later audio
                log.exception("feeding call audio failed", extra={"stream_uuid": self.stream.uuid})

    async def finish(self) -> None:
        """Hand over what is pending and wait until the stream has it all."""
        self._enqueue()
        self._queue.put_nowait(None)
        await self._task
