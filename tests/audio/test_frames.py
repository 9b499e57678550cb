"""Raw s16le frames: exact scaling, odd byte counts, and chunking that splits samples anywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxgate.audio import FrameBuffer, float_to_pcm16, pcm16_from_bytes, pcm16_to_float
from voxgate.errors import CorruptAudio

SPEECH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "speech"


@pytest.fixture(scope="module")
def speech_pcm16_bytes() -> bytes:
    path = sorted((SPEECH / "asterisk_ivr_voices_8k").glob("*/*.flac"))[0]
    pcm16, _ = sf.read(path, dtype="int16")
    return bytes(pcm16.astype("<i2").tobytes())


def test_pcm16_from_bytes_scales_by_32768() -> None:
    data = np.array([-32768, -1, 0, 1, 16384, 32767], dtype="<i2").tobytes()
    samples = pcm16_from_bytes(data)
    assert samples.dtype == np.float32
    assert samples.tolist() == [-1.0, -1 / 32768, 0.0, 1 / 32768, 0.5, 32767 / 32768]


def test_pcm16_from_bytes_matches_libsndfile_on_real_speech(speech_pcm16_bytes: bytes) -> None:
    path = sorted((SPEECH / "asterisk_ivr_voices_8k").glob("*/*.flac"))[0]
    expected, _ = sf.read(path, dtype="float32")
    assert np.array_equal(pcm16_from_bytes(speech_pcm16_bytes), expected)


def test_odd_byte_count_is_corrupt() -> None:
    with pytest.raises(CorruptAudio, match="even number of bytes"):
        pcm16_from_bytes(b"\x00\x01\x02")
    assert pcm16_from_bytes(b"").size == 0


def test_frame_buffer_reassembles_samples_split_anywhere(speech_pcm16_bytes: bytes) -> None:
    rng = np.random.default_rng(7)
    buffer = FrameBuffer()
    pieces = []
    position = 0
    while position < len(speech_pcm16_bytes):
        size = int(rng.choice([0, 1, 2, 3, 159, 160, 161, 1001]))
        chunk = speech_pcm16_bytes[position : position + size]
        position += size
        out = buffer.push(chunk)
        assert out.dtype == np.float32
        pieces.append(out)
        assert buffer.pending_bytes == position % 2 or position >= len(speech_pcm16_bytes)
    buffer.close()
    assert np.array_equal(np.concatenate(pieces), pcm16_from_bytes(speech_pcm16_bytes))


def test_frame_buffer_keeps_an_odd_byte_for_the_next_chunk() -> None:
    buffer = FrameBuffer()
    sample = np.array([-12345], dtype="<i2").tobytes()
    assert buffer.push(sample[:1]).size == 0
    assert buffer.pending_bytes == 1
    assert buffer.push(bytearray(sample[1:])).tolist() == [-12345 / 32768]
    assert buffer.pending_bytes == 0


def test_frame_buffer_close_reports_a_half_sample() -> None:
    buffer = FrameBuffer()
    buffer.push(b"\x01\x02\x03")
    with pytest.raises(CorruptAudio, match="middle of a 16-bit sample"):
        buffer.close()
    assert buffer.pending_bytes == 0


def test_float_to_pcm16_rounds_and_clips() -> None:
    every_int16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    assert np.array_equal(float_to_pcm16(pcm16_to_float(every_int16)), every_int16)
    assert float_to_pcm16([1.0, -1.0, 3.0, -3.0, 0.4 / 32768, 0.6 / 32768]).tolist() == [
        32767,
        -32768,
        32767,
        -32768,
        0,
        1,
    ]


def test_float_to_pcm16_refuses_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        float_to_pcm16(np.array([0.0, np.nan]))
