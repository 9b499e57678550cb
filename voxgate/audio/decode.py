"""Decoding recordings (bytes or a file) into mono float32 :class:`Audio`.

libsndfile (``soundfile``) first: it covers what contact centres mostly send (WAV PCM / A-law / µ-law /
IMA + MS ADPCM / GSM 6.10, FLAC, Ogg Vorbis/Opus, MP3) and is fast. Anything it does not recognise goes
to ffmpeg (PyAV): AAC/M4A, AMR, WebM, WMA, ...

Every way a recording can be unusable ends in one typed :class:`voxgate.errors.AudioError`, and every
decode is bounded: bytes are checked before decoding, declared duration before reading samples, decoded
duration and wall time while reading. Samples move in blocks through numpy, never one by one in Python.
"""

from __future__ import annotations

import io
import logging
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import numpy as np
import soundfile as sf
from numpy.typing import NDArray

from voxgate.audio.frames import pick_channel
from voxgate.audio.types import Audio, AudioLimits
from voxgate.errors import (
    AudioError,
    AudioTooLarge,
    AudioTooLong,
    BadSampleRate,
    CorruptAudio,
    EmptyAudio,
    UnsupportedAudio,
)

_log = logging.getLogger(__name__)

# libsndfile also "recognises" exotic formats with weak signatures (MAT4, HTK, SDS, ...): random bytes
# could come out as noise. Only containers people actually send are taken from it.
_SOUNDFILE_FORMATS = frozenset(
    {"WAV", "WAVEX", "RF64", "W64", "FLAC", "OGG", "MP3", "AIFF", "AU", "CAF", "NIST"}
)
# Demuxers ffmpeg may pick. A whitelist keeps its playlist/network demuxers (hls, concat, sdp, ...) from
# ever opening other URLs on our behalf; protocol_whitelist "none" blocks any nested open outright.
_FFMPEG_DEMUXERS = (
    "mov,matroska,ogg,amr,amrnb,amrwb,aac,mp3,wav,w64,flac,asf,caf,aiff,au,gsm,g722,g729,ac3,eac3,wv,avi"
)
_FFMPEG_OPTIONS = {"format_whitelist": _FFMPEG_DEMUXERS, "protocol_whitelist": "none"}

_BLOCK_FRAMES = 1 << 16  # libsndfile read size: bounds the scratch buffer and the deadline check interval
_FIRST_ALLOC_FRAMES = 1 << 24  # 64 MiB of float32
_UNKNOWN_FRAMES = 1 << 62  # libsndfile reports SF_COUNT_MAX when it cannot tell the length
_MAX_PEAK = 2.0  # float samples beyond this are not lossy-codec overshoot but unnormalised data
_MP3_FRAME_SAMPLES = 1152
_FLOAT_SCALE = {  # PyAV sample format (packed name) -> (divide by, subtract first)
    "u8": (128.0, 128.0),
    "s16": (32768.0, 0.0),
    "s32": (2147483648.0, 0.0),
    "s64": (9223372036854775808.0, 0.0),
    "flt": (1.0, 0.0),
    "dbl": (1.0, 0.0),
}


def decode_file(path: str | Path, *, limits: AudioLimits, channel: int | None = None) -> Audio:
    """Decode a recording on disk; its size is checked before a byte of it is read."""
    path = Path(path)
    size_bytes = path.stat().st_size
    if size_bytes > limits.max_bytes:
        raise AudioTooLarge(_too_large_message(path.name, size_bytes, limits))
    with path.open("rb") as stream:
        data = stream.read(limits.max_bytes + 1)  # bounded: the file may grow, or be a device
    return decode_bytes(data, limits=limits, channel=channel, filename=path.name)


def decode_bytes(
    data: bytes, *, limits: AudioLimits, channel: int | None = None, filename: str | None = None
) -> Audio:
    """Decode a whole recording held in memory to mono float32 at its own sample rate.

    ``channel`` picks one channel of a multi-channel recording (0-based); without it a multi-channel
    recording is refused, since a voiceprint is of one speaker. ``filename`` only names the recording in
    error messages.
    """
    name = filename or "the recording"
    if not data:
        raise EmptyAudio(f"{name} is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise AudioTooLarge(_too_large_message(name, len(data), limits))
    deadline = time.monotonic() + limits.decode_timeout_s

    riff = _parse_riff(data)
    if riff is not None:
        _check_riff(riff, limits, name)

    try:
        sound_file = sf.SoundFile(io.BytesIO(data))
    except (sf.SoundFileError, RuntimeError) as exc:
        # "Error opening <_io.BytesIO ...>: <reason>"; for unknown data libsndfile's reason can be the
        # misleading "File does not exist or is not a regular file", so it is only logged, not shown.
        soundfile_error = str(exc).rsplit(": ", 1)[-1]
    else:
        with sound_file:
            if sound_file.format in _SOUNDFILE_FORMATS:
                return _decode_soundfile(sound_file, data, limits, channel, name, deadline)
            soundfile_error = f"libsndfile read it as {sound_file.format}, which voxgate does not accept"
    _log.debug("libsndfile could not decode %s (%s); trying ffmpeg", name, soundfile_error)
    return _decode_ffmpeg(data, limits, channel, name, deadline, soundfile_error)


# --- libsndfile -------------------------------------------------------------------------------------


def _decode_soundfile(
    sound_file: sf.SoundFile,
    data: bytes,
    limits: AudioLimits,
    channel: int | None,
    name: str,
    deadline: float,
) -> Audio:
    container, codec = str(sound_file.format), str(sound_file.subtype)
    rate_hz, channels = int(sound_file.samplerate), int(sound_file.channels)
    _check_rate(rate_hz, limits, name)
    column = pick_channel(channels, channel, name)
    declared_frames = int(sound_file.frames)
    if declared_frames >= _UNKNOWN_FRAMES:
        declared_frames = 0
    if declared_frames / rate_hz > limits.max_duration_s:
        raise AudioTooLong(_too_long_message(name, declared_frames / rate_hz, limits, "declares"))
    if container == "OGG" and not _ogg_ends_with_eos(data):
        raise CorruptAudio(f"{name}: the Ogg stream stops before its last page: the file is truncated")

    max_frames = int(limits.max_duration_s * rate_hz)
    # A header may declare many frames in a few bytes (FLAC of silence, or a forged count): start at most
    # _FIRST_ALLOC_FRAMES and grow by doubling with what is actually decoded.
    mono = np.empty(min(max(declared_frames, _BLOCK_FRAMES), _FIRST_ALLOC_FRAMES), dtype=np.float32)
    scratch = np.empty((_BLOCK_FRAMES, channels), dtype=np.float32)  # (frames, channels)
    done = 0
    try:
        while True:
            _check_deadline(deadline, limits, name)
            block = sound_file.read(out=scratch)  # a view of scratch, (frames read, channels)
            got = len(block)
            if got == 0:
                break
            if done + got > max_frames:
                raise AudioTooLong(_too_long_message(name, (done + got) / rate_hz, limits, "runs past"))
            if done + got > len(mono):
                mono = np.concatenate([mono[:done], np.empty(max(done, got), dtype=np.float32)])
            mono[done : done + got] = block[:, column]
            done += got
    except (sf.SoundFileError, RuntimeError) as exc:
        raise CorruptAudio(f"{name}: the {container} {codec} data is corrupt: {exc}") from exc

    # Formats whose header counts frames exactly must deliver them all; MP3 counts can be estimates.
    tolerance = max(2 * _MP3_FRAME_SAMPLES, declared_frames // 100) if container == "MP3" else 0
    if declared_frames and done < declared_frames - tolerance:
        raise CorruptAudio(
            f"{name}: truncated {container} {codec}: the header declares {declared_frames} frames, "
            f"only {done} could be decoded"
        )
    return _finish(mono[:done], rate_hz, channels, codec, container, name)


# --- ffmpeg (PyAV) ----------------------------------------------------------------------------------


def _decode_ffmpeg(
    data: bytes,
    limits: AudioLimits,
    channel: int | None,
    name: str,
    deadline: float,
    soundfile_error: str,
) -> Audio:
    try:
        container = av.open(
            io.BytesIO(data),
            mode="r",
            container_options=_FFMPEG_OPTIONS,
            timeout=max(deadline - time.monotonic(), 0.001),
            metadata_errors="ignore",
        )
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise _unrecognised(data, name, soundfile_error, _ffmpeg_reason(exc)) from exc

    with container:
        container_name = container.format.name.split(",")[0]
        if not container.streams.audio:
            raise UnsupportedAudio(f"{name}: the {container_name} container holds no audio stream")
        stream = container.streams.audio[0]  # a recording has one; with several, the first (ffmpeg order)
        context: av.audio.codeccontext.AudioCodecContext | None = stream.codec_context
        if context is None:  # PyAV leaves it unset when ffmpeg has no decoder for the codec
            riff = _parse_riff(data)
            what = f"WAV format tag 0x{riff.format_tag:04X}" if riff and riff.format_tag else "its codec"
            raise UnsupportedAudio(
                f"{name}: the {container_name} audio stream uses {what}, which no decoder here reads"
            )
        codec = context.name
        # What the header says is checked before decoding; the first decoded frame has the last word
        # (HE-AAC's header gives the core rate, HE-AAC v2 decodes "mono" to stereo).
        if context.sample_rate:
            _check_rate(int(context.sample_rate), limits, name)
        if context.channels:
            pick_channel(int(context.channels), channel, name)
        declared_s = _ffmpeg_declared_s(container, stream)
        if declared_s > limits.max_duration_s:
            raise AudioTooLong(_too_long_message(name, declared_s, limits, "declares"))

        blocks: list[NDArray[np.float32]] = []
        done = rate_hz = channels = column = 0
        try:
            for packet in container.demux(stream):
                _check_deadline(deadline, limits, name)
                for frame in packet.decode():
                    frame_rate_hz, frame_channels = int(frame.sample_rate), int(frame.layout.nb_channels)
                    if not blocks:
                        rate_hz, channels = frame_rate_hz, frame_channels
                        _check_rate(rate_hz, limits, name)
                        column = pick_channel(channels, channel, name)
                    elif (frame_rate_hz, frame_channels) != (rate_hz, channels):
                        raise UnsupportedAudio(
                            f"{name}: the {codec} stream changes from {rate_hz} Hz x {channels} channels to "
                            f"{frame_rate_hz} Hz x {frame_channels} mid-stream"
                        )
                    blocks.append(_frame_column(frame, channels, column))
                    done += frame.samples
                    if done > limits.max_duration_s * rate_hz:
                        raise AudioTooLong(_too_long_message(name, done / rate_hz, limits, "runs past"))
        except av.error.DecoderNotFoundError as exc:
            raise UnsupportedAudio(f"{name}: no decoder for the {codec!r} codec in {container_name}") from exc
        except av.error.FFmpegError as exc:
            raise CorruptAudio(
                f"{name}: the {container_name} {codec} data is corrupt: {_ffmpeg_reason(exc)}"
            ) from exc

        if rate_hz and container_name == "mov" and declared_s > 0:
            # MP4 sample tables give exact durations; a shortfall means the media data was cut off
            decoded_s = done / rate_hz
            if decoded_s < 0.98 * declared_s - 0.1:
                raise CorruptAudio(
                    f"{name}: truncated {container_name} {codec}: the header declares {declared_s:.2f} s, "
                    f"only {decoded_s:.2f} s could be decoded"
                )
    if done == 0:
        raise EmptyAudio(f"{name}: the {container_name} {codec} stream holds no samples")
    samples = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    return _finish(samples, rate_hz, channels, codec, container_name, name)


def _ffmpeg_reason(exc: Exception) -> str:
    """ffmpeg's own words ("Invalid data found when processing input"), without errno and '<none>'."""
    reason = getattr(exc, "strerror", None)
    return str(reason) if reason else str(exc)


def _ffmpeg_declared_s(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _frame_column(frame: av.AudioFrame, channels: int, column: int) -> NDArray[np.float32]:
    """One channel of a decoded frame as float32, whatever ffmpeg's sample format (packed or planar)."""
    array = frame.to_ndarray()  # planar: (channels, samples); packed: (1, samples * channels)
    picked = array[column] if frame.format.is_planar else array.reshape(-1, channels)[:, column]
    fmt = frame.format.name.removesuffix("p")
    if fmt not in _FLOAT_SCALE:
        raise UnsupportedAudio(f"unexpected decoded sample format {frame.format.name!r}")
    divide, subtract = _FLOAT_SCALE[fmt]
    if divide == 1.0:
        return np.ascontiguousarray(picked, dtype=np.float32)
    return ((picked.astype(np.float64) - subtract) / divide).astype(np.float32)


# --- headers and sniffing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _RiffInfo:
    """What a RIFF/WAVE header promises, read by us because libsndfile silently clamps a short data chunk."""

    format_tag: int | None  # WAVE_FORMAT_* (1 PCM, 6 A-law, 7 µ-law, 0xFFFE extensible, ...)
    sample_rate_hz: int | None  # None when no fmt chunk precedes the data
    declared_data_bytes: int | None  # None when the writer left it unknown (streaming: 0 or 0xFFFFFFFF)
    present_data_bytes: int
    channels: int | None = None
    block_align: int | None = None
    bits_per_sample: int | None = None
    after_data: bytes = b""  # the first bytes after the declared data (a following chunk's header, if any)


def _parse_riff(data: bytes) -> _RiffInfo | None:
    if len(data) < 12 or data[8:12] != b"WAVE" or data[:4] not in (b"RIFF", b"RIFX", b"RF64"):
        return None
    endian = ">" if data[:4] == b"RIFX" else "<"
    format_tag: int | None = None
    rate_hz: int | None = None
    channels: int | None = None
    block_align: int | None = None
    bits: int | None = None
    ds64_data_bytes: int | None = None
    offset = 12
    while offset + 8 <= len(data):  # one step per chunk (a handful), each advancing >= 8 bytes
        chunk_id = data[offset : offset + 4]
        (chunk_bytes,) = struct.unpack_from(endian + "I", data, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt " and body + 16 <= len(data):
            format_tag, channels, rate_hz, _, block_align, bits = struct.unpack_from(
                endian + "HHIIHH", data, body
            )
        elif chunk_id == b"fmt " and body + 8 <= len(data):
            format_tag, _, rate_hz = struct.unpack_from(endian + "HHI", data, body)
        elif chunk_id == b"ds64" and body + 16 <= len(data):
            (ds64_data_bytes,) = struct.unpack_from("<Q", data, body + 8)
        elif chunk_id == b"data":
            declared: int | None = chunk_bytes
            if chunk_bytes == 0xFFFFFFFF and ds64_data_bytes is not None:
                declared = ds64_data_bytes
            elif chunk_bytes in (0, 0xFFFFFFFF):
                declared = None
            after = b"" if declared is None else data[body + declared + (declared & 1) : body + declared + 9]
            return _RiffInfo(
                format_tag, rate_hz, declared, len(data) - body, channels, block_align, bits, after
            )
        offset = body + chunk_bytes + (chunk_bytes & 1)  # chunks are padded to even sizes
    return _RiffInfo(format_tag, rate_hz, None, 0)


# Sample sizes each WAVE format tag can hold; libsndfile reads other sizes as something else (7-bit PCM as
# unsigned 8-bit), so the audio would be garbage scored as if it were speech.
_WAV_BITS = {1: (8, 16, 24, 32), 3: (32, 64), 6: (8,), 7: (8,), 0xFFFE: (8, 16, 24, 32)}
_WAV_FORMAT_NAMES = {1: "PCM", 3: "float", 6: "A-law", 7: "µ-law", 0xFFFE: "extensible PCM"}


def _looks_like_chunk(header: bytes) -> bool:
    return len(header) >= 8 and all(0x20 <= b < 0x7F for b in header[:4])


def _check_riff(riff: _RiffInfo, limits: AudioLimits, name: str) -> None:
    if riff.sample_rate_hz is not None:
        _check_rate(riff.sample_rate_hz, limits, name)
    allowed = _WAV_BITS.get(riff.format_tag) if riff.format_tag is not None else None
    if allowed is not None and riff.bits_per_sample is not None:
        kind = _WAV_FORMAT_NAMES[riff.format_tag or 0]
        if riff.bits_per_sample not in allowed:
            raise CorruptAudio(
                f"{name}: corrupt WAV header: {riff.bits_per_sample}-bit samples, which WAV {kind} does not have "
                f"({', '.join(map(str, allowed))} bits)"
            )
        if riff.channels is not None and riff.block_align != riff.channels * riff.bits_per_sample // 8:
            raise CorruptAudio(
                f"{name}: corrupt WAV header: a frame of {riff.channels} × {riff.bits_per_sample}-bit samples is "
                f"{riff.channels * riff.bits_per_sample // 8} bytes, the header says {riff.block_align}"
            )
    if (
        riff.declared_data_bytes is not None
        and riff.present_data_bytes > riff.declared_data_bytes + 1
        and riff.after_data
        and not _looks_like_chunk(riff.after_data)
    ):
        raise CorruptAudio(
            f"{name}: corrupt WAV header: it declares {riff.declared_data_bytes} bytes of audio, but "
            f"{riff.present_data_bytes} bytes follow and what comes after the declared audio is not a chunk"
        )
    if riff.declared_data_bytes is not None and riff.present_data_bytes < riff.declared_data_bytes:
        raise CorruptAudio(
            f"{name}: truncated WAV: the header declares {riff.declared_data_bytes} bytes of audio, "
            f"only {riff.present_data_bytes} are present"
        )


def _ogg_ends_with_eos(data: bytes) -> bool:
    """Whether the last complete Ogg page is flagged end-of-stream: a file cut short ends in a partial
    page after pages without the flag. (Junk or a tag appended after the last page is tolerated.)

    Only the tail is searched: pages are at most 65307 bytes, so the last one starts within it.
    """
    search_from = max(0, len(data) - 4 * 65307)
    start = len(data)
    while (start := data.rfind(b"OggS", search_from, start)) >= 0:
        if start + 27 > len(data) or data[start + 4] != 0:  # header cut off, or not stream structure v0
            continue
        table_end = start + 27 + data[start + 26]
        if table_end <= len(data) and table_end + sum(data[start + 27 : table_end]) <= len(data):
            return bool(data[start + 5] & 0x04)
    return False


_MAGIC = (  # (offset, bytes, what it is) for error messages when nothing could decode the data
    (0, b"RIFF", "WAV (RIFF)"),
    (0, b"RIFX", "WAV (RIFX)"),
    (0, b"RF64", "WAV (RF64)"),
    (0, b"riff", "Wave64"),
    (0, b"fLaC", "FLAC"),
    (0, b"OggS", "Ogg"),
    (0, b"ID3", "MP3 (ID3 tag)"),
    (4, b"ftyp", "MP4/M4A"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"),
    (0, b"#!AMR", "AMR"),
    (0, b"FORM", "AIFF"),
    (0, b".snd", "AU"),
    (0, b"caff", "CAF"),
    (0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "ASF/WMA"),
    (0, b"NIST_1A", "NIST SPHERE"),
)


def _sniff(data: bytes) -> str | None:
    """Name the container the first bytes announce, or "text"; None for unrecognised bytes."""
    for offset, magic, kind in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return kind
    if len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        return "MPEG audio (MP3 or AAC ADTS)"
    return "text" if _looks_like_text(data[:4096]) else None


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # a multi-byte character cut at the end of the sample is fine
            return False
    codes = np.frombuffer(head, dtype=np.uint8)
    control = (codes < 0x20) & ~np.isin(codes, (0x09, 0x0A, 0x0C, 0x0D))
    return not bool(control.any())


def _unrecognised(data: bytes, name: str, soundfile_error: str, ffmpeg_error: str) -> AudioError:
    kind = _sniff(data)
    if kind == "text":
        return UnsupportedAudio(f"{name} is text, not audio")
    _log.debug("%s: libsndfile: %s; ffmpeg: %s", name, soundfile_error, ffmpeg_error)
    if kind is not None:
        return CorruptAudio(f"{name} looks like {kind} but cannot be decoded: {ffmpeg_error}")
    return UnsupportedAudio(
        f"{name} is not in a recognised audio format (first bytes: {data[:8].hex(' ')}); voxgate reads "
        "WAV (PCM, A-law, µ-law, ADPCM, GSM 6.10), FLAC, Ogg Vorbis/Opus, MP3, M4A/AAC, AMR, WebM and WMA"
    )


# --- shared checks ----------------------------------------------------------------------------------


def _check_rate(rate_hz: int, limits: AudioLimits, name: str) -> None:
    if not limits.min_sample_rate_hz <= rate_hz <= limits.max_sample_rate_hz:
        raise BadSampleRate(
            f"{name}: sample rate {rate_hz} Hz is outside the accepted "
            f"{limits.min_sample_rate_hz}..{limits.max_sample_rate_hz} Hz"
        )


def _check_deadline(deadline: float, limits: AudioLimits, name: str) -> None:
    if time.monotonic() > deadline:
        raise CorruptAudio(
            f"{name}: decoding did not finish within {limits.decode_timeout_s:g} s and was abandoned "
            "(pathological data, or an overloaded server)"
        )


def _finish(
    samples: NDArray[np.float32], rate_hz: int, channels: int, codec: str, container: str, name: str
) -> Audio:
    if samples.size == 0:
        raise EmptyAudio(f"{name}: the {container} {codec} stream holds no samples")
    high, low = float(samples.max()), float(samples.min())  # NaN/inf propagate; no temporary arrays
    if not (np.isfinite(high) and np.isfinite(low)):
        raise CorruptAudio(f"{name}: the {container} {codec} data contains NaN or infinite samples")
    if max(high, -low) > _MAX_PEAK:
        raise CorruptAudio(
            f"{name}: samples reach {max(high, -low):.3g} x full scale (expected within ±1): "
            "float data written without normalisation?"
        )
    np.clip(samples, -1.0, 1.0, out=samples)  # lossy codecs overshoot a little on clipped input
    return Audio(
        samples=samples, sample_rate_hz=rate_hz, channels_in_source=channels, codec=codec, container=container
    )


def _too_large_message(name: str, size_bytes: int, limits: AudioLimits) -> str:
    return f"{name} is {size_bytes} bytes; the limit is {limits.max_bytes} bytes"


def _too_long_message(name: str, duration_s: float, limits: AudioLimits, verb: str) -> str:
    if verb == "declares":  # from the header, before decoding
        return f"{name} declares {duration_s:.1f} s of audio; the limit is {limits.max_duration_s:g} s"
    return (  # while decoding: duration_s is where decoding stopped
        f"{name} runs past the limit of {limits.max_duration_s:g} s of audio "
        f"(decoding stopped at {duration_s:.1f} s)"
    )
