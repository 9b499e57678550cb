"""Decoding: every format voxgate claims, made from real speech here, decodes to that speech; every bad
input ends in its typed error, quickly.

Match bounds are measured on the two sources below (16 kHz LibriSpeech, 8 kHz Asterisk prompt) and set
with margin; the measured values are in the comments, as 16 kHz / 8 kHz.
"""

from __future__ import annotations

import functools
import io
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from numpy.typing import NDArray

import voxgate.audio
from voxgate.audio import (
    Audio,
    AudioLimits,
    alaw_decode_float,
    decode_bytes,
    decode_file,
    resample,
    ulaw_decode_float,
)
from voxgate.audio import decode as decode_module
from voxgate.errors import (
    AudioError,
    AudioTooLarge,
    AudioTooLong,
    BadSampleRate,
    CorruptAudio,
    EmptyAudio,
    MultiChannelAudio,
    UnsupportedAudio,
)
from voxgate.settings import Settings

SPEECH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "speech"
LIMITS = AudioLimits(max_bytes=50_000_000, max_duration_s=600.0)


# --- sources and writers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    samples: NDArray[np.float32]  # (samples,) exact 16-bit values, so lossless formats must match exactly
    rate_hz: int
    name: str


@functools.cache
def _load(folder: str, index: int = 0, max_s: float = 8.0) -> Source:
    paths = sorted((SPEECH / folder).glob("*/*.flac"))
    if not paths:
        pytest.fail(f"real speech is missing: expected FLAC files under {SPEECH / folder}")
    pcm16, rate_hz = sf.read(paths[index], dtype="int16")
    samples = (pcm16[: int(rate_hz * max_s)] / np.float32(32768)).astype(np.float32)
    return Source(samples, int(rate_hz), paths[index].name)


SOURCE_FOLDERS = {16000: "librispeech_test_other", 8000: "asterisk_ivr_voices_8k"}  # wideband, telephone


@pytest.fixture(scope="module", params=list(SOURCE_FOLDERS), ids=lambda rate_hz: f"{rate_hz // 1000}k")
def source(request: pytest.FixtureRequest) -> Source:
    return _load(SOURCE_FOLDERS[request.param])


@pytest.fixture(scope="module")
def wideband() -> Source:
    return _load("librispeech_test_other")


@pytest.fixture(scope="module")
def wideband_wav(wideband: Source) -> bytes:
    return write_soundfile(wideband.samples, wideband.rate_hz, "WAV", "PCM_16")


def write_soundfile(samples: NDArray[np.float32], rate_hz: int, fmt: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate_hz, format=fmt, subtype=subtype)
    return buffer.getvalue()


def write_pyav(
    channels: list[NDArray[np.float32]],
    rate_hz: int,
    container_format: str,
    codec: str,
    path: Path | None = None,
    **container_options: str,
) -> bytes:
    """Encode with ffmpeg; ``path`` for muxers that rewrite their output (MP4 faststart)."""
    layout = "mono" if len(channels) == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(path or buffer, "w", format=container_format, options=container_options) as container:
        stream = container.add_stream(codec, rate=rate_hz)
        assert isinstance(stream, av.audio.stream.AudioStream)
        stream.layout = layout
        context = stream.codec_context
        frame = av.AudioFrame.from_ndarray(np.stack(channels), format="fltp", layout=layout)
        frame.sample_rate = rate_hz
        resampler = av.AudioResampler(
            format=context.format.name, layout=layout, rate=rate_hz, frame_size=context.frame_size or None
        )
        for converted in [*resampler.resample(frame), *resampler.resample(None)]:
            container.mux(stream.encode(converted))
        container.mux(stream.encode(None))
    return path.read_bytes() if path is not None else buffer.getvalue()


# --- matching decoded audio against its source ------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """How close a decode must be: ``exact``, or a maximum sample error, or lossy bounds after
    aligning encoder delay (lag searched within ``max_lag`` samples)."""

    exact: bool = False
    max_error: float | None = None
    min_snr_db: float | None = None
    min_correlation: float | None = None
    max_lag: int = 0


def measure(
    reference: NDArray[np.float32], decoded: NDArray[np.float32], max_lag: int
) -> tuple[int, float, float]:
    """(lag, SNR dB, correlation) of ``decoded[n + lag]`` against ``reference[n]``, best lag by FFT
    cross-correlation."""
    if max_lag:
        size = len(reference) + len(decoded)
        cross = np.fft.irfft(np.fft.rfft(decoded, size) * np.conj(np.fft.rfft(reference, size)), size)
        lags = np.r_[np.arange(0, max_lag + 1), np.arange(-max_lag, 0)]
        lag = int(lags[np.argmax(cross[lags])])
    else:
        lag = 0
    start = max(0, -lag)
    count = min(len(reference) - start, len(decoded) - lag - start)
    ref = reference[start : start + count].astype(np.float64)
    out = decoded[start + lag : start + lag + count].astype(np.float64)
    error = np.sum((ref - out) ** 2)
    snr_db = float("inf") if error == 0 else float(10 * np.log10(np.sum(ref**2) / error))
    correlation = float(np.dot(ref, out) / np.sqrt(np.dot(ref, ref) * np.dot(out, out)))
    return lag, snr_db, correlation


def assert_matches(audio: Audio, source: Source, match: Match) -> None:
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    # block codecs pad the last block; delayed codecs add their delay in front
    extra_s = audio.duration_s - len(source.samples) / source.rate_hz
    assert -0.01 < extra_s < 0.15 + match.max_lag / source.rate_hz, f"{extra_s:+.3f} s"
    decoded = audio.samples
    if audio.sample_rate_hz != source.rate_hz:  # Opus in WebM always decodes at 48 kHz
        decoded = resample(decoded, audio.sample_rate_hz, source.rate_hz)
    if match.exact:
        assert np.array_equal(decoded, source.samples)
        return
    if match.max_error is not None:
        assert len(decoded) == len(source.samples)
        assert float(np.max(np.abs(decoded - source.samples))) <= match.max_error
        return
    lag, snr_db, correlation = measure(source.samples, decoded, match.max_lag)
    assert abs(lag) <= match.max_lag
    if match.min_snr_db is not None:
        assert snr_db >= match.min_snr_db, f"SNR {snr_db:.2f} dB (lag {lag})"
    if match.min_correlation is not None:
        assert correlation >= match.min_correlation, f"correlation {correlation:.4f} (lag {lag})"


@dataclass(frozen=True)
class Case:
    write: Callable[[Source, Path], bytes]
    container: str
    codec: str
    match: Match
    rates_hz: tuple[int, ...] = (16000, 8000)


def _sf(fmt: str, subtype: str) -> Callable[[Source, Path], bytes]:
    return lambda s, _: write_soundfile(s.samples, s.rate_hz, fmt, subtype)


def _av(container_format: str, codec: str) -> Callable[[Source, Path], bytes]:
    return lambda s, _: write_pyav([s.samples], s.rate_hz, container_format, codec)


# Measured (SNR dB, 16 kHz / 8 kHz source) -> bound asserted:
#   PCM_U8 max error 0.0078 both (libsndfile truncates to 8 bits) -> 1/128; 16-bit and wider, FLAC: exact
#   A-law 37.3 / 37.5, µ-law 37.2 / 37.3 -> 34      IMA ADPCM 25.1 / 23.1 -> 20     MS ADPCM 22.9 / 19.7 -> 16
#   GSM 6.10 13.2 / 15.9 and correlation 0.976 / 0.987 -> 9 dB and 0.95 (a vocoder keeps the waveform loosely)
#   Vorbis 22.5 / 27.6 -> 17     Opus (Ogg) 18.2 / 21.0 -> 13     MP3 22.4 / 25.2 -> 17
#   AAC (M4A) 37.8 / 33.1 -> 28, at lag 1024: PyAV's muxer records no priming in the edit list
#   Opus (WebM, decoded at 48 kHz and resampled back) 21.2 / 37.5 -> 15
#   AMR-NB 12.2 kbit/s (8 kHz only) correlation 0.821 at lag 39 (encoder delay) -> 0.75; SNR only 4.6 dB
FORMATS: dict[str, Case] = {
    "wav-pcm-u8": Case(_sf("WAV", "PCM_U8"), "WAV", "PCM_U8", Match(max_error=1 / 128)),
    "wav-pcm-16": Case(_sf("WAV", "PCM_16"), "WAV", "PCM_16", Match(exact=True)),
    "wav-pcm-24": Case(_sf("WAV", "PCM_24"), "WAV", "PCM_24", Match(exact=True)),
    "wav-pcm-32": Case(_sf("WAV", "PCM_32"), "WAV", "PCM_32", Match(exact=True)),
    "wav-float": Case(_sf("WAV", "FLOAT"), "WAV", "FLOAT", Match(exact=True)),
    "wav-alaw": Case(_sf("WAV", "ALAW"), "WAV", "ALAW", Match(min_snr_db=34)),
    "wav-ulaw": Case(_sf("WAV", "ULAW"), "WAV", "ULAW", Match(min_snr_db=34)),
    "wav-ima-adpcm": Case(_sf("WAV", "IMA_ADPCM"), "WAV", "IMA_ADPCM", Match(min_snr_db=20)),
    "wav-ms-adpcm": Case(_sf("WAV", "MS_ADPCM"), "WAV", "MS_ADPCM", Match(min_snr_db=16)),
    "wav-gsm610": Case(_sf("WAV", "GSM610"), "WAV", "GSM610", Match(min_snr_db=9, min_correlation=0.95)),
    "flac": Case(_sf("FLAC", "PCM_16"), "FLAC", "PCM_16", Match(exact=True)),
    "ogg-vorbis": Case(_sf("OGG", "VORBIS"), "OGG", "VORBIS", Match(min_snr_db=17)),
    "ogg-opus": Case(_sf("OGG", "OPUS"), "OGG", "OPUS", Match(min_snr_db=13)),
    "mp3": Case(_sf("MP3", "MPEG_LAYER_III"), "MP3", "MPEG_LAYER_III", Match(min_snr_db=17)),
    # through the ffmpeg fallback
    "m4a-aac": Case(_av("ipod", "aac"), "mov", "aac", Match(min_snr_db=28, max_lag=1024)),
    "webm-opus": Case(_av("webm", "libopus"), "matroska", "opus", Match(min_snr_db=15, max_lag=64)),
    "amr-nb": Case(
        _av("amr", "libopencore_amrnb"), "amr", "amrnb", Match(min_correlation=0.75, max_lag=80), (8000,)
    ),
}


@pytest.mark.parametrize(
    ("case_id", "rate_hz"),
    [(case_id, rate_hz) for case_id, case in FORMATS.items() for rate_hz in case.rates_hz],
    ids=lambda value: f"{value // 1000}k" if isinstance(value, int) else value,
)
def test_each_format_decodes_to_the_source(case_id: str, rate_hz: int, tmp_path: Path) -> None:
    case, source = FORMATS[case_id], _load(SOURCE_FOLDERS[rate_hz])
    data = case.write(source, tmp_path)
    audio = decode_bytes(data, limits=LIMITS)
    assert (audio.container, audio.codec, audio.channels_in_source) == (case.container, case.codec, 1)
    assert audio.sample_rate_hz == (48000 if case_id == "webm-opus" else source.rate_hz)
    assert_matches(audio, source, case.match)


@pytest.mark.parametrize(
    ("subtype", "decode_codes"), [("ULAW", ulaw_decode_float), ("ALAW", alaw_decode_float)]
)
def test_libsndfile_g711_decoding_equals_our_tables(
    subtype: str, decode_codes: Callable[[bytes], NDArray[np.float32]], source: Source
) -> None:
    """The codes in the file, decoded by our G.711 tables, are exactly what the WAV decode returns."""
    data = write_soundfile(source.samples, source.rate_hz, "WAV", subtype)
    codes = data[data.index(b"data") + 8 :][: len(source.samples)]
    assert np.array_equal(decode_bytes(data, limits=LIMITS).samples, decode_codes(codes))


@pytest.mark.parametrize(
    ("codec", "max_error"),
    [
        ("pcm_u8", 1 / 128),
        ("pcm_s16le", 0.0),
        ("pcm_s24le", 0.0),
        ("pcm_s32le", 0.0),
        ("pcm_f32le", 0.0),
        ("pcm_f64le", 0.0),
    ],
)
def test_ffmpeg_sample_formats_and_channel_choice(codec: str, max_error: float) -> None:
    """PCM in Matroska (libsndfile cannot read it) covers every ffmpeg sample format, packed, and picks
    channel 1 out of interleaved stereo."""
    speaker, other = _load("librispeech_test_other", 0, 3.0), _load("librispeech_test_other", 50, 3.0)
    count = min(len(speaker.samples), len(other.samples))
    data = write_pyav([other.samples[:count], speaker.samples[:count]], 16000, "matroska", codec)
    audio = decode_bytes(data, limits=LIMITS, channel=1)
    assert (audio.container, audio.codec, audio.channels_in_source) == ("matroska", codec, 2)
    assert len(audio.samples) == count
    assert float(np.max(np.abs(audio.samples - speaker.samples[:count]))) <= max_error
    with pytest.raises(MultiChannelAudio, match=r"2 channels.*\(0\.\.1\)"):
        decode_bytes(data, limits=LIMITS)


def test_stereo_needs_a_channel_and_gets_the_right_one(wideband: Source) -> None:
    other = _load("librispeech_test_other", 50)
    count = min(len(wideband.samples), len(other.samples))
    stereo = np.stack([other.samples[:count], wideband.samples[:count]], axis=1)
    for fmt, subtype in (("WAV", "PCM_16"), ("FLAC", "PCM_16")):
        data = write_soundfile(stereo, wideband.rate_hz, fmt, subtype)
        with pytest.raises(MultiChannelAudio, match=r"has 2 channels; one speaker is analysed.*\(0\.\.1\)"):
            decode_bytes(data, limits=LIMITS)
        audio = decode_bytes(data, limits=LIMITS, channel=1)
        assert audio.channels_in_source == 2
        assert np.array_equal(audio.samples, wideband.samples[:count])
        assert np.array_equal(decode_bytes(data, limits=LIMITS, channel=0).samples, other.samples[:count])
        for bad in (2, -1):
            with pytest.raises(MultiChannelAudio, match=r"channel .* does not exist \(valid: 0\.\.1\)"):
                decode_bytes(data, limits=LIMITS, channel=bad)


def test_channel_0_of_mono_is_fine_channel_1_is_not(wideband_wav: bytes) -> None:
    assert decode_bytes(wideband_wav, limits=LIMITS, channel=0).channels_in_source == 1
    with pytest.raises(MultiChannelAudio, match=r"valid: 0\.\.0"):
        decode_bytes(wideband_wav, limits=LIMITS, channel=1)


def test_stereo_through_ffmpeg_aac(wideband: Source) -> None:
    silent = np.zeros_like(wideband.samples)
    data = write_pyav([silent, wideband.samples], wideband.rate_hz, "ipod", "aac")
    with pytest.raises(MultiChannelAudio):
        decode_bytes(data, limits=LIMITS)
    audio = decode_bytes(data, limits=LIMITS, channel=1)
    assert audio.channels_in_source == 2
    assert_matches(audio, wideband, FORMATS["m4a-aac"].match)
    assert float(np.max(np.abs(decode_bytes(data, limits=LIMITS, channel=0).samples))) < 0.01


def test_decode_file_names_the_file_and_matches_decode_bytes(wideband_wav: bytes, tmp_path: Path) -> None:
    path = tmp_path / "caller-42.wav"
    path.write_bytes(wideband_wav)
    assert np.array_equal(
        decode_file(path, limits=LIMITS).samples, decode_bytes(wideband_wav, limits=LIMITS).samples
    )
    path.write_bytes(wideband_wav[:1000])
    with pytest.raises(CorruptAudio, match=r"caller-42\.wav"):
        decode_file(str(path), limits=LIMITS)


def test_limits_from_settings() -> None:
    settings = Settings(max_audio_bytes=1234, max_audio_duration_s=5.0, min_sample_rate_hz=8000)
    limits = AudioLimits.from_settings(settings)
    assert limits == AudioLimits(
        max_bytes=1234,
        max_duration_s=5.0,
        min_sample_rate_hz=8000,
        max_sample_rate_hz=192000,
        decode_timeout_s=120.0,
    )
    with pytest.raises(ValueError, match="positive"):
        AudioLimits(max_bytes=0, max_duration_s=1.0)


# --- bad input: one typed error each ----------------------------------------------------------------


def test_empty_bytes() -> None:
    with pytest.raises(EmptyAudio, match="0 bytes"):
        decode_bytes(b"", limits=LIMITS)


def test_header_only_wavs(wideband_wav: bytes, wideband: Source) -> None:
    no_frames = write_soundfile(np.zeros(0, dtype=np.float32), 16000, "WAV", "PCM_16")
    assert len(no_frames) == 44
    with pytest.raises(EmptyAudio, match="no samples"):
        decode_bytes(no_frames, limits=LIMITS)
    # the header of a real recording without its data: it promises audio that is not there
    with pytest.raises(CorruptAudio, match=r"truncated WAV.*declares 256000 bytes.*only 0 are present"):
        decode_bytes(wideband_wav[:44], limits=LIMITS)


@pytest.mark.parametrize("subtype", ["PCM_16", "ULAW", "GSM610", "MS_ADPCM", "IMA_ADPCM"])
@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_wav(subtype: str, keep: float, wideband: Source) -> None:
    data = write_soundfile(wideband.samples, wideband.rate_hz, "WAV", subtype)
    with pytest.raises(CorruptAudio, match="truncated WAV"):
        decode_bytes(data[: int(len(data) * keep)], limits=LIMITS)


@pytest.mark.parametrize(
    ("fmt", "subtype", "message"),
    [
        ("FLAC", "PCM_16", "FLAC PCM_16 data is corrupt"),
        ("OGG", "VORBIS", "Ogg stream stops before its last page"),
        ("OGG", "OPUS", "Ogg stream stops before its last page"),
        ("MP3", "MPEG_LAYER_III", r"truncated MP3.*declares 128000 frames"),
    ],
)
def test_truncated_compressed_files(fmt: str, subtype: str, message: str, wideband: Source) -> None:
    data = write_soundfile(wideband.samples, wideband.rate_hz, fmt, subtype)
    with pytest.raises(CorruptAudio, match=message):
        decode_bytes(data[: len(data) // 2], limits=LIMITS)


def test_truncated_m4a(wideband: Source, tmp_path: Path) -> None:
    moov_last = write_pyav([wideband.samples], wideband.rate_hz, "ipod", "aac")
    with pytest.raises(CorruptAudio, match="looks like MP4/M4A but cannot be decoded"):
        decode_bytes(moov_last[: len(moov_last) // 2], limits=LIMITS)
    moov_first = write_pyav(
        [wideband.samples], wideband.rate_hz, "ipod", "aac", path=tmp_path / "a.m4a", movflags="+faststart"
    )
    assert decode_bytes(moov_first, limits=LIMITS).duration_s > 7.9
    with pytest.raises(CorruptAudio, match="mov aac"):
        decode_bytes(moov_first[: len(moov_first) // 2], limits=LIMITS)


def test_text_is_not_audio() -> None:
    text = "Caller said: please verify me.\nSecond line, ünïcödé too.\n".encode() * 100
    with pytest.raises(UnsupportedAudio, match="is text, not audio"):
        decode_bytes(text, limits=LIMITS, filename="notes.txt")


@pytest.mark.parametrize("rate_hz", [1, 10_000_000])
def test_absurd_sample_rate_in_a_crafted_wav_header(rate_hz: int, wideband_wav: bytes) -> None:
    data = bytearray(wideband_wav)
    assert data[12:16] == b"fmt " and struct.unpack_from("<I", data, 24)[0] == 16000
    struct.pack_into("<II", data, 24, rate_hz, rate_hz * 2)  # sample rate, byte rate
    with pytest.raises(
        BadSampleRate, match=f"sample rate {rate_hz} Hz is outside the accepted 4000..192000 Hz"
    ):
        decode_bytes(bytes(data), limits=LIMITS)


def test_sample_rate_limits_are_configurable(wideband_wav: bytes) -> None:
    with pytest.raises(BadSampleRate):
        decode_bytes(
            wideband_wav, limits=AudioLimits(max_bytes=10**8, max_duration_s=60, min_sample_rate_hz=22050)
        )


def _patched(wav: bytes, offset: int, value: int) -> bytes:
    data = bytearray(wav)
    data[offset : offset + 2] = struct.pack("<H", value)
    return bytes(data)


def test_corrupt_wav_headers_are_named_not_scored(wideband_wav: bytes) -> None:
    """Regression: a 7-bit header was read as unsigned 8-bit garbage and answered "not enough speech"."""
    assert wideband_wav[36:40] == b"data" and wideband_wav[34:36] == struct.pack("<H", 16)
    seven_bit = _patched(wideband_wav, 34, 7)  # fmt: bits per sample
    with pytest.raises(CorruptAudio, match="7-bit samples"):
        decode_bytes(seven_bit, limits=LIMITS, filename="call.wav")
    wrong_frame = _patched(wideband_wav, 32, 4)  # fmt: block align
    with pytest.raises(CorruptAudio, match="the header says 4"):
        decode_bytes(wrong_frame, limits=LIMITS, filename="call.wav")
    small = bytearray(wideband_wav)
    small[40:44] = struct.pack("<I", 10)  # data: a size far below what follows
    with pytest.raises(CorruptAudio, match="declares 10 bytes of audio"):
        decode_bytes(bytes(small), limits=LIMITS, filename="call.wav")


def test_a_chunk_after_the_audio_is_fine(wideband_wav: bytes) -> None:
    tagged = bytearray(wideband_wav + b"LIST" + struct.pack("<I", 4) + b"INFO")
    tagged[4:8] = struct.pack("<I", len(tagged) - 8)
    assert (
        decode_bytes(bytes(tagged), limits=LIMITS).samples.size
        == decode_bytes(wideband_wav, limits=LIMITS).samples.size
    )


def test_too_many_bytes(wideband_wav: bytes, tmp_path: Path) -> None:
    with pytest.raises(AudioTooLarge, match=f"is {len(wideband_wav)} bytes; the limit is 1000 bytes"):
        decode_bytes(wideband_wav, limits=AudioLimits(max_bytes=1000, max_duration_s=60))
    huge = tmp_path / "huge.wav"
    with huge.open("wb") as stream:  # sparse: 1 GiB on paper, nothing on disk
        stream.truncate(1 << 30)
    started = time.monotonic()
    with pytest.raises(AudioTooLarge, match=r"huge\.wav"):
        decode_file(huge, limits=LIMITS)
    assert time.monotonic() - started < 0.5  # refused from its size, not by reading it


def test_too_long_is_refused_from_the_header_before_decoding(
    wideband: Source, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    short_limits = AudioLimits(max_bytes=10**8, max_duration_s=5.0)
    sound_files = [
        write_soundfile(wideband.samples, wideband.rate_hz, f, s)
        for f, s in (("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("MP3", "MPEG_LAYER_III"))
    ]
    m4a = write_pyav([wideband.samples], wideband.rate_hz, "ipod", "aac")

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("samples were decoded before the declared duration was checked")

    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    for data in [*sound_files, m4a]:  # "declares": the header check; the decoding loop says "runs past"
        with pytest.raises(AudioTooLong, match=r"declares 8\.\d s of audio; the limit is 5 s"):
            decode_bytes(data, limits=short_limits)


def test_too_long_stops_decoding_when_the_header_does_not_tell(
    wideband: Source, monkeypatch: pytest.MonkeyPatch
) -> None:
    short_limits = AudioLimits(max_bytes=10**8, max_duration_s=5.0)
    monkeypatch.setattr(decode_module, "_ffmpeg_declared_s", lambda *args: 0.0)
    with pytest.raises(AudioTooLong, match=r"runs past the limit of 5 s"):
        decode_bytes(write_pyav([wideband.samples], wideband.rate_hz, "ipod", "aac"), limits=short_limits)
    monkeypatch.setattr(decode_module, "_UNKNOWN_FRAMES", 0)  # every libsndfile length counts as unknown
    with pytest.raises(AudioTooLong, match=r"runs past the limit of 5 s"):
        decode_bytes(
            write_soundfile(wideband.samples, wideband.rate_hz, "FLAC", "PCM_16"), limits=short_limits
        )


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_samples(bad_value: float, wideband: Source) -> None:
    samples = wideband.samples.copy()
    samples[1234] = bad_value
    with pytest.raises(CorruptAudio, match="NaN or infinite"):
        decode_bytes(write_soundfile(samples, wideband.rate_hz, "WAV", "FLOAT"), limits=LIMITS)


def test_unnormalised_float_wav(wideband: Source) -> None:
    in_int16_scale = wideband.samples * 32768
    with pytest.raises(CorruptAudio, match="without normalisation"):
        decode_bytes(write_soundfile(in_int16_scale, wideband.rate_hz, "WAV", "FLOAT"), limits=LIMITS)


def test_a_codec_nobody_decodes(wideband_wav: bytes) -> None:
    data = bytearray(wideband_wav)
    struct.pack_into("<H", data, 20, 0x1234)  # an unassigned WAVE format tag
    with pytest.raises(UnsupportedAudio, match="WAV format tag 0x1234"):
        decode_bytes(bytes(data), limits=LIMITS)


def test_a_container_without_audio(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24").reformat(
                format="yuv420p"
            )
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(UnsupportedAudio, match="holds no audio stream"):
        decode_bytes(buffer.getvalue(), limits=LIMITS)


def test_a_playlist_is_not_followed() -> None:
    """ffmpeg's HLS/concat demuxers would open the URLs inside; they are not on the demuxer whitelist."""
    for playlist in (
        b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
        b"ffconcat version 1.0\nfile /etc/passwd\n",
    ):
        with pytest.raises(UnsupportedAudio, match="text, not audio"):
            decode_bytes(playlist, limits=LIMITS)


def _garbage() -> dict[str, bytes]:
    rng = np.random.default_rng(2024)
    return {
        "random-1MB": rng.bytes(1_000_000),
        "random-100B": rng.bytes(100),
        "mp3-sync-words": b"\xff\xfb\x90\x00" * 50_000,
        "id3-then-noise": b"ID3\x04\x00\x00\x00\x00\x00\x00" + rng.bytes(200_000),
        "ogg-pages-of-noise": (b"OggS\x00\x02" + rng.bytes(4000)) * 50,
        "flac-magic-then-noise": b"fLaC" + rng.bytes(200_000),
        "riff-wave-then-noise": b"RIFF\xff\xff\xff\xffWAVE" + rng.bytes(200_000),
        "mp4-ftyp-then-noise": b"\x00\x00\x00\x18ftypM4A " + rng.bytes(200_000),
        "webm-magic-then-noise": b"\x1a\x45\xdf\xa3" + rng.bytes(200_000),
        "zeros": bytes(500_000),
    }


@pytest.mark.parametrize("name", list(_garbage()))
def test_garbage_fails_typed_and_fast(name: str) -> None:
    data = _garbage()[name]
    started = time.monotonic()
    with pytest.raises(AudioError) as raised:
        decode_bytes(data, limits=LIMITS)
    elapsed_s = time.monotonic() - started
    assert elapsed_s < 2.0, f"{name} took {elapsed_s:.2f} s"
    assert isinstance(raised.value, UnsupportedAudio | CorruptAudio | EmptyAudio), repr(raised.value)
    assert str(raised.value)


def test_random_bytes_name_what_was_or_was_not_recognised() -> None:
    rng = np.random.default_rng(5)
    data = b"\x00\x01" + rng.bytes(10_000)
    with pytest.raises(UnsupportedAudio, match=r"not in a recognised audio format.*first bytes: 00 01"):
        decode_bytes(data, limits=LIMITS)
    with pytest.raises(CorruptAudio, match="looks like FLAC"):
        decode_bytes(b"fLaC" + rng.bytes(10_000), limits=LIMITS)


@pytest.mark.parametrize("fmt", ["wav", "m4a"])
def test_decode_deadline(fmt: str, wideband: Source, wideband_wav: bytes) -> None:
    data = wideband_wav if fmt == "wav" else write_pyav([wideband.samples], wideband.rate_hz, "ipod", "aac")
    limits = AudioLimits(max_bytes=10**8, max_duration_s=60, decode_timeout_s=1e-9)
    with pytest.raises(CorruptAudio, match="did not finish within"):
        decode_bytes(data, limits=limits)


# --- the public surface -----------------------------------------------------------------------------


def test_public_surface() -> None:
    expected = {
        "Audio",
        "AudioLimits",
        "FrameBuffer",
        "alaw_decode",
        "alaw_decode_float",
        "alaw_encode",
        "alaw_encode_float",
        "decode_bytes",
        "decode_file",
        "float_to_pcm16",
        "pcm16_from_bytes",
        "pcm16_to_float",
        "resample",
        "telephone_channel",
        "ulaw_decode",
        "ulaw_decode_float",
        "ulaw_encode",
        "ulaw_encode_float",
    }
    assert expected <= set(voxgate.audio.__all__)
    assert len(set(voxgate.audio.__all__)) == len(voxgate.audio.__all__)
    for name in voxgate.audio.__all__:
        assert hasattr(voxgate.audio, name), name


def test_audio_value_checks() -> None:
    audio = Audio(np.zeros(8000, dtype=np.float32), 8000, 1, "PCM_16", "WAV")
    assert audio.duration_s == 1.0
    with pytest.raises(ValueError, match="float32"):
        Audio(np.zeros(10, dtype=np.float64), 8000, 1, "PCM_16", "WAV")
    with pytest.raises(ValueError, match="1-D"):
        Audio(np.zeros((10, 2), dtype=np.float32), 8000, 2, "PCM_16", "WAV")
    with pytest.raises(ValueError, match="sample_rate_hz"):
        Audio(np.zeros(10, dtype=np.float32), 0, 1, "PCM_16", "WAV")


def test_ogg_with_a_tag_appended_is_not_called_truncated(wideband: Source) -> None:
    data = write_soundfile(wideband.samples, wideband.rate_hz, "OGG", "VORBIS")
    id3v1 = b"TAG" + bytes(125)
    assert decode_bytes(data + id3v1, limits=LIMITS).duration_s == pytest.approx(8.0)
