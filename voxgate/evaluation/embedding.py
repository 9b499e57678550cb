"""Embedding many recordings once each, with a progress bar, optionally in several worker processes."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from voxgate.audio.channel import telephone_channel
from voxgate.audio.decode import decode_file
from voxgate.audio.types import Audio, AudioLimits
from voxgate.biometrics.engine import Biometrics
from voxgate.biometrics.voiceprint import Embedding, Voiceprint
from voxgate.errors import VoxgateError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedJob:
    """How every file of a run is turned into voiceprints (picklable, sent to worker processes)."""

    model_dir: Path
    model_ids: tuple[str, ...]
    limits: AudioLimits
    min_speech_s: float
    telephone: bool = False  # simulate an 8 kHz G.711 µ-law channel first
    lengths_s: tuple[float | None, ...] = (None,)  # net-speech crops; None = all the speech
    channel: int | None = None
    max_chunk_s: float = 60.0
    int8: bool = False  # the statically quantised models
    whole_clip: bool = False  # also embed the whole recording, no VAD (the naive baseline of the report)


@dataclass(frozen=True)
class FileResult:
    """One recording's voiceprints by crop length (None = full), or the reason there are none."""

    path: Path
    source_rate_hz: int
    speech_s: float
    voiceprints: dict[float | None, Voiceprint]
    error: str | None = None
    whole: Voiceprint | None = None  # the whole recording, no VAD (``EmbedJob.whole_clip``)


_worker: tuple[EmbedJob, Biometrics] | None = None


def _init_worker(job: EmbedJob) -> None:
    global _worker
    _worker = (job, Biometrics(job.model_dir, job.model_ids, max_chunk_s=job.max_chunk_s, int8=job.int8))


def _embed_one(path: Path) -> FileResult:
    assert _worker is not None, "worker not initialised"
    job, biometrics = _worker
    return embed_one(path, job, biometrics)


def embed_one(path: Path, job: EmbedJob, biometrics: Biometrics) -> FileResult:
    """Decode, find the speech, embed; a file that cannot be used yields its error, not an exception."""
    source_rate_hz = 0
    speech_s = 0.0
    whole: Voiceprint | None = None
    try:
        audio = decode_file(path, limits=job.limits, channel=job.channel)
        source_rate_hz = audio.sample_rate_hz
        if job.telephone:
            samples, rate = telephone_channel(audio.samples, audio.sample_rate_hz)
            audio = Audio(samples, rate, audio.channels_in_source, "ULAW", "simulated telephone channel")
        analysis = biometrics.analyse(audio)
        speech_s = analysis.speech_s
        whole = (
            Voiceprint(
                {
                    m: Embedding(m, model.version, biometrics.embed(model, analysis.samples))
                    for m, model in biometrics.models.items()
                },
                analysis.duration_s,
            )
            if job.whole_clip
            else None
        )
        # A crop exists only where the recording has more speech than the crop length.
        voiceprints = {
            length: biometrics.voiceprint(analysis, min_speech_s=job.min_speech_s, max_speech_s=length)
            for length in job.lengths_s
            if length is None or speech_s > length
        }
    except VoxgateError as exc:
        return FileResult(path, source_rate_hz, speech_s, {}, f"{type(exc).__name__}: {exc}", whole)
    return FileResult(path, source_rate_hz, speech_s, voiceprints, whole=whole)


def embed_files(
    paths: Sequence[Path], job: EmbedJob, *, jobs: int = 1, progress: bool = True, desc: str = "embedding"
) -> dict[Path, FileResult]:
    """Every distinct path embedded once; results keyed by path."""
    unique = list(dict.fromkeys(paths))
    bar = tqdm(total=len(unique), desc=desc, unit="file", disable=not progress, dynamic_ncols=True)
    results: dict[Path, FileResult] = {}
    try:
        for result in _run(unique, job, jobs):
            results[result.path] = result
            bar.update()
    finally:
        bar.close()
    failed = [r for r in results.values() if r.error]
    if failed:
        log.warning(
            "%d of %d files gave no voiceprint (first: %s: %s)",
            len(failed),
            len(unique),
            failed[0].path,
            failed[0].error,
        )
    return results


def _run(paths: list[Path], job: EmbedJob, jobs: int) -> Iterator[FileResult]:
    if jobs <= 1 or len(paths) < 4:
        biometrics = Biometrics(job.model_dir, job.model_ids, max_chunk_s=job.max_chunk_s, int8=job.int8)
        for path in paths:
            yield embed_one(path, job, biometrics)
        return
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(job,)) as pool:
        yield from pool.map(_embed_one, paths, chunksize=4)
