"""A live stream's pooled voiceprint scores like the offline voiceprint of the same recording (real speech)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxgate.audio.types import AudioLimits
from voxgate.biometrics.engine import Biometrics
from voxgate.biometrics.profile import shipped_profile
from voxgate.biometrics.voiceprint import Embedding, Voiceprint
from voxgate.evaluation.datasets import read_dataset
from voxgate.evaluation.embedding import FileResult, embed_one
from voxgate.evaluation.streaming import (
    MODEL_IDS,
    SECTION,
    StreamJob,
    Unit,
    UnitResult,
    cut_units,
    render,
    run_unit,
    short_speech,
    units_of,
)
from voxgate.settings import Settings

# Two LibriSpeech speakers, two ~10 s recordings each (7-8 s of net speech: two stream chunks).
RECORDINGS = (
    "2414/2414-128291-0004.flac",
    "2414/2414-128291-0005.flac",
    "2609/2609-156975-0002.flac",
    "2609/2609-156975-0006.flac",
)


@pytest.fixture(scope="module")
def biometrics(model_dir: Path) -> Biometrics:
    return Biometrics(model_dir, MODEL_IDS)


def _job(model_dir: Path, telephone: bool = False) -> StreamJob:
    return StreamJob(
        model_dir=model_dir,
        limits=AudioLimits.from_settings(Settings()),
        min_speech_s=1.0,
        telephone=telephone,
        chunk_s=3.0,
    )


def test_stream_voiceprint_scores_like_the_offline_one(
    speech_dir: Path, model_dir: Path, biometrics: Biometrics
) -> None:
    job = _job(model_dir)
    root = speech_dir / "librispeech_test_other"
    offline, stream = [], []
    for name in RECORDINGS:
        path = root / name
        result = embed_one(path, job.embed_job(), biometrics)  # the accuracy report's offline voiceprint
        played = run_unit(Unit(name, name.split("/")[0], (path,)), job, biometrics)
        assert result.error is None and played.error is None
        assert played.stream is not None, f"{name}: no stream voiceprint"
        # whole chunks, then the tail settled at the end of the call (left out only if under 0.5 s)
        assert -0.1 < result.speech_s - played.stream.speech_s < 0.6, (
            result.speech_s,
            played.stream.speech_s,
        )
        offline.append(result.voiceprints[None])
        stream.append(played.stream)
    for model in MODEL_IDS:
        cosines = [
            o.embedding(model).vector @ s.embedding(model).vector
            for o, s in zip(offline, stream, strict=True)
        ]
        # measured on these files (the tail settled, the live cut = the offline one): ECAPA ≥ 0.985, CAM++ ≥ 0.99
        assert min(cosines) > 0.97, f"{model}: stream vs offline voiceprint cosines {cosines}"
    profile = shipped_profile("wideband")
    i, j = np.triu_indices(len(RECORDINGS), k=1)
    pairs = np.stack([i, j], axis=1).astype(np.int64)
    same = np.array([RECORDINGS[a][:4] == RECORDINGS[b][:4] for a, b in pairs])
    llr_offline = profile.pair_llrs(offline, offline, pairs)
    llr_stream = profile.pair_llrs(stream, stream, pairs)
    assert np.corrcoef(llr_offline, llr_stream)[0, 1] > 0.98
    # measured: r = 0.99997; the largest move of one trial 0.40 LLR (1.35 with whole chunks only)
    assert llr_stream[same].min() > llr_stream[~same].max()
    assert np.abs(llr_stream - llr_offline).max() < 1.0


# Two Arabic keyword speakers, two 3-s clips each, 2.1-2.7 s of net speech: less than one stream chunk.
CLIPS = (
    "00000001/00000001_seg002.flac",
    "00000001/00000001_seg005.flac",
    "00000002/00000002_seg005.flac",
    "00000002/00000002_seg012.flac",
)


@pytest.mark.parametrize("telephone", [False, True], ids=["wideband", "telephone"])
def test_a_short_clip_gets_a_stream_voiceprint_that_scores_like_the_offline_one(
    speech_dir: Path, model_dir: Path, biometrics: Biometrics, telephone: bool
) -> None:
    """A 2-3 s utterance is shorter than a stream chunk: the tail settled at the end of the call is its
    voiceprint. It holds the offline speech (within 0.1 s), and scored against the other clips it gives the
    offline LLR within 0.5."""
    job = _job(model_dir, telephone)
    root = speech_dir / "arabic_commands_3s"
    units = [Unit(name, name.split("/")[0], (root / name,)) for name in CLIPS]
    offline = [embed_one(u.paths[0], job.embed_job(), biometrics) for u in units]
    streamed = [run_unit(u, job, biometrics) for u in units]
    for unit, off, live in zip(units, offline, streamed, strict=True):
        assert off.error is None and live.error is None
        assert 2.0 <= off.speech_s < job.chunk_s, f"{unit.name}: {off.speech_s} s of speech offline"
        assert live.stream is not None, f"{unit.name}: no stream voiceprint"
        assert live.chunks == 1  # the tail, embedded once
        assert abs(live.stream.speech_s - off.speech_s) <= 0.1 + 1e-6, (live.stream.speech_s, off.speech_s)
    profile = shipped_profile("telephone" if telephone else "wideband")
    short = short_speech(
        profile,
        offline,
        offline,
        streamed,
        range(len(units)),
        set_name="arabic_commands_3s",
        kind="recordings",
        simulated=telephone,
    )
    assert (short.in_band, short.covered, short.trials) == (4, 4, 12)
    assert min(v.min() for v in short.cosines.values()) > 0.99
    # measured with the duration-aware shipped profiles: |ΔLLR| at most 0.10 (wideband) / 0.11 (telephone);
    # cosines ≥ 0.9995 (wideband) / 0.998 (telephone)
    assert short.delta.max() < 0.5, short.delta
    assert short.within == 1.0


def test_a_recording_cut_after_its_first_2_s_of_speech(
    speech_dir: Path, model_dir: Path, biometrics: Biometrics
) -> None:
    """The long-recording sets are also played cut where their first 2 s of net speech end: the cut is
    embedded offline as one recording and streamed, and the two hold the same speech."""
    dataset = read_dataset(speech_dir / "librispeech_test_other")
    cuts = {u.name: u for u in cut_units(dataset, (2.0,))}
    assert len(cuts) == len(dataset.files)
    cut = cuts[f"{RECORDINGS[0]}@2s"]
    assert cut.speech_cut_s == 2.0 and cut.paths == (speech_dir / "librispeech_test_other" / RECORDINGS[0],)
    played = run_unit(cut, _job(model_dir), biometrics)
    assert played.error is None and played.offline is not None and played.offline.error is None
    assert played.stream is not None
    # the cut keeps the VAD's pad after the 2 s: a little more speech than 2 s, far less than the recording
    assert 2.0 <= played.offline.speech_s < 2.5 and played.duration_s < 5.0
    assert abs(played.stream.speech_s - played.offline.speech_s) <= 0.1 + 1e-6


def _voiceprint(rng: np.random.Generator, versions: dict[str, str], speech_s: float) -> Voiceprint:
    embeddings = {}
    for model, version in versions.items():
        vector = rng.standard_normal(16).astype(np.float32)
        embeddings[model] = Embedding(model, version, vector / np.linalg.norm(vector))
    return Voiceprint(embeddings, speech_s)


def test_short_speech_counts_every_utterance_in_the_band() -> None:
    """Five recordings: one streamed exactly, one without a stream voiceprint (uncovered), one streamed
    differently, one with too little speech (out of the band); each against the four other recordings."""
    profile = shipped_profile("wideband")
    versions = {t.model_id: t.model_version for t in profile.terms}
    rng = np.random.default_rng(0)
    speech = [2.5, 3.0, 4.0, 5.5, 1.5]
    voiceprints = [_voiceprint(rng, versions, s) for s in speech]
    results = [
        FileResult(Path(f"r{k}.flac"), 16000, s, {None: v})
        for k, (s, v) in enumerate(zip(speech, voiceprints, strict=True))
    ]
    streams = [voiceprints[0], None, _voiceprint(rng, versions, 4.0), voiceprints[3], voiceprints[4]]
    streamed = [
        UnitResult(f"r{k}.flac", v, 0.0 if v is None else v.speech_s, s, 3.0, chunks=int(v is not None))
        for k, (v, s) in enumerate(zip(streams, speech, strict=True))
    ]
    short = short_speech(
        profile, results, results, streamed, range(5), set_name="s", kind="recordings", simulated=False
    )
    assert (short.units, short.in_band, short.covered) == (5, 4, 3)
    assert short.trials == 4 * 4 and short.uncovered_trials == 4 and short.delta.size == 3 * 4
    np.testing.assert_allclose(short.delta[:4], 0.0, atol=1e-5)  # unit 0: the same voiceprint
    np.testing.assert_allclose(short.delta[8:], 0.0, atol=1e-5)  # unit 3
    assert short.delta[4:8].max() > 0.5  # unit 2: an unrelated voiceprint
    assert short.within == pytest.approx((short.delta <= 0.5).sum() / 16)
    np.testing.assert_allclose(short.cosines["ecapa"][[0, 2]], 1.0, atol=1e-5)
    section = render([], [], 3.0, [short])
    assert section.startswith(SECTION)
    row = next(line for line in section.splitlines() if line.startswith("| wideband | s | recordings |"))
    assert "| 4 / 5 | 3 (75.00 %) |" in row and "| 16 |" in row


def test_calls_join_consecutive_recordings_of_one_speaker(speech_dir: Path) -> None:
    dataset = read_dataset(speech_dir / "arabic_commands_3s")
    calls = units_of(dataset, clips=4)
    per_speaker = {s: dataset.speakers.count(s) for s in set(dataset.speakers)}
    assert len(calls) == sum(n // 4 for n in per_speaker.values())
    for call in calls:
        assert len(call.paths) == 4 and len({p.parent for p in call.paths}) == 1
        assert {dataset.speakers[dataset.files.index(p)] for p in call.paths} == {call.speaker}
    assert len({p for c in calls for p in c.paths}) == 4 * len(calls)  # no recording in two calls
    recordings = units_of(dataset)
    assert [u.paths[0] for u in recordings] == list(dataset.files)
