"""Audio in: decoding recordings and raw frames to mono float32, G.711, resampling, the telephone channel.

Everything below the doors speaks :class:`Audio` (or bare float32 samples with an explicit
``sample_rate_hz``); nothing here knows about HTTP, SIP or the store.
"""

from voxgate.audio.channel import telephone_channel
from voxgate.audio.decode import decode_bytes, decode_file
from voxgate.audio.frames import FrameBuffer, float_to_pcm16, pcm16_from_bytes, pcm16_to_float
from voxgate.audio.g711 import (
    alaw_decode,
    alaw_decode_float,
    alaw_encode,
    alaw_encode_float,
    ulaw_decode,
    ulaw_decode_float,
    ulaw_encode,
    ulaw_encode_float,
)
from voxgate.audio.resample import resample
from voxgate.audio.types import Audio, AudioLimits
from voxgate.audio.vad import SileroVad, SpeechSegment, VadState, net_speech_s, speech_segments

__all__ = [
    "Audio",
    "AudioLimits",
    "FrameBuffer",
    "SileroVad",
    "SpeechSegment",
    "VadState",
    "alaw_decode",
    "alaw_decode_float",
    "alaw_encode",
    "alaw_encode_float",
    "decode_bytes",
    "decode_file",
    "float_to_pcm16",
    "net_speech_s",
    "pcm16_from_bytes",
    "pcm16_to_float",
    "resample",
    "speech_segments",
    "telephone_channel",
    "ulaw_decode",
    "ulaw_decode_float",
    "ulaw_encode",
    "ulaw_encode_float",
]
