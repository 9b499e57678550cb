"""A simulated telephone channel, for accuracy figures on "what would this caller sound like on a call"."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from voxgate.audio.g711 import alaw_decode_float, alaw_encode_float, ulaw_decode_float, ulaw_encode_float
from voxgate.audio.resample import resample

TELEPHONE_RATE_HZ = 8000


def telephone_channel(
    samples: ArrayLike, sample_rate_hz: int, law: Literal["ulaw", "alaw"] = "ulaw"
) -> tuple[NDArray[np.float32], int]:
    """Resample to 8 kHz and pass through a G.711 encode/decode round trip -> ``(samples_8k, 8000)``.

    Models the codec and band limit of a PSTN call (PCMU in North America/Japan, PCMA elsewhere). It does
    not add the 300 Hz high-pass, packet loss or line noise of a real call.
    """
    if law == "ulaw":
        encode, decode = ulaw_encode_float, ulaw_decode_float
    elif law == "alaw":
        encode, decode = alaw_encode_float, alaw_decode_float
    else:
        raise ValueError(f"law must be 'ulaw' or 'alaw', got {law!r}")
    narrowband = resample(samples, sample_rate_hz, TELEPHONE_RATE_HZ)
    return decode(encode(narrowband)), TELEPHONE_RATE_HZ
