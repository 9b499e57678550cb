"""Live streams against whole recordings: does the incremental voiceprint score like the offline one?

For every set and channel of the accuracy report (``make accuracy``), each recording is played into a real
:class:`~voxgate.streams.session.StreamSession` the way a live call arrives: at its own rate on the
wideband channel; at 8 kHz on the telephone channel (native 8 kHz sets as recorded, 16 kHz sets through
the same simulated G.711 µ-law channel as the accuracy report), in 20 ms frames. The stream's pooled
voiceprint at the end of the call is scored against the offline whole-recording voiceprint of the very
same audio (from the accuracy report's embedding cache), trial by trial, with the shipped default profile.

A stream embeds its speech in chunks (``VOXGATE_STREAM_CHUNK_S``, 3 s of net speech); at the end of each
played call its audio ends (``last``) and it settles its tail (``force``: the call is over), as a verify at the end of a call does, so the
speech short of a whole chunk (at least ``TAIL_MIN_S``, 0.5 s of net speech) is embedded as one more chunk
and a 2-3 s utterance has a stream voiceprint too. Only a call with less net speech than that has none
(coverage). Sets of short clips are also played as *calls*: a few consecutive recordings of one speaker
(same folder) joined with short silences, each call embedded offline as one recording and streamed as one
call (several chunks pooled). Long recordings are also played cut where their first 2 and 4 s of net
speech end (short utterances of fluent speech).

Short utterances get a table of their own: every single recording (or cut) with 2-6 s of net speech
offline, its stream and offline voiceprints each scored against the offline voiceprints of every other
recording of the set, and the LLR difference of the two, trial by trial.

    python -m voxgate.evaluation.streaming --jobs 2 [--out docs/accuracy.md]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import inspect
import logging
import os
import pickle
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf
from tqdm import tqdm

from voxgate.audio.channel import telephone_channel
from voxgate.audio.decode import decode_file
from voxgate.audio.frames import float_to_pcm16
from voxgate.audio.resample import resample
from voxgate.audio.types import Audio, AudioLimits, FloatArray
from voxgate.audio.vad import VAD_SHA256
from voxgate.biometrics.engine import MODEL_RATE_HZ, Biometrics
from voxgate.biometrics.metrics import SummaryMetrics, summarize
from voxgate.biometrics.models import read_card
from voxgate.biometrics.profile import CalibrationProfile, Channel, shipped_profile
from voxgate.biometrics.voiceprint import Voiceprint
from voxgate.errors import InsufficientSpeech, VoxgateError
from voxgate.evaluation import accuracy
from voxgate.evaluation.accuracy import pct
from voxgate.evaluation.datasets import Dataset, read_dataset
from voxgate.evaluation.embedding import EmbedJob, FileResult, embed_one
from voxgate.evaluation.fitting import EmbeddedSet, fit_profile
from voxgate.evaluation.report import VerdictRates
from voxgate.evaluation.sections import carry_notes, notes_block, replace_section, table_row
from voxgate.settings import Settings
from voxgate.streams import session as session_module
from voxgate.streams.session import StreamSession, StreamType
from voxgate.streams.stages import TAIL_MIN_S

log = logging.getLogger(__name__)

REPO = accuracy.REPO
SECTION = "## Live streams: incremental vs offline voiceprints"
MODEL_IDS = ("ecapa", "campplus")  # what the shipped default profiles score with
FRAME_MS = 20.0  # one RTP packet / one Twilio media message
CALL_CLIPS = 4  # recordings joined into one call for sets of short clips
CALL_GAP_S = 0.5  # silence between the joined recordings
SHORT_SET_CHUNKS = 2.0  # a set is "short clips" when its median recording is shorter than this many chunks
SHORT_BAND_S = (2.0, 6.0)  # the short-utterance table: units with this much net speech offline
CUTS_S = (2.0, 4.0)  # recordings of the other sets are also played cut after this much net speech
# subsamples that keep a run without the cache within ~20 minutes on 2 cores (the first N of each speaker)
CALLS_PER_SPEAKER = 3
CUTS_PER_SPEAKER = 5
WITHIN_LLR = 0.5  # the short-utterance table's tolerance: |stream - offline LLR| of one trial
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


# -- one call: a recording, or a few recordings of one speaker joined ----------------------------------


@dataclass(frozen=True)
class Unit:
    """What one simulated live call plays: one recording, or several of one speaker joined in order."""

    name: str  # the recording's path relative to its set, `<path>@<cut>s`, or `<folder>/call-NN`
    speaker: str
    paths: tuple[Path, ...]
    # play (and embed offline) only the recording up to where its first this many seconds of net speech end
    speech_cut_s: float | None = None


@dataclass(frozen=True)
class StreamJob:
    """How every call of a run is played (picklable, sent to worker processes)."""

    model_dir: Path
    limits: AudioLimits
    min_speech_s: float  # the offline side's minimum, as in the accuracy report
    telephone: bool  # simulated 8 kHz G.711 µ-law channel first (only for sets above 8 kHz)
    chunk_s: float
    frame_ms: float = FRAME_MS
    gap_s: float = CALL_GAP_S
    max_chunk_s: float = 60.0

    def embed_job(self) -> EmbedJob:
        """The accuracy report's offline embedding of a whole recording, with the same settings."""
        return EmbedJob(
            model_dir=self.model_dir,
            model_ids=MODEL_IDS,
            limits=self.limits,
            min_speech_s=self.min_speech_s,
            telephone=self.telephone,
            max_chunk_s=self.max_chunk_s,
        )


@dataclass(frozen=True)
class UnitResult:
    name: str
    stream: Voiceprint | None  # None: less net speech than the shortest tail (or unusable audio)
    stream_speech_s: float  # net speech in the stream voiceprint (chunks and the settled tail)
    heard_speech_s: float  # net speech the stream's VAD found, embedded or not
    duration_s: float
    # only for joined calls and cuts; whole recordings come from the accuracy cache
    offline: FileResult | None = None
    error: str | None = None
    chunks: int = 0  # forward passes pooled in the stream voiceprint (the settled tail is one)


def units_of(dataset: Dataset, clips: int = 1) -> list[Unit]:
    """The set's recordings (``clips == 1``), or calls of ``clips`` consecutive recordings of one speaker
    in one folder (a speaker's leftover recordings that do not fill a call are not used)."""
    root = _root(dataset)
    if clips == 1:
        return [
            Unit(p.relative_to(root).as_posix(), s, (p,))
            for p, s in zip(dataset.files, dataset.speakers, strict=True)
        ]
    groups: dict[tuple[str, Path], list[Path]] = {}
    for path, speaker in zip(dataset.files, dataset.speakers, strict=True):
        groups.setdefault((speaker, path.parent), []).append(path)
    units = []
    for (speaker, folder), paths in groups.items():
        for k in range(len(paths) // clips):
            name = f"{folder.relative_to(root).as_posix()}/call-{k + 1:02d}"
            units.append(Unit(name, speaker, tuple(paths[k * clips : (k + 1) * clips])))
    return units


def cut_units(
    dataset: Dataset, cuts_s: Sequence[float] = CUTS_S, per_speaker: int | None = None
) -> list[Unit]:
    """Each recording (the first ``per_speaker`` of each speaker) once per cut: played only up to where its
    first ``cut`` seconds of net speech end."""
    return [
        Unit(f"{unit.name}@{cut:g}s", unit.speaker, unit.paths, cut)
        for cut in cuts_s
        for unit in _subset(units_of(dataset), per_speaker)
    ]


def _root(dataset: Dataset) -> Path:
    return Path(os.path.commonpath([p.parent for p in dataset.files]))


def play(samples: FloatArray, sample_rate_hz: int, biometrics: Biometrics, job: StreamJob) -> StreamSession:
    """Push audio into a new stream session in frames of ``job.frame_ms``, as a live door does; the last
    frame ends the audio (``last``: the resamplers and the open segment are flushed, as the offline pass
    ends at the recording's end) and the tail is settled (``force``: the call is over), as a verify at the
    end of a call does."""
    session = StreamSession(
        str(uuid.uuid4()), StreamType.HTTP, sample_rate_hz, {}, biometrics, chunk_s=job.chunk_s
    )
    frame = max(1, round(sample_rate_hz * job.frame_ms / 1000))
    for start in range(0, samples.size, frame):
        session.push(samples[start : start + frame], last=start + frame >= samples.size)
    session.pipeline.settle_inline(force=True)  # what `await session.settle(force=True)` runs inline
    return session


def run_unit(unit: Unit, job: StreamJob, biometrics: Biometrics) -> UnitResult:
    """Stream one call; a joined call or a cut is also embedded offline, as one recording, by the accuracy
    code."""
    try:
        decoded = [decode_file(p, limits=job.limits) for p in unit.paths]
        rate = decoded[0].sample_rate_hz
        if unit.speech_cut_s is not None:
            samples = _cut(decoded[0], unit.speech_cut_s, job, biometrics)
        elif len(decoded) == 1:
            samples = decoded[0].samples
        else:
            gap = np.zeros(round(job.gap_s * rate), dtype=np.float32)
            parts: list[FloatArray] = []
            for audio in decoded:
                parts += [resample(audio.samples, audio.sample_rate_hz, rate), gap]
            samples = np.concatenate(parts[:-1])
        derived = len(decoded) > 1 or unit.speech_cut_s is not None
        offline = _offline(samples, rate, job, biometrics) if derived else None
        if job.telephone:  # what embed_one does to the whole recording before the engine sees it
            samples, rate = telephone_channel(samples, rate)
        session = play(samples, rate, biometrics, job)
        try:
            stream: Voiceprint | None = session.voiceprint(min_speech_s=0.0)
        except InsufficientSpeech:
            stream = None
        session.close()
    except VoxgateError as exc:
        return UnitResult(unit.name, None, 0.0, 0.0, 0.0, None, f"{type(exc).__name__}: {exc}")
    duration_s = samples.size / rate
    return UnitResult(
        unit.name,
        stream,
        session.speech_s,
        session.heard_speech_s,
        duration_s,
        offline,
        None,
        session.chunks,
    )


def _cut(audio: Audio, speech_s: float, job: StreamJob, biometrics: Biometrics) -> FloatArray:
    """The recording up to where its first ``speech_s`` of net speech end (and the VAD's pad after it), as
    the offline VAD finds them on the channel's audio (:meth:`SpeechAnalysis.first`); at the source rate."""
    analysed = audio
    if job.telephone:
        samples, rate = telephone_channel(audio.samples, audio.sample_rate_hz)
        analysed = Audio(samples, rate, audio.channels_in_source, "ULAW", "simulated telephone channel")
    first = biometrics.analyse(analysed).first(speech_s)
    end_s = first.samples.size / MODEL_RATE_HZ
    return audio.samples[: min(audio.samples.size, round(end_s * audio.sample_rate_hz))]


def _offline(samples: FloatArray, rate: int, job: StreamJob, biometrics: Biometrics) -> FileResult:
    """The joined call as one recording file, embedded by :func:`embed_one` (decode, channel, VAD, models)."""
    with tempfile.TemporaryDirectory(prefix="voxgate-call-") as folder:
        path = Path(folder) / "call.flac"
        sf.write(path, float_to_pcm16(samples), rate, subtype="PCM_16")  # 16-bit recordings: lossless
        return embed_one(path, job.embed_job(), biometrics)


_worker: tuple[StreamJob, Biometrics] | None = None


def _init_worker(job: StreamJob) -> None:
    global _worker
    _worker = (job, _biometrics(job))


def _biometrics(job: StreamJob) -> Biometrics:
    return Biometrics(job.model_dir, MODEL_IDS, max_chunk_s=job.max_chunk_s)


def _run_one(unit: Unit) -> UnitResult:
    assert _worker is not None, "worker not initialised"
    return run_unit(unit, *_worker)


def stream_units(
    units: Sequence[Unit], job: StreamJob, *, jobs: int = 1, progress: bool = True, desc: str = "streaming"
) -> list[UnitResult]:
    """Every unit streamed once; results in the order of ``units``."""
    bar = tqdm(total=len(units), desc=desc, unit="call", disable=not progress, dynamic_ncols=True)
    by_name: dict[str, UnitResult] = {}
    try:
        for result in _run(units, job, jobs):
            by_name[result.name] = result
            bar.update()
    finally:
        bar.close()
    return [by_name[u.name] for u in units]


def _run(units: Sequence[Unit], job: StreamJob, jobs: int) -> Iterator[UnitResult]:
    if jobs <= 1 or len(units) < 4:
        biometrics = _biometrics(job)
        for unit in units:
            yield run_unit(unit, job, biometrics)
        return
    # longest first, so no long call is left alone at the end
    ordered = sorted(units, key=lambda u: -sum(p.stat().st_size for p in u.paths))
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(job,)) as pool:
        futures = [pool.submit(_run_one, u) for u in ordered]
        for future in as_completed(futures):
            yield future.result()


# -- comparing the two voiceprints trial by trial ------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """One kind of voiceprint pair scored with the profile over the common trials."""

    metrics: SummaryMetrics
    rates: VerdictRates
    llr: FloatArray


@dataclass(frozen=True)
class Comparison:
    """One set, channel and unit kind: offline against incremental voiceprints on the same trials."""

    set_name: str
    channel: Channel
    simulated: bool
    kind: str  # "recordings" or "calls of N"
    units: int
    offline_ok: int  # units with an offline voiceprint (≥ min_score_speech_s)
    both: int  # ... and a stream voiceprint (≥ one chunk)
    is_target: BoolArray
    offline: Scored
    stream: Scored  # both sides streamed (enrolled on a live call, verified on another)
    mixed: Scored  # offline enrollment (imported recording), verified on a live call
    self_cosine: dict[str, FloatArray]  # per model: stream vs offline voiceprint of each unit
    chunks: IntArray  # per trial: stream chunks (a settled tail is one) pooled in its two stream voiceprints
    offline_speech_s: float  # mean net speech of the compared units
    stream_speech_s: float

    @property
    def pearson(self) -> float:
        return float(np.corrcoef(self.offline.llr, self.stream.llr)[0, 1])

    def pearson_of(self, target: bool) -> float:
        mask = self.is_target == target
        return float(np.corrcoef(self.offline.llr[mask], self.stream.llr[mask])[0, 1])

    def difference(
        self, target: bool, mixed: bool = False, chunks: tuple[int, int] | None = None
    ) -> FloatArray:
        """Stream (or mixed) minus offline LLR of the target (or non-target) trials, optionally only those
        whose two stream voiceprints pool ``lo <= chunks <= hi`` chunks together."""
        mask = self.is_target == target
        if chunks is not None:
            mask &= (self.chunks >= chunks[0]) & (self.chunks <= chunks[1])
        other = self.mixed if mixed else self.stream
        diff: FloatArray = np.asarray(other.llr[mask] - self.offline.llr[mask], dtype=np.float32)
        return diff


def _scored(profile: CalibrationProfile, llr: FloatArray, is_target: BoolArray) -> Scored:
    verdicts = [profile.thresholds.verdict(float(x)).value for x in llr]
    rates = VerdictRates.of(
        [v for v, t in zip(verdicts, is_target, strict=True) if t],
        [v for v, t in zip(verdicts, is_target, strict=True) if not t],
    )
    return Scored(summarize(llr[is_target], llr[~is_target]), rates, llr)


def paired_sets(
    dataset: Dataset,
    channel: Channel,
    units: Sequence[Unit],
    offline: Sequence[FileResult],
    streamed: Sequence[UnitResult],
) -> tuple[EmbeddedSet, EmbeddedSet, int, IntArray]:
    """The units with both voiceprints as two aligned EmbeddedSets (offline, stream), how many units had an
    offline voiceprint at all, and the stream chunks of each unit in the two sets."""
    offline_ok = [i for i, r in enumerate(offline) if not r.error]
    both = [i for i in offline_ok if streamed[i].stream is not None]
    names = tuple(Path(units[i].name) for i in both)
    paired = Dataset(dataset.name, names, tuple(units[i].speaker for i in both))
    stream_results: list[FileResult] = []
    for i in both:
        vp = streamed[i].stream
        assert vp is not None
        stream_results.append(
            FileResult(names[len(stream_results)], offline[i].source_rate_hz, vp.speech_s, {None: vp})
        )
    return (
        EmbeddedSet(paired, channel, tuple(offline[i] for i in both)),
        EmbeddedSet(paired, channel, tuple(stream_results)),
        len(offline_ok),
        np.array([streamed[i].chunks for i in both], dtype=np.int64),
    )


def compare(
    profile: CalibrationProfile,
    offline_set: EmbeddedSet,
    stream_set: EmbeddedSet,
    *,
    units: int,
    offline_ok: int,
    kind: str,
    simulated: bool,
    chunks: IntArray,
) -> Comparison:
    """Score every unordered pair of units three ways: offline/offline, stream/stream, offline/stream.
    ``chunks``: each unit's stream chunks, aligned with the two sets."""
    offline_trials, stream_trials = offline_set.trials(), stream_set.trials()
    off, pairs, is_target = offline_trials.enrolled, offline_trials.pairs, offline_trials.is_target
    live = stream_trials.enrolled
    assert np.array_equal(pairs, stream_trials.pairs), "offline and stream sets are not aligned"

    def llr(enrolled: list[Voiceprint], tests: list[Voiceprint]) -> FloatArray:
        return profile.pair_llrs(enrolled, tests, pairs)

    cosines = {
        m: np.array(
            [a.embedding(m).vector @ b.embedding(m).vector for a, b in zip(off, live, strict=True)],
            dtype=np.float32,
        )
        for m in profile.model_ids
    }
    per_unit = np.asarray(chunks, dtype=np.int64)
    assert per_unit.shape == (len(live),), "one chunk count per unit"
    return Comparison(
        set_name=offline_set.name,
        channel=offline_set.channel,
        simulated=simulated,
        kind=kind,
        units=units,
        offline_ok=offline_ok,
        both=len(off),
        is_target=is_target,
        offline=_scored(profile, llr(off, off), is_target),
        stream=_scored(profile, llr(live, live), is_target),
        mixed=_scored(profile, llr(off, live), is_target),
        self_cosine=cosines,
        chunks=per_unit[pairs[:, 0]] + per_unit[pairs[:, 1]],
        offline_speech_s=float(np.mean([v.speech_s for v in off])),
        stream_speech_s=float(np.mean([v.speech_s for v in live])),
    )


# -- short utterances: each one's stream and offline voiceprint against the rest of its set ---------------


@dataclass(frozen=True)
class ShortSpeech:
    """One set, channel and kind of unit: its units with ``SHORT_BAND_S`` of net speech offline, each
    enrolled twice (stream voiceprint, offline voiceprint) and tested against the offline voiceprint of
    every other recording of the set."""

    set_name: str
    channel: Channel
    simulated: bool
    kind: str  # "recordings", or "first N s of speech" (cuts)
    units: int  # all units of this kind
    in_band: int  # ... whose offline net speech is within the band
    covered: int  # ... of those with a stream voiceprint
    offline_speech_s: FloatArray  # per covered unit
    stream_speech_s: FloatArray
    cosines: dict[str, FloatArray]  # per model: stream vs offline voiceprint of each covered unit
    delta: FloatArray  # |LLR(stream-enrolled vs test) - LLR(offline-enrolled vs test)|, covered units' trials
    uncovered_trials: int  # trials of the in-band units without a stream voiceprint (never within)

    @property
    def trials(self) -> int:
        return int(self.delta.size) + self.uncovered_trials

    @property
    def within(self) -> float:
        """Share of every in-band unit's trials whose two LLRs are within ``WITHIN_LLR``."""
        return float((self.delta <= WITHIN_LLR).sum() / self.trials) if self.trials else float("nan")


def short_speech(
    profile: CalibrationProfile,
    references: Sequence[FileResult],
    offline: Sequence[FileResult],
    streamed: Sequence[UnitResult],
    source: Sequence[int],
    *,
    set_name: str,
    kind: str,
    simulated: bool,
    band_s: tuple[float, float] = SHORT_BAND_S,
    block: int = 64,
) -> ShortSpeech:
    """Units ``offline``/``streamed`` (aligned) come from recordings ``source`` of a set whose offline
    results are ``references``. Each unit with ``band_s`` of net speech offline is scored, enrolled once with
    its stream and once with its offline voiceprint, against the offline voiceprints of every other
    recording of the set (not its own), with ``profile``; units without a stream voiceprint only count."""
    usable = np.array([j for j, r in enumerate(references) if not r.error], dtype=np.int64)
    tests = [references[j].voiceprints[None] for j in usable]
    in_band = [
        k
        for k, r in enumerate(offline)
        if not r.error and None in r.voiceprints and band_s[0] <= r.speech_s <= band_s[1]
    ]
    covered = [k for k in in_band if streamed[k].stream is not None]
    others = {k: np.flatnonzero(usable != source[k]) for k in in_band}
    deltas: list[FloatArray] = []
    for start in range(0, len(covered), block):
        enrolled: list[Voiceprint] = []
        stream_pairs, offline_pairs = [], []
        for k in covered[start : start + block]:
            live = streamed[k].stream
            assert live is not None
            tested = others[k]
            stream_pairs.append(np.stack([np.full(tested.size, len(enrolled)), tested], axis=1))
            offline_pairs.append(np.stack([np.full(tested.size, len(enrolled) + 1), tested], axis=1))
            enrolled += [live, offline[k].voiceprints[None]]
        if not enrolled:
            continue
        n = sum(len(x) for x in stream_pairs)
        pairs = np.concatenate(stream_pairs + offline_pairs).astype(np.int64)
        llr = profile.pair_llrs(enrolled, tests, pairs)
        deltas.append(np.abs(llr[:n] - llr[n:]).astype(np.float32))
    lives: list[Voiceprint] = []
    for k in covered:
        live = streamed[k].stream
        assert live is not None
        lives.append(live)
    offs = [offline[k].voiceprints[None] for k in covered]
    return ShortSpeech(
        set_name=set_name,
        channel=profile.channel,
        simulated=simulated,
        kind=kind,
        units=len(offline),
        in_band=len(in_band),
        covered=len(covered),
        offline_speech_s=np.array([v.speech_s for v in offs], dtype=np.float32),
        stream_speech_s=np.array([v.speech_s for v in lives], dtype=np.float32),
        cosines={
            m: np.array(
                [o.embedding(m).vector @ v.embedding(m).vector for o, v in zip(offs, lives, strict=True)],
                dtype=np.float32,
            )
            for m in profile.model_ids
        },
        delta=np.concatenate(deltas) if deltas else np.zeros(0, dtype=np.float32),
        uncovered_trials=sum(int(others[k].size) for k in in_band if streamed[k].stream is None),
    )


# -- the run -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """What a run measured for one set, channel and unit kind (the input to the tables and the refit)."""

    comparison: Comparison
    offline_set: EmbeddedSet
    stream_set: EmbeddedSet
    streamed: tuple[UnitResult, ...]


@functools.cache
def _source_hash() -> str:
    """The code that makes a stream voiceprint is part of the cache key: a changed session (or a changed way
    of playing calls) is measured again. Read once per run, when the modules are loaded."""
    digest = hashlib.sha256()
    package = Path(session_module.__file__ or "").parents[1]
    for name in (
        "streams/session.py",
        "streams/stages.py",
        "audio/vad.py",
        "audio/resample.py",
        "audio/channel.py",
        "biometrics/engine.py",
        "evaluation/embedding.py",
    ):
        digest.update((package / name).read_bytes())
    for code in (StreamJob, UnitResult, run_unit, play, _cut, _offline):
        digest.update(inspect.getsource(code).encode())
    return digest.hexdigest()


def _cached_stream(
    dataset: Dataset,
    channel: Channel,
    units: Sequence[Unit],
    job: StreamJob,
    settings: Settings,
    cache: Path,
    jobs: int,
) -> list[UnitResult]:
    key_parts = [
        dataset.name,
        repr(job.telephone),
        repr((job.chunk_s, job.frame_ms, job.gap_s, job.min_speech_s, job.max_chunk_s)),
        VAD_SHA256,
        *(read_card(settings.model_dir, m).onnx_sha256 for m in MODEL_IDS),
        _source_hash(),
        *(f"{u.name}={'|'.join(str(p) for p in u.paths)}" for u in units),
    ]
    key = hashlib.sha256("\n".join(key_parts).encode()).hexdigest()[:16]
    kind = (
        "cuts"
        if any(u.speech_cut_s is not None for u in units)
        else "rec"
        if all(len(u.paths) == 1 for u in units)
        else "calls"
    )
    path = cache / f"{dataset.name}-{'tel' if job.telephone else 'wb'}-{kind}-{key}.pkl"
    if path.exists():
        with path.open("rb") as handle:
            cached: list[UnitResult] = pickle.load(handle)  # our own cache file
        print(f"{path.name}: cached", file=sys.stderr)
        return cached
    desc = f"{dataset.name} {channel.value} {kind}"
    results = stream_units(units, job, jobs=jobs, desc=desc)
    failed = [r for r in results if r.error]
    if failed:
        log.warning(
            "%d of %d calls unusable (first: %s: %s)",
            len(failed),
            len(units),
            failed[0].name,
            failed[0].error,
        )
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as handle:
        pickle.dump(results, handle)
    partial.replace(path)
    for stale in cache.glob(f"{path.name.rsplit('-', 1)[0]}-*.pkl"):
        if stale != path:  # measured with other code or another selection of units
            stale.unlink()
    return results


def run(
    speech: Path,
    settings: Settings,
    cache: Path,
    accuracy_cache: Path,
    jobs: int,
    *,
    only: Sequence[str] = (),
    per_speaker: int | None = None,
    call_clips: int = CALL_CLIPS,
    cuts_s: Sequence[float] = CUTS_S,
    calls_per_speaker: int = CALLS_PER_SPEAKER,
    cuts_per_speaker: int = CUTS_PER_SPEAKER,
) -> tuple[list[Measured], list[ShortSpeech]]:
    """Every set and channel of the accuracy report: recordings, and calls for sets of short clips (the
    comparisons); the short utterances: recordings of 2-6 s of net speech, and cuts of the other sets."""
    sets = [
        read_dataset(folder)
        for folder in sorted(p for p in speech.iterdir() if (p / "manifest.csv").exists())
        if not only or folder.name in only
    ]
    profiles = {c: shipped_profile(c.value) for c in Channel}
    measured, shorts = [], []
    for dataset in sets:
        native = accuracy.embed_set(dataset, False, settings, accuracy_cache, jobs)
        wideband = min(r.source_rate_hz for r in native if not r.error) >= 16000
        channels = (
            [(Channel.WIDEBAND, False), (Channel.TELEPHONE, True)]
            if wideband
            else [(Channel.TELEPHONE, False)]
        )
        short = _median_duration_s(dataset) < SHORT_SET_CHUNKS * settings.stream_chunk_s
        for channel, telephone in channels:
            offline_all = (
                accuracy.embed_set(dataset, telephone, settings, accuracy_cache, jobs)
                if telephone
                else native
            )
            job = StreamJob(
                model_dir=settings.model_dir,
                limits=AudioLimits.from_settings(settings),
                min_speech_s=settings.min_score_speech_s,
                telephone=telephone,
                chunk_s=settings.stream_chunk_s,
                max_chunk_s=settings.max_embed_chunk_s,
            )
            index = {p: i for i, p in enumerate(dataset.files)}
            for clips in (1, call_clips) if short else (1,):
                most = per_speaker if clips == 1 else min(per_speaker or calls_per_speaker, calls_per_speaker)
                units = _subset(units_of(dataset, clips), most)
                streamed = _cached_stream(dataset, channel, units, job, settings, cache, jobs)
                if clips == 1:
                    offline = [offline_all[index[u.paths[0]]] for u in units]
                    shorts.append(
                        short_speech(
                            profiles[channel],
                            offline_all,
                            offline,
                            streamed,
                            [index[u.paths[0]] for u in units],
                            set_name=dataset.name,
                            kind="recordings",
                            simulated=telephone,
                        )
                    )
                else:
                    offline = _derived_offline(streamed)
                offline_set, stream_set, offline_ok, chunks = paired_sets(
                    dataset, channel, units, offline, streamed
                )
                comparison = compare(
                    profiles[channel],
                    offline_set,
                    stream_set,
                    units=len(units),
                    offline_ok=offline_ok,
                    kind="recordings" if clips == 1 else f"calls of {clips}",
                    simulated=telephone,
                    chunks=chunks,
                )
                measured.append(Measured(comparison, offline_set, stream_set, tuple(streamed)))
            if short or not cuts_s:
                continue
            cuts = cut_units(dataset, cuts_s, min(per_speaker or cuts_per_speaker, cuts_per_speaker))
            streamed = _cached_stream(dataset, channel, cuts, job, settings, cache, jobs)
            for cut in cuts_s:
                chosen = [k for k, u in enumerate(cuts) if u.speech_cut_s == cut]
                shorts.append(
                    short_speech(
                        profiles[channel],
                        offline_all,
                        _derived_offline([streamed[k] for k in chosen]),
                        [streamed[k] for k in chosen],
                        [index[cuts[k].paths[0]] for k in chosen],
                        set_name=dataset.name,
                        kind=f"first {cut:g} s of speech",
                        simulated=telephone,
                    )
                )
    return measured, shorts


def _derived_offline(streamed: Sequence[UnitResult]) -> list[FileResult]:
    """The offline side of joined calls and cuts: embedded by the worker that streamed them."""
    offline = []
    for r in streamed:
        if r.offline is None:
            offline.append(FileResult(Path(r.name), 0, 0.0, {}, r.error or "not embedded"))
        else:
            offline.append(r.offline)
    return offline


def _median_duration_s(dataset: Dataset) -> float:
    return float(np.median([sf.info(p).duration for p in dataset.files]))


def _subset(units: list[Unit], per_speaker: int | None) -> list[Unit]:
    if per_speaker is None:
        return units
    kept: dict[str, int] = {}
    out = []
    for unit in units:
        if kept.get(unit.speaker, 0) < per_speaker:
            kept[unit.speaker] = kept.get(unit.speaker, 0) + 1
            out.append(unit)
    return out


# -- refitting on stream-pooled embeddings (what `voxgate calibrate` does, fed live voiceprints) ---------


@dataclass(frozen=True)
class Refit:
    channel: Channel
    offline_fit: CalibrationProfile  # fitted on the offline voiceprints of the same units, all sets
    stream_fit: CalibrationProfile  # fitted on their stream voiceprints, all sets
    held_out: dict[str, tuple[Scored, Scored]]  # set -> its stream trials scored by (offline-, stream-fitted)


def refit(measured: Sequence[Measured]) -> list[Refit]:
    """Could profiles be refitted on stream voiceprints, and would that help live streams?

    Per channel, the default engine's profile is fitted with the function `voxgate calibrate` uses, once on
    the offline and once on the stream voiceprints of the same units (calls for the short-clip sets,
    recordings otherwise). Each set's stream trials are scored held out by both.
    """
    out = []
    for channel in Channel:
        chosen: dict[str, Measured] = {}
        for m in measured:
            usable = m.comparison.channel is channel and m.comparison.is_target.any()
            # calls replace the recordings of the same set
            if usable and (m.comparison.set_name not in chosen or m.comparison.kind != "recordings"):
                chosen[m.comparison.set_name] = m
        if len(chosen) < 2:
            continue
        held_out = {}
        for name, m in chosen.items():
            others = [o for o in chosen.values() if o is not m]
            scored = []
            for side in ("offline", "stream"):
                profile = _fit([_side(o, side) for o in others], channel, f"{side}-held-out-{name}")
                scored.append(_scored(profile, _llrs(profile, m.stream_set), m.comparison.is_target))
            held_out[name] = (scored[0], scored[1])
        out.append(
            Refit(
                channel,
                _fit([m.offline_set for m in chosen.values()], channel, "offline"),
                _fit([m.stream_set for m in chosen.values()], channel, "stream"),
                held_out,
            )
        )
    return out


def _side(measured: Measured, side: str) -> EmbeddedSet:
    return measured.offline_set if side == "offline" else measured.stream_set


def _fit(sets: Sequence[EmbeddedSet], channel: Channel, name: str) -> CalibrationProfile:
    return fit_profile(sets, MODEL_IDS, name=f"{channel.value}-{name}", channel=channel, normalisation="none")


def _llrs(profile: CalibrationProfile, embedded: EmbeddedSet) -> FloatArray:
    trials = embedded.trials()
    return profile.pair_llrs(trials.enrolled, trials.tests, trials.pairs)


# -- the report ----------------------------------------------------------------------------------------


def _set_label(c: Comparison) -> str:
    return f"{c.set_name} (simulated)" if c.simulated else c.set_name


def render(
    measured: Sequence[Measured],
    refits: Sequence[Refit],
    chunk_s: float,
    shorts: Sequence[ShortSpeech] = (),
) -> str:
    """The live-stream section, its notes block holding the placeholder (``main`` carries the written notes
    over from the existing document)."""
    order = list(Channel)
    comparisons = sorted(
        (m.comparison for m in measured),
        key=lambda c: (order.index(c.channel), c.set_name, c.kind != "recordings"),
    )
    profiles = {c: shipped_profile(c.value) for c in Channel}
    out = [
        SECTION,
        "",
        "Regenerate with `make accuracy-streaming` (`python -m voxgate.evaluation.streaming --jobs 2 --out "
        "docs/accuracy.md`): it rewrites this section only,",
        f"{RUNTIME}; streamed calls are cached in `.cache/streaming/` (keyed on the stream code, so a changed",
        "`StreamSession` is measured again), the offline voiceprints are `make accuracy`'s cache. `make accuracy`",
        "keeps this section as it is; run `make accuracy-streaming` after it to refresh it (seconds, from the cache).",
        "",
        "Does the voiceprint a live stream builds (VAD window by window, every "
        f"{chunk_s:g} s of net speech embedded once, duration-weighted pooling) score like the offline",
        "voiceprint of the same audio, which the shipped profiles were fitted on? Each recording is played into a real",
        "`StreamSession` in 20 ms frames as a live call arrives: wideband at its own rate; telephone at 8 kHz (native",
        "8 kHz sets as recorded, 16 kHz sets through the accuracy report's simulated µ-law channel). The last frame",
        "ends the stream's audio (`push(..., last=True)`: the resamplers' lookahead, the last partial window and an",
        "open segment are flushed, as the offline pass ends at the end of the recording), the stream settles its",
        "tail (`settle(force=True)`, as a verify at the end of a call does), and its voiceprint is compared with the",
        "offline whole-recording voiceprint of the same audio.",
        "",
        "- **Trials**: every unordered pair of units that have *both* voiceprints, scored with the shipped default",
        f"  profile (`wideband`/`telephone`, ECAPA+CAM++ fused; `verified` at LLR ≥ {profiles[Channel.WIDEBAND].thresholds.accept_llr:g} / "
        f"{profiles[Channel.TELEPHONE].thresholds.accept_llr:g}). *offline*: offline vs offline (the accuracy",
        "  report); *stream*: both sides from live streams; ΔLLR = stream − offline, trial by trial.",
        "- **Coverage**: units with a stream voiceprint / units with an offline one (≥ 1 s of net speech). A stream",
        f"  embeds whole chunks ({chunk_s:g} s of net speech) as they fill, and the speech after the last one as one",
        f"  more chunk when the call ends (the tail, if it holds ≥ {TAIL_MIN_S:g} s of net speech; a shorter one is",
        "  left out); a unit with less speech than that has no stream voiceprint.",
        f"- **Calls**: sets whose median recording is shorter than {SHORT_SET_CHUNKS:g} chunks are also played as calls: "
        f"{CALL_CLIPS} consecutive",
        f"  recordings of one speaker (one folder) joined with {CALL_GAP_S:g} s of silence; the offline side is the joined",
        "  call embedded as one recording by the accuracy report's code. Leftover recordings that fill no call are unused;",
        f"  for run time only the first {CALLS_PER_SPEAKER} calls of each speaker are played (a subsample).",
        "",
        "| channel | set | units | coverage | target / non-target | EER % offline / stream | Cllr offline / stream "
        "| r (LLR) | target \\|ΔLLR\\| mean / max | non-target \\|ΔLLR\\| mean / max | non-target ΔLLR mean / max "
        "| `verified` FA % offline / stream |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        t, n = c.difference(True), c.difference(False)
        out.append(
            table_row(
                [
                    c.channel.value,
                    _set_label(c),
                    c.kind,
                    f"{c.both} / {c.offline_ok} (of {c.units})",
                    f"{c.offline.metrics.n_target} / {c.offline.metrics.n_nontarget}",
                    f"{pct(c.offline.metrics.eer)} / {pct(c.stream.metrics.eer)}",
                    f"{c.offline.metrics.cllr:.3f} / {c.stream.metrics.cllr:.3f}",
                    f"{c.pearson:.3f}",
                    f"{np.abs(t).mean():.2f} / {np.abs(t).max():.2f}",
                    f"{np.abs(n).mean():.2f} / {np.abs(n).max():.2f}",
                    f"{n.mean():+.2f} / {n.max():+.2f}",
                    f"{pct(c.offline.rates.false_accept)} / {pct(c.stream.rates.false_accept)}",
                ]
            )
        )
    out += [
        "",
        "Details: how close the two voiceprints of one unit are (cosine, mean / min), the net speech behind them,",
        "correlation within each class, the `not_verified` false rejects, and the realistic mixed case: enrolled",
        "offline (imported recordings), verified on a live stream.",
        "",
        "| channel | set | units | cosine ECAPA | cosine CAM++ | speech s offline / stream | r target / non-target "
        "| target ΔLLR mean | `not_verified` FR % offline / stream | mixed EER % | mixed `verified` FA % | mixed `not_verified` FR % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        cos = {m: f"{v.mean():.3f} / {v.min():.3f}" for m, v in c.self_cosine.items()}
        out.append(
            table_row(
                [
                    c.channel.value,
                    _set_label(c),
                    c.kind,
                    cos.get("ecapa", "–"),
                    cos.get("campplus", "–"),
                    f"{c.offline_speech_s:.1f} / {c.stream_speech_s:.1f}",
                    f"{c.pearson_of(True):.3f} / {c.pearson_of(False):.3f}",
                    f"{c.difference(True).mean():+.2f}",
                    f"{pct(c.offline.rates.false_reject)} / {pct(c.stream.rates.false_reject)}",
                    pct(c.mixed.metrics.eer),
                    pct(c.mixed.rates.false_accept),
                    pct(c.mixed.rates.false_reject),
                ]
            )
        )
    out += [
        "",
        "Impostor shift by the number of chunks pooled: mean non-target ΔLLR (stream − offline) of the trials whose",
        f"two stream voiceprints hold that many chunks together (≤ {chunk_s:g} s of net speech each, the settled tail",
        "is one); in brackets the mixed case (offline enrollment, live verification: only one side pooled); – where",
        "fewer than 20 trials.",
        "",
        "| channel | set | units | " + " | ".join(f"{_bucket(b)} chunks" for b in CHUNK_BUCKETS) + " |",
        "|---|---|---|" + "---|" * len(CHUNK_BUCKETS),
    ]
    for c in comparisons:
        cells = []
        for bucket in CHUNK_BUCKETS:
            live, mixed = c.difference(False, chunks=bucket), c.difference(False, mixed=True, chunks=bucket)
            cells.append(f"{live.mean():+.2f} ({mixed.mean():+.2f})" if live.size >= 20 else "–")
        out.append(table_row([c.channel.value, _set_label(c), c.kind, *cells]))
    if refits:
        out += [
            "",
            "Refitting on stream voiceprints (the shipped profiles are unchanged): per channel, the default engine's",
            "profile fitted with the function `voxgate calibrate` uses (`fit_profile`, fusion + thresholds), once on the",
            "offline and once on the stream voiceprints of the same units (calls for the short-clip sets). Each set's",
            "*stream* trials scored held out (profile fitted on the channel's other sets; wideband: one other set).",
            "",
            "| channel | set | fitted on offline voiceprints: EER % / Cllr / `verified` FA % / `not_verified` FR % "
            "| fitted on stream voiceprints: EER % / Cllr / FA % / FR % |",
            "|---|---|---|---|",
        ]
        for r in refits:
            for name, (offline_fit, stream_fit) in r.held_out.items():
                out.append(
                    f"| {r.channel.value} | {name} | {_figures(offline_fit)} | {_figures(stream_fit)} |"
                )
        out += [
            "",
            "| channel | profile | accept LLR | reject LLR | fusion weights (ECAPA, CAM++) | offset |",
            "|---|---|---|---|---|---|",
        ]
        for r in refits:
            for label, p in (
                ("shipped", shipped_profile(r.channel.value)),
                ("fitted on offline voiceprints of these units", r.offline_fit),
                ("fitted on stream voiceprints of these units", r.stream_fit),
            ):
                weights = ", ".join(f"{t.weight:.2f}" for t in p.terms)
                out.append(
                    f"| {r.channel.value} | {label} | {p.thresholds.accept_llr:.3f} | {p.thresholds.reject_llr:.3f} "
                    f"| {weights} | {p.offset:.3f} |"
                )
    if shorts:
        out += ["", *_short_table(shorts, order)]
    out += ["", *notes_block(), ""]
    return "\n".join(out)


def _short_table(shorts: Sequence[ShortSpeech], order: list[Channel]) -> list[str]:
    low, high = SHORT_BAND_S
    out = [
        f"Short utterances ({low:g}-{high:g} s of net speech): every single recording whose offline voiceprint holds",
        f"{low:g}-{high:g} s of net speech; the long-recording sets also cut where the first "
        f"{' / '.join(f'{c:g}' for c in CUTS_S)} s of net speech of each",
        f"recording end (the first {CUTS_PER_SPEAKER} recordings of each speaker, a subsample for run time; found by the",
        "offline VAD, its pad after them kept; the cut is embedded offline and streamed, like a call). Each utterance",
        "is enrolled twice, with its stream and with its offline voiceprint, and tested against the offline voiceprint",
        "of every other recording of its set (not its own) with the shipped default profile;",
        "|ΔLLR| = |LLR(stream-enrolled vs test) − LLR(offline-enrolled vs test)|, trial by trial.",
        "*utterances*: in the band / all units; *covered*: those with a stream voiceprint; the speech, cosine and",
        f"|ΔLLR| figures are over the covered ones; *within {WITHIN_LLR:g} LLR* counts the trials of every utterance in",
        "the band, an uncovered one's as not within.",
        "",
        "| channel | set | units | utterances | covered | speech s offline / stream (median) | \\|Δ speech\\| ≤ 0.1 s % "
        "| cosine ECAPA median / min | cosine CAM++ median / min | trials | \\|ΔLLR\\| median / p95 / max "
        f"| within {WITHIN_LLR:g} LLR % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = sorted(shorts, key=lambda r: (order.index(r.channel), r.set_name, r.kind != "recordings", r.kind))
    for r in rows:
        label = f"{r.set_name} (simulated)" if r.simulated else r.set_name
        cells = [r.channel.value, label, r.kind, f"{r.in_band} / {r.units}"]
        if not r.covered:
            cells += ["0", *["–"] * 4, str(r.trials), "–", pct(r.within) if r.trials else "–"]
        else:
            close = np.abs(r.stream_speech_s - r.offline_speech_s) <= 0.1 + 1e-6
            d = r.delta
            cells += [
                f"{r.covered} ({pct(r.covered / r.in_band)} %)",
                f"{np.median(r.offline_speech_s):.2f} / {np.median(r.stream_speech_s):.2f}",
                pct(float(close.mean())),
                *(
                    f"{np.median(r.cosines[m]):.3f} / {r.cosines[m].min():.3f}" if m in r.cosines else "–"
                    for m in MODEL_IDS
                ),
                str(r.trials),
                f"{np.median(d):.2f} / {np.percentile(d, 95):.2f} / {d.max():.2f}" if d.size else "–",
                pct(r.within),
            ]
        out.append(table_row(cells))
    return out


CHUNK_BUCKETS = ((2, 2), (3, 4), (5, 8), (9, 16), (17, 10_000))


def _bucket(bucket: tuple[int, int]) -> str:
    lo, hi = bucket
    return str(lo) if lo == hi else f"≥ {lo}" if hi >= 10_000 else f"{lo}-{hi}"


def _figures(s: Scored) -> str:
    return f"{pct(s.metrics.eer)} / {s.metrics.cllr:.3f} / {pct(s.rates.false_accept)} / {pct(s.rates.false_reject)}"


RUNTIME = "about 20 minutes on 2 shared cores without the cache (18.5 min measured)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--speech", type=Path, default=accuracy.DEFAULT_SPEECH, help="folder of speech sets")
    parser.add_argument("--out", type=Path, help="Markdown file whose live-stream section is (re)written")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "streaming")
    parser.add_argument("--accuracy-cache", type=Path, default=REPO / ".cache" / "accuracy")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sets", nargs="*", default=(), help="only these sets (default: all)")
    parser.add_argument("--per-speaker", type=int, help="only the first N units of each speaker (a subset)")
    parser.add_argument("--no-refit", action="store_true", help="skip fitting profiles on stream voiceprints")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.speech.is_dir():
        print(f"streaming: no speech folder at {args.speech}", file=sys.stderr)
        return 1
    started = time.monotonic()
    settings = Settings()
    measured, shorts = run(
        args.speech,
        settings,
        args.cache,
        args.accuracy_cache,
        args.jobs,
        only=args.sets,
        per_speaker=args.per_speaker,
    )
    refits = [] if args.no_refit else refit(measured)
    section = render(measured, refits, settings.stream_chunk_s, shorts)
    print(f"streaming: {time.monotonic() - started:.0f} s", file=sys.stderr)
    if args.out:
        document = args.out.read_text() if args.out.exists() else ""
        args.out.write_text(carry_notes(document, replace_section(document, SECTION, section)))
        print(f"streaming: wrote {SECTION[3:]!r} in {args.out}", file=sys.stderr)
    else:
        print(section)
    return 0


if __name__ == "__main__":
    # Run as the imported module: the cache then pickles voxgate.evaluation.streaming.UnitResult, which any
    # importer can read, not __main__.UnitResult.
    from voxgate.evaluation import streaming

    raise SystemExit(streaming.main())
