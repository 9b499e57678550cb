"""A call's stream is fed by the shared feeder: RTP is offered (never waits); a failed feed closes it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from tests.telephony import peers
from tests.telephony.conftest import FakeRegistry
from voxgate.streams.session import StreamType
from voxgate.telephony.calls import FEED_FAILED, call_feeder


@pytest.mark.asyncio
async def test_a_failed_feed_closes_the_calls_stream_and_is_logged(
    speech_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = FakeRegistry()
    stream = await registry.create(StreamType.SIP, 8000, {"callid": "c-1"})
    audio = (peers.speech_8k(speech_dir, "3080", 2.0) / 32768).astype(np.float32)

    async def broken(samples: npt.NDArray[np.float32]) -> None:
        raise ValueError("the analysis broke")

    stream.feed = broken  # type: ignore[method-assign]
    feeder = call_feeder(stream, registry)
    with caplog.at_level(logging.ERROR, logger="voxgate.telephony.calls"):
        for i in range(0, audio.size, 160):  # 20 ms packets from the RTP socket callback
            feeder.offer(audio[i : i + 160])
        await asyncio.wait_for(feeder.finish(), 5)
    assert stream.closed and stream.reason == FEED_FAILED
    assert any("the analysis broke" in r.getMessage() for r in caplog.records)
    feeder.offer(audio[:160])  # later RTP of the call goes nowhere, quietly
    assert feeder.done
