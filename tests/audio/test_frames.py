"""Raw s16le frames: exact scaling, odd byte counts, chunking that splits samples and frames anywhere, and
the one channel taken of interleaved ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

from voxgate.audio import FrameBuffer, float_to_pcm16, pcm16_from_bytes, pcm16_to_float
from voxgate.audio.frames import pick_channel
from voxgate.errors import CorruptAudio, MultiChannelAudio

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


def pushed_in_pieces(buffer: FrameBuffer, data: bytes, frame_bytes: int) -> NDArray[np.float32]:
    """Everything ``buffer`` makes of ``data`` pushed in pieces that split samples and frames anywhere."""
    rng = np.random.default_rng(7)
    pieces = []
    position = 0
    while position < len(data):
        size = int(rng.choice([0, 1, 2, 3, 159, 160, 161, 1001]))
        position += size
        out = buffer.push(data[position - size : position])
        assert out.dtype == np.float32
        pieces.append(out)
        assert buffer.pending_bytes == position % frame_bytes or position >= len(data)
    buffer.close()
    return np.concatenate(pieces)


def test_frame_buffer_reassembles_samples_split_anywhere(speech_pcm16_bytes: bytes) -> None:
    out = pushed_in_pieces(FrameBuffer(), speech_pcm16_bytes, 2)
    assert np.array_equal(out, pcm16_from_bytes(speech_pcm16_bytes))


def test_frame_buffer_takes_one_channel_of_interleaved_frames(speech_pcm16_bytes: bytes) -> None:
    speech = np.frombuffer(speech_pcm16_bytes, dtype="<i2")
    other = speech[::-1]  # another signal on the other channel
    stereo = np.stack([other, speech], axis=1).astype("<i2").tobytes()  # (frames, 2), interleaved
    for channel, expected in ((1, speech), (0, other)):
        out = pushed_in_pieces(FrameBuffer(channels=2, channel=channel), stereo, 4)
        assert np.array_equal(out, pcm16_to_float(expected)), channel
    three = np.stack([other, other, speech], axis=1).astype("<i2").tobytes()
    assert np.array_equal(pushed_in_pieces(FrameBuffer(3, 2), three, 6), pcm16_to_float(speech))


def test_frame_buffer_close_reports_a_partial_frame() -> None:
    buffer = FrameBuffer(channels=2, channel=1)
    assert buffer.push(b"\x01\x02\x03\x04\x05").tolist() == [0x0403 / 32768]
    assert buffer.pending_bytes == 1
    with pytest.raises(CorruptAudio, match=r"middle of a frame of 2 16-bit samples \(1 byte left over\)"):
        buffer.close()
    with pytest.raises(ValueError, match="channel 2 of 2"):
        FrameBuffer(channels=2, channel=2)


def test_pick_channel_never_guesses() -> None:
    assert pick_channel(1, None, "call.raw") == 0
    assert pick_channel(2, 1, "call.raw") == 1
    with pytest.raises(MultiChannelAudio, match=r"call.raw has 2 channels; .* name the channel .*\(0\.\.1\)"):
        pick_channel(2, None, "call.raw")
    with pytest.raises(MultiChannelAudio, match=r"channel 2 does not exist \(valid: 0\.\.1\)"):
        pick_channel(2, 2, "call.raw")
    with pytest.raises(CorruptAudio, match="declares 0 channels"):
        pick_channel(0, None, "call.raw")


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
