"""One stream's analysis: the stages between its native-rate PCM and its incremental voiceprint.

::

    PCM (native rate) ─► soxr.ResampleStream → 16 kHz windows (512 samples, 32 ms)
      ─► Silero VAD (state carried between pushes), one probability per window: on the 16 kHz window, or
         for a stream at ≤ 8 kHz on its 8 kHz twin (256 samples of the same 32 ms, native or resampled)
      ─► SpeechGate (Silero's hysteresis, window by window; pads, pauses < keep_pause_s) ─► pending speech
      ─► at the first pause after CHUNK_S of net speech (at 2 × CHUNK_S without one): a chunk,
         embedded ONCE per model, added to a duration-weighted sum
      ─► on demand (a settle): the settled tail (≥ TAIL_MIN_S, the speaker paused), one more chunk

The stages cut a stream as :meth:`Biometrics.analyse <voxgate.biometrics.engine.Biometrics.analyse>` cuts a
recording: the same VAD rate (:func:`~voxgate.audio.vad.vad_rate_for`), and the gate keeps the samples
:func:`~voxgate.audio.vad.speech_only` keeps (segments padded by ``pad_s``, pauses shorter than
``keep_pause_s`` kept). For an 8 kHz VAD both window sequences are counted from the stream's first sample
and soxr's streams are sample-exact (only late by their lookahead, about 66 ms from 8 to 16 kHz), so VAD
window k and 16 kHz window k are the same 32 ms.

:class:`SpeechPipeline` holds that state and nothing about doors or sessions, so that whoever runs
the stages needs only this object: the blocking :meth:`SpeechPipeline.push` runs them inline, and
the inference engine's worker runs them for many streams at once (:meth:`~SpeechPipeline.accept` →
VAD → :meth:`~SpeechPipeline.gate` → embeddings → :meth:`~SpeechPipeline.add_embeddings`). The
session owns a pipeline and is handed a :data:`Submit` and a :class:`Settle` callable; neither the
session nor the engine knows the other.

Chunks end where the caller pauses, so a chunk never ends mid-word and an utterance of up to 2 × CHUNK_S is
embedded whole, exactly as the offline pass embeds that recording.

Memory per stream is bounded, never the call: the pending audio (< 2 × CHUNK_S of net speech, with its pads
and kept pauses) and what the gate holds (a pause < ``keep_pause_s``, a segment's unconfirmed start and hangover).

Speech that has not yet filled a chunk is the *tail*. Once the speaker paused (the gate closed its
segment) the tail is *settled*, and a reader that needs the voiceprint now (verify, enroll) has it
embedded on demand: :meth:`SpeechPipeline.take_tail` cuts it exactly as :meth:`~SpeechPipeline.gate`
cuts a chunk, so it becomes one more chunk of the voiceprint and is never embedded twice (the engine's
``settle``, or :meth:`SpeechPipeline.settle_inline`). ``speech_s`` (the net speech the voiceprint holds)
then lags the live audio only by speech still inside an open segment, or by a tail shorter than
``TAIL_MIN_S``; until someone settles, by less than 2 × ``CHUNK_S``. The pause the gate holds after a segment
is not part of the tail (it is kept only if speech resumes); a tail cut as soon as its segment closed may
lack the rest of its trailing pad (< ``pad_s - min_silence_s``), which then leads the next chunk.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt
import soxr

from voxgate.audio.types import FloatArray
from voxgate.audio.vad import (
    TELEPHONE_VAD_RATE_HZ,
    VAD_SAMPLE_RATE_HZ,
    WINDOW_S,
    WINDOW_SAMPLES,
    SegmentationRules,
    VadState,
    vad_rate_for,
    window_samples,
)
from voxgate.biometrics.voiceprint import Embedding, Voiceprint, l2_normalise
from voxgate.errors import InsufficientSpeech, VoxgateError

if TYPE_CHECKING:
    from voxgate.biometrics.engine import Biometrics

log = logging.getLogger(__name__)

# Net speech per embedded chunk. Measured on LibriSpeech at 8 kHz (2 speakers, 15-22 s of speech), the
# duration-weighted mean of chunk embeddings vs. one embedding of the whole speech: cosine ECAPA
# 0.93/0.90 (1 s chunks), 0.97/0.95 (2 s), 0.98/0.98 (3 s); CAM++ 0.97 (1 s), 0.99 (2 s), 0.99+ (3 s).
# 3 s also matches the default minimum verification speech (VOXGATE_MIN_VERIFY_SPEECH_S), so the first
# verdict is possible as soon as that much speech was heard.
CHUNK_S = 3.0  # default; the server passes VOXGATE_STREAM_CHUNK_S
# A segment whose hangover (windows after speech fell below the low threshold, waiting for enough
# silence) grows past this is closed where it started to fall: bounds the held-back audio when the
# probability hovers between the two thresholds. Offline segmentation has no such cap.
MAX_HANGOVER_S = 1.0
# How far a stream's audio may run ahead of its analysis, seconds (VOXGATE_STREAM_MAX_BACKLOG_S): the
# engine makes a stream's sender wait beyond it, and a feeder holds at most this much more.
MAX_BACKLOG_S = 5.0
# The shortest tail (net speech, unpadded VAD windows) embedded on demand; a shorter one waits for more
# speech. A tail is weighted by its net speech in the voiceprint, so a short one moves it little. The gate
# closes a segment at any 0.1 s pause, so a call polled twice a second settles tails often: measured on
# 10 LibriSpeech calls (8 kHz, 9-28 s; a settle after every 0.5 s pushed), 53 forward passes instead of
# 32, 99.5 % of the heard speech in the voiceprint at the call's end instead of 88 %, and the same
# cosine to the offline voiceprint of the whole call (ECAPA mean 0.966 vs 0.968, CAM++ 0.987 vs 0.985).
TAIL_MIN_S = 0.5


class SpeechGate:
    """Silero's hysteresis (:func:`voxgate.audio.vad.speech_segments`) applied one window at a time, and
    the cut of :func:`voxgate.audio.vad.speech_only` applied to its segments as they are found.

    Speech starts at a window with probability ≥ ``threshold`` and ends once ``min_silence_s`` of windows
    fell below ``threshold - 0.15``; segments shorter than ``min_speech_s`` are dropped. Kept segments less
    than ``keep_pause_s`` apart are joined (the pause between them kept), and each joined span is padded by
    ``pad_s`` on both sides. The only difference from the offline pass is ``MAX_HANGOVER_S``.

    The audio is released as soon as it is known to be kept: a confirmed segment's speech, then its
    trailing pad. The pause after a segment is held until the next segment is confirmed (released: the
    pause is kept) or until it grows past ``keep_pause_s`` (dropped, but for the last ``pad_s``, the leading
    pad of whatever segment comes next). What is held is at most that pause plus the unconfirmed start of
    a segment (< ``min_speech_s``) and its hangover (≤ ``MAX_HANGOVER_S``).
    """

    def __init__(self, rules: SegmentationRules) -> None:
        self.rules = rules
        self._low = max(rules.threshold - 0.15, 0.01)
        self._min_silence = max(1, round(rules.min_silence_s / WINDOW_S))
        self._max_hangover = max(self._min_silence + 1, round(MAX_HANGOVER_S / WINDOW_S))
        # positions are window indices, or 16 kHz sample offsets (…_at) counted from the stream's start
        self._windows: deque[FloatArray] = deque()  # the windows from self._first on
        self._first = 0
        self._seen = 0  # windows stepped
        self._released_at = 0  # the audio before it was released, or dropped
        self._in_segment = False
        self._confirmed = False
        self._start = 0  # the open segment's first window
        self._dip: int | None = None  # the open segment's first window below the low mark, if in a dip
        self._counted = 0  # windows of the open segment counted as speech so far
        self._last_end: int | None = None  # the end (unpadded) of the last kept segment
        self._end_sample: int | None = None  # where the audio ended (ends_at), if it did

    @property
    def held_samples(self) -> int:
        """16 kHz samples held back: not released, and not (yet) dropped."""
        return self._seen * WINDOW_SAMPLES - max(self._released_at, self._first * WINDOW_SAMPLES)

    @property
    def seen(self) -> int:
        """Windows stepped so far (32 ms each)."""
        return self._seen

    @property
    def in_segment(self) -> bool:
        """A segment is open (speech, or a dip not yet long enough to end it): False once the speaker
        paused and the segment was closed (or dropped as too short). The pause held after a closed segment
        is not part of it."""
        return self._in_segment

    def step(self, window: FloatArray, probability: float) -> tuple[list[FloatArray], int]:
        """Feed one 512-sample window; returns the audio now known to be kept (speech, its padding, the
        short pauses), and how many unpadded speech windows it holds."""
        # window: (512,) at 16 kHz
        i = self._seen
        self._seen += 1
        self._windows.append(window)
        if not self._in_segment:
            if probability >= self.rules.threshold:
                self._in_segment, self._confirmed, self._start, self._dip = True, False, i, None
        elif probability >= self.rules.threshold:
            self._dip = None  # speech resumed: the dip belongs to the segment
        elif probability < self._low:
            if self._dip is None:  # the dip starts here; silence is counted from it
                self._dip = i
            elif i - self._dip + 1 >= self._min_silence:
                self._end()
        elif self._dip is not None and i - self._dip + 1 > self._max_hangover:
            self._end()  # between the marks after a dip for too long: closed where it fell
        speech_windows = 0
        if self._in_segment and self._dip is None:
            length = i + 1 - self._start
            if not self._confirmed and length * WINDOW_S >= self.rules.min_speech_s:
                self._confirmed, self._counted = True, 0
                if not self._joins(self._start):  # a fresh leading pad; the audio before it is dropped
                    self._released_at = max(self._released_at, self._lead_from(self._start))
            if self._confirmed:
                speech_windows, self._counted = length - self._counted, length
        out = self._release()
        self._forget()
        return out, speech_windows

    def ends_at(self, end_sample: int) -> None:
        """The audio ends at 16 kHz sample ``end_sample``; the windows after it (the last one's zero
        padding) are never released."""
        self._end_sample = end_sample

    def finish(self) -> tuple[list[FloatArray], int]:
        """The last window was stepped: close the open segment as
        :func:`~voxgate.audio.vad.speech_segments` closes one at the end of a recording (where its dip
        began, else at the end; kept if at least ``min_speech_s`` long), and release the rest of what is
        kept. Returns what :meth:`step` does."""
        speech_windows = 0
        if self._in_segment:
            end = self._dip if self._dip is not None else self._seen
            if not self._confirmed and (end - self._start) * WINDOW_S >= self.rules.min_speech_s:
                self._confirmed, self._counted = True, 0
                if not self._joins(self._start):
                    self._released_at = max(self._released_at, self._lead_from(self._start))
            if self._confirmed:
                speech_windows = max(0, end - self._start - self._counted)
                self._last_end = end
            self._in_segment, self._confirmed, self._dip = False, False, None
        out = self._release()
        self._forget()
        return out, speech_windows

    def _joins(self, start: int) -> bool:
        """A segment starting at window ``start`` is joined to the last kept one (as ``speech_only``)."""
        return (
            self._last_end is not None
            and start * WINDOW_S - self._last_end * WINDOW_S < self.rules.keep_pause_s
        )

    def _lead_from(self, start: int) -> int:
        """Where the leading pad of a segment starting at window ``start`` begins (``speech_only``'s sums)."""
        return max(0, int((start * WINDOW_S - self.rules.pad_s) * VAD_SAMPLE_RATE_HZ))

    def _trail_to(self, end: int) -> int:
        """Where the trailing pad of a segment ending at window ``end`` ends (``speech_only``'s sums)."""
        return math.ceil((end * WINDOW_S + self.rules.pad_s) * VAD_SAMPLE_RATE_HZ)

    def _end(self) -> None:
        """Close the open segment where its dip started; only a confirmed one is kept."""
        if self._confirmed:
            self._last_end = self._dip
        self._in_segment, self._confirmed, self._dip = False, False, None

    def _release(self) -> list[FloatArray]:
        """The audio now known to be kept: a confirmed segment's speech (the held pause before it, when it
        joins the last segment), then its trailing pad (never past the end of the audio, if it ended)."""
        keep_to = 0
        if self._last_end is not None:
            keep_to = self._trail_to(self._last_end)
        if self._in_segment and self._confirmed:
            end = self._seen * WINDOW_SAMPLES if self._dip is None else self._trail_to(self._dip)
            keep_to = max(keep_to, end)
        keep_to = min(keep_to, self._seen * WINDOW_SAMPLES)
        if self._end_sample is not None:
            keep_to = min(keep_to, self._end_sample)
        out: list[FloatArray] = []
        position = self._released_at
        while position < keep_to:
            index, offset = divmod(position, WINDOW_SAMPLES)
            part = self._windows[index - self._first][offset : offset + keep_to - position]
            out.append(part)
            position += part.size
        self._released_at = max(self._released_at, keep_to)
        return out

    def _forget(self) -> None:
        """Drop the windows nothing can release any more."""
        if self._in_segment:
            start = self._start
            needed_from = self._released_at if self._confirmed or self._joins(start) else None
        else:
            start = self._seen  # the earliest a next segment can start
            needed_from = self._released_at if self._joins(start) else None
        if needed_from is None:  # a segment starting there gets a fresh leading pad
            needed_from = max(self._released_at, self._lead_from(start))
        while self._windows and (self._first + 1) * WINDOW_SAMPLES <= needed_from:
            self._windows.popleft()
            self._first += 1


class SpeechPipeline:
    """One stream's analysis state and stages; the counters tell how far the analysis is behind.

    Each stage touches this state from one thread at a time, in order (the pusher, or the engine's
    worker); the readers (listing, voiceprint) may come from any thread.
    """

    def __init__(
        self,
        uuid: str,
        sample_rate_hz: int,
        biometrics: Biometrics,
        *,
        chunk_s: float = CHUNK_S,
        max_speech_s: float | None = None,
    ) -> None:
        if sample_rate_hz <= 0:
            raise ValueError(f"sample_rate_hz must be positive, got {sample_rate_hz}")
        if chunk_s < 0.5:
            raise ValueError(f"chunk_s must be at least 0.5 s, got {chunk_s}")
        if max_speech_s is not None and max_speech_s < chunk_s:
            raise ValueError(f"max_speech_s must be at least chunk_s ({chunk_s} s), got {max_speech_s}")
        self.uuid = uuid  # the stream's, for logs
        self.sample_rate_hz = sample_rate_hz
        self.max_speech_s = max_speech_s
        self.closed = False  # the stream closed: the stages stop and the engine drops its queue
        # VAD runs at 8 kHz for telephone-rate streams (as Biometrics.analyse does offline), else at 16 kHz
        self.vad_rate_hz = vad_rate_for(sample_rate_hz)
        self._vad_state = VadState(self.vad_rate_hz)  # advanced by whoever runs this stream's VAD
        self._vad_reset = False  # a fresh VAD state before the next window (reset_vad)
        self._biometrics = biometrics
        self._chunk_windows = math.ceil(chunk_s / WINDOW_S - 1e-9)
        self._tail_windows = math.ceil(TAIL_MIN_S / WINDOW_S - 1e-9)
        self._resampler = _resample_stream(sample_rate_hz, VAD_SAMPLE_RATE_HZ)
        # VAD's own input when it is not the 16 kHz audio: native 8 kHz as it is, lower rates brought to 8 kHz
        self._vad_width = window_samples(self.vad_rate_hz)
        self._vad_resampler = (
            _resample_stream(sample_rate_hz, TELEPHONE_VAD_RATE_HZ) if self._vad_apart else None
        )
        self._gate = SpeechGate(biometrics.rules)
        self._carry = np.zeros(0, dtype=np.float32)  # 16 kHz samples short of a whole VAD window
        self._vad_carry = np.zeros(0, dtype=np.float32)  # VAD-rate samples whose 16 kHz window is not whole
        self._pending: list[FloatArray] = []  # speech not yet embedded, 16 kHz
        self._pending_samples = 0
        self._pending_windows = 0  # unpadded speech windows in _pending
        self._received_samples = 0  # at the native rate
        self._heard_windows = 0  # all unpadded speech windows so far
        self._accepted_windows = 0  # windows accept() handed out (gated, or waiting for VAD)
        self._end_sample: int | None = None  # accept(last=True): where the audio ended, 16 kHz samples
        self.last_speech_window = 0  # windows stepped when speech was last counted (end-of-speech timing)
        self._queued_samples = 0  # at the native rate: submitted, not yet through VAD (engine only)
        self.waiting_windows = 0  # accepted by the engine, not yet through VAD
        self._chunks_in_flight = 0  # cut by the gate, not yet in the voiceprint
        # the voiceprint: per model, the sum of unit chunk embeddings weighted by their net speech
        self._sums_lock = threading.Lock()
        self._sums: dict[str, npt.NDArray[np.float64]] = {}
        self._speech_s = 0.0
        self._chunks = 0

    # -- counters --------------------------------------------------------------------------------------

    @property
    def duration_s(self) -> float:
        """Seconds of audio received."""
        return self._received_samples / self.sample_rate_hz

    @property
    def speech_s(self) -> float:
        """Net speech in the voiceprint (embedded chunks and settled tails), seconds.

        Lags :attr:`heard_speech_s` by the pending speech: after a settle, only by speech inside a
        segment still open (or a tail shorter than ``TAIL_MIN_S``); without one, by less than a chunk.
        """
        with self._sums_lock:
            return self._speech_s

    @property
    def heard_speech_s(self) -> float:
        """Net speech detected so far, embedded or still pending, seconds."""
        return self._heard_windows * WINDOW_S

    @property
    def chunks(self) -> int:
        with self._sums_lock:
            return self._chunks

    @property
    def vad_state(self) -> VadState:
        """The VAD's recurrent state; read only by whoever runs this stream's VAD, which is also where a
        requested reset happens (never under a VAD call in progress)."""
        if self._vad_reset:
            self._vad_reset = False
            self._vad_state = VadState(self.vad_rate_hz)
        return self._vad_state

    def reset_vad(self) -> None:
        """Start the VAD afresh at the next window. Silero's state carried over a caller's previous
        utterance and a pause makes it hear much less of the next one (FSDD digits at 8 kHz, after one
        clip and 1 s of silence: 12 % of the next clip's windows over the threshold instead of 39 %),
        so a voice bot's operation resets it at each utterance's end."""
        self._vad_reset = True

    @property
    def windows_seen(self) -> int:
        """32 ms windows through VAD and the gate so far (the analysed audio's clock)."""
        return self._gate.seen

    @property
    def silence_s(self) -> float:
        """Analysed audio since speech was last counted, seconds: how long the speaker has been silent."""
        return (self._gate.seen - self.last_speech_window) * WINDOW_S

    def pooled(self) -> Pooled:
        """The voiceprint's sums as they are now: subtract an earlier one to get the speech in between."""
        with self._sums_lock:
            return Pooled({m: v.copy() for m, v in self._sums.items()}, self._speech_s)

    @property
    def buffered_samples(self) -> int:
        """16 kHz samples held by the stages (the stream's audio memory; bounded, never the call)."""
        vad_carry = len(self._vad_carry) * VAD_SAMPLE_RATE_HZ // self.vad_rate_hz
        return len(self._carry) + vad_carry + self._pending_samples + self._gate.held_samples

    @property
    def _vad_apart(self) -> bool:
        """VAD does not run on the 16 kHz windows themselves (an 8 kHz VAD stream)."""
        return self.vad_rate_hz != VAD_SAMPLE_RATE_HZ

    @property
    def backlog_s(self) -> float:
        """Audio received but not yet through VAD, seconds: grows only when the engine falls behind."""
        return self._queued_samples / self.sample_rate_hz + self.waiting_windows * WINDOW_S

    @property
    def capped(self) -> bool:
        """The voiceprint holds ``max_speech_s``: further audio is counted but no longer analysed."""
        return self.max_speech_s is not None and self._speech_s >= self.max_speech_s

    @property
    def _heard_enough(self) -> bool:
        """``max_speech_s`` of net speech was heard: the last chunk is cut right there and later audio
        is only counted. Waiting for the voiceprint itself to be full kept VAD running on the audio
        behind a chunk in flight, and a chunk cut at a pause overshot the cap by up to a chunk
        (together about 6 % more CPU per stream at the fastest profile's 30 s cap)."""
        return self.max_speech_s is not None and self._heard_windows * WINDOW_S >= self.max_speech_s - 1e-9

    @property
    def working(self) -> bool:
        """Audio is still being analysed (an idle timeout waits for it)."""
        return self.backlog_s > 0 or self._chunks_in_flight > 0

    def queued(self, n_samples: int) -> None:
        """``n_samples`` (native rate) joined the engine's queue for this stream."""
        self._queued_samples += n_samples

    def dequeued(self, n_samples: int) -> None:
        """The engine took ``n_samples`` (native rate) off this stream's queue."""
        self._queued_samples -= n_samples

    # -- the stages --------------------------------------------------------------------------------------

    @property
    def audio_ended(self) -> bool:
        """:meth:`accept` was told the audio ended (``last``): later audio is only counted."""
        return self._end_sample is not None

    def accept(self, samples: FloatArray, last: bool = False) -> tuple[FloatArray, FloatArray]:
        """Count and resample native-rate audio; returns the whole 32 ms windows it completes, twice: at
        the VAD rate, (windows, 256 or 512), and at 16 kHz, (windows, 512), row k of both the same 32 ms
        (the same array for a 16 kHz VAD). Once the voiceprint is capped, audio is only counted.

        ``last``: the audio ends with these samples. The resamplers give up what they hold back and the
        last partial window is zero-padded, as the offline pass pads it; once that window went through
        :meth:`gate`, the gate closes its open segment as the end of a recording closes it. Without
        this, a call that ends mid-word leaves its last 0.1 s unanalysed (up to 0.35 s when a short last
        segment goes unconfirmed with it), which on a 2 s utterance is enough to move its score.

        For an 8 kHz VAD, both window sequences are counted from the stream's first sample: soxr's
        streams are time-aligned (sample-exact with a whole-recording resample), they only hold back their
        filter's lookahead (8 → 16 kHz: about 66 ms), so a VAD window waits for its 16 kHz twin."""
        self._received_samples += samples.size
        if self._heard_enough or self.audio_ended:
            return (
                np.zeros((0, self._vad_width), dtype=np.float32),
                np.zeros((0, WINDOW_SAMPLES), dtype=np.float32),
            )
        samples = np.asarray(samples, dtype=np.float32)
        resampled = _resampled(self._resampler, samples, last)
        audio = np.concatenate([self._carry, resampled]) if self._carry.size else resampled
        if last:
            self._end_sample = self._accepted_windows * WINDOW_SAMPLES + audio.size
            self._gate.ends_at(self._end_sample)
        if not self._vad_apart:
            if last:
                audio = _padded(audio, WINDOW_SAMPLES)
            n_windows = audio.size // WINDOW_SAMPLES
            self._carry = audio[n_windows * WINDOW_SAMPLES :].copy()
            windows = audio[: n_windows * WINDOW_SAMPLES].reshape(n_windows, WINDOW_SAMPLES)
            return self._accepted(windows, windows)
        vad_new = _resampled(self._vad_resampler, samples, last)
        vad_audio = np.concatenate([self._vad_carry, vad_new]) if self._vad_carry.size else vad_new
        if last:  # both padded to the same number of windows
            n_last = max(-(-audio.size // WINDOW_SAMPLES), -(-vad_audio.size // self._vad_width))
            audio = np.pad(audio, (0, n_last * WINDOW_SAMPLES - audio.size))
            vad_audio = np.pad(vad_audio, (0, n_last * self._vad_width - vad_audio.size))
        n_windows = min(audio.size // WINDOW_SAMPLES, vad_audio.size // self._vad_width)
        self._carry = audio[n_windows * WINDOW_SAMPLES :].copy()
        self._vad_carry = vad_audio[n_windows * self._vad_width :].copy()
        return self._accepted(
            vad_audio[: n_windows * self._vad_width].reshape(n_windows, self._vad_width),
            audio[: n_windows * WINDOW_SAMPLES].reshape(n_windows, WINDOW_SAMPLES),
        )

    def _accepted(self, vad_windows: FloatArray, windows: FloatArray) -> tuple[FloatArray, FloatArray]:
        self._accepted_windows += len(windows)
        self._end_gate_if_done()  # every window may have been gated already (nothing came with the end)
        return vad_windows, windows

    def _end_gate_if_done(self) -> None:
        """Once the audio ended and its last window went through the gate, close the gate's open segment
        (see :meth:`accept`)."""
        if self.audio_ended and self._gate.seen == self._accepted_windows:
            self._take(*self._gate.finish())

    def gate(self, window: FloatArray, probability: float) -> tuple[FloatArray, float] | None:
        """One 16 kHz window and its speech probability (of its VAD-rate twin) in; a chunk (and its net
        speech, seconds) out when one is complete: at least ``chunk_s`` of net speech, cut where the caller
        pauses, or at twice ``chunk_s`` if they do not. Cut at a pause, a chunk never ends mid-word, and an
        utterance of up to twice ``chunk_s`` is embedded whole, as the offline pass embeds it. The last
        chunk ends where the net speech reaches ``max_speech_s``, as the offline crop does."""
        if self._heard_enough:
            return None
        self._take(*self._gate.step(window.copy(), probability))
        self._end_gate_if_done()
        if self._heard_enough:
            return self._cut() if self._pending_windows else None
        if self._pending_windows < self._chunk_windows:
            return None
        if self._gate.in_segment and self._pending_windows < 2 * self._chunk_windows:
            return None  # wait for the pause
        return self._cut()

    def _take(self, speech: list[FloatArray], speech_windows: int) -> None:
        """The gate's released audio joins the pending speech."""
        for part in speech:
            self._pending.append(part)
            self._pending_samples += part.size
        self._pending_windows += speech_windows
        self._heard_windows += speech_windows
        if speech_windows:
            self.last_speech_window = self._gate.seen

    def tail_due(self, force: bool = False) -> bool:
        """A tail is worth embedding now: at least ``TAIL_MIN_S`` of pending net speech, settled (the gate
        closed its segment) or ``force`` (then the open segment's speech the gate already released counts;
        what it still holds back, an unconfirmed start or a hangover, does not). Never once the cap was heard."""
        if self._heard_enough or self._pending_windows < self._tail_windows:
            return False
        return force or not self._gate.in_segment

    def take_tail(self, force: bool = False) -> tuple[FloatArray, float] | None:
        """Cut the tail as :meth:`gate` cuts a chunk (and that net speech, seconds) when
        :meth:`tail_due`; the caller embeds it like a chunk. Only on the thread that runs :meth:`gate`
        for this pipeline (the engine's worker, or the pusher)."""
        return self._cut() if self.tail_due(force) else None

    def _cut(self) -> tuple[FloatArray, float]:
        """The pending speech as one chunk in flight; pending starts over."""
        chunk = np.concatenate(self._pending)
        speech_s = self._pending_windows * WINDOW_S
        self._pending, self._pending_samples, self._pending_windows = [], 0, 0
        self._chunks_in_flight += 1
        return chunk, speech_s

    def add_embeddings(self, vectors: Mapping[str, FloatArray], speech_s: float) -> None:
        """Add one chunk's embeddings (one per model, any norm) to the pooled voiceprint."""
        with self._sums_lock:
            for model_id, vector in vectors.items():
                weighted = speech_s * l2_normalise(vector).astype(np.float64)
                self._sums[model_id] = self._sums[model_id] + weighted if model_id in self._sums else weighted
            self._speech_s += speech_s
            self._chunks += 1
            self._chunks_in_flight -= 1

    def chunk_failed(self) -> None:
        """A chunk could not be embedded (it is left out of the voiceprint)."""
        self._chunks_in_flight -= 1

    def push(self, samples: FloatArray, last: bool = False) -> bool:
        """Every stage inline, VAD one window at a time (offline tools, tests, a server without an
        engine); returns when the samples are in the voiceprint, or False as soon as the stream is
        found closed (the rest of the samples is left out). ``last``: the audio ends here (:meth:`accept`)."""
        vad_windows, windows = self.accept(samples, last)
        if windows.size == 0:
            return True
        probabilities = self._biometrics.vad.probabilities(
            vad_windows.reshape(-1), self.vad_state, sample_rate_hz=self.vad_rate_hz
        )
        for window, probability in zip(windows, probabilities.tolist(), strict=True):
            if self.closed:
                return False
            chunk = self.gate(window, probability)
            if chunk is not None:
                self._embed_inline(*chunk)
        return True

    def settle_inline(self, force: bool = False) -> bool:
        """Embed the tail inline when one is due (see :meth:`tail_due`), on the pusher's thread; True
        when a tail was cut."""
        tail = self.take_tail(force)
        if tail is None:
            return False
        self._embed_inline(*tail)
        return True

    def _embed_inline(self, speech: FloatArray, speech_s: float) -> None:
        vectors: dict[str, FloatArray] = {}
        try:
            for model_id, model in self._biometrics.models.items():
                vectors[model_id] = model.embed(speech)
        except (VoxgateError, ValueError) as exc:  # e.g. a degenerate chunk: skip it, keep the stream
            log.warning("stream chunk not embedded: %s", exc, extra={"stream_uuid": self.uuid})
            self.chunk_failed()
            return
        self.add_embeddings(vectors, speech_s)

    # -- voiceprint out ------------------------------------------------------------------------------------

    def voiceprint(self, min_speech_s: float = 0.0, what: str = "this operation") -> Voiceprint:
        """The pooled voiceprint of the speech embedded so far, without any forward pass.

        Raises InsufficientSpeech when it holds less than ``min_speech_s`` (or nothing at all).
        """
        with self._sums_lock:
            speech_s = self._speech_s
            sums = dict(self._sums)
        if speech_s < min_speech_s or not sums:
            raise InsufficientSpeech(speech_s, max(min_speech_s, self._chunk_windows * WINDOW_S), what)
        embeddings = {
            model_id: Embedding(
                model_id,
                self._biometrics.models[model_id].version,
                l2_normalise(vector.astype(np.float32)),
            )
            for model_id, vector in sums.items()
        }
        return Voiceprint(embeddings, speech_s)


    def voiceprint_of(self, pooled: Pooled, min_speech_s: float = 0.0, what: str = "this operation") -> Voiceprint:
        """The voiceprint of some pooled speech (e.g. one utterance: :meth:`pooled` now minus before it)."""
        if pooled.speech_s < min_speech_s or pooled.speech_s <= 0 or not pooled.sums:
            raise InsufficientSpeech(pooled.speech_s, min_speech_s, what)
        embeddings = {
            model_id: Embedding(
                model_id,
                self._biometrics.models[model_id].version,
                l2_normalise(vector.astype(np.float32)),
            )
            for model_id, vector in pooled.sums.items()
        }
        return Voiceprint(embeddings, pooled.speech_s)


@dataclass(frozen=True)
class Pooled:
    """A stream's voiceprint sums at one moment (per model, unit chunk embeddings weighted by their net
    speech) and that net speech. Sums are linear, so the speech between two moments is their difference,
    and speech from several spans adds up: an utterance is embedded once, with the stream's chunks."""

    sums: dict[str, npt.NDArray[np.float64]]
    speech_s: float

    def __sub__(self, earlier: Pooled) -> Pooled:
        sums = {m: v - earlier.sums[m] if m in earlier.sums else v for m, v in self.sums.items()}
        return Pooled(sums, max(0.0, self.speech_s - earlier.speech_s))

    def __add__(self, other: Pooled) -> Pooled:
        sums = dict(self.sums)
        for m, v in other.sums.items():
            sums[m] = sums[m] + v if m in sums else v
        return Pooled(sums, self.speech_s + other.speech_s)


EMPTY = Pooled({}, 0.0)


def _resampled(resampler: soxr.ResampleStream | None, samples: FloatArray, last: bool) -> FloatArray:
    """``samples`` through a stream resampler; ``last`` flushes what its filter holds back."""
    return samples if resampler is None else resampler.resample_chunk(samples, last=last)


def _padded(audio: FloatArray, width: int) -> FloatArray:
    """Zero-padded to whole windows of ``width``."""
    return np.pad(audio, (0, -audio.size % width))


def _resample_stream(from_hz: int, to_hz: int) -> soxr.ResampleStream | None:
    return None if from_hz == to_hz else soxr.ResampleStream(from_hz, to_hz, 1, dtype="float32", quality="HQ")


# How a session hands its audio to an inference engine (``InferenceEngine.submit``): queue the samples
# (native rate) for this pipeline, waiting while the stream is too far behind.
Submit: TypeAlias = Callable[[SpeechPipeline, FloatArray], Awaitable[None]]


class Settle(Protocol):
    """How a session has its settled tail embedded by that engine (``InferenceEngine.settle``): returns
    once the audio submitted so far went through VAD and the tail due then (if any) is in the voiceprint,
    or after the engine's own time limit."""

    def __call__(self, stream: SpeechPipeline, *, force: bool = False, wait: bool = True) -> Awaitable[None]: ...
