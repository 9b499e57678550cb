"""A live stream's pooled voiceprint scores like the offline voiceprint of the same recording (real speech)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxgate.audio.types import AudioLimits
from voxgate.biometrics.engine import Biometrics
from voxgate.biometrics.profile import shipped_profile
from voxgate.evaluation.datasets import read_dataset
from voxgate.evaluation.embedding import embed_one
from voxgate.evaluation.streaming import (
    MODEL_IDS,
    StreamJob,
    Unit,
    run_unit,
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
        # whole chunks only: the stream holds less speech than the recording, by less than one chunk
        assert 0 < result.speech_s - played.stream.speech_s < job.chunk_s + 0.5
        offline.append(result.voiceprints[None])
        stream.append(played.stream)
    for model in MODEL_IDS:
        cosines = [
            o.embedding(model).vector @ s.embedding(model).vector
            for o, s in zip(offline, stream, strict=True)
        ]
        # measured on these files: ECAPA ≥ 0.95, CAM++ ≥ 0.96
        assert min(cosines) > 0.93, f"{model}: stream vs offline voiceprint cosines {cosines}"
    profile = shipped_profile("wideband")
    i, j = np.triu_indices(len(RECORDINGS), k=1)
    pairs = np.stack([i, j], axis=1).astype(np.int64)
    same = np.array([RECORDINGS[a][:4] == RECORDINGS[b][:4] for a, b in pairs])
    llr_offline = profile.llr_from_normalised(profile.normalised_pairs(offline, offline, pairs))
    llr_stream = profile.llr_from_normalised(profile.normalised_pairs(stream, stream, pairs))
    assert np.corrcoef(llr_offline, llr_stream)[0, 1] > 0.98
    # measured: r = 0.999; the largest move of one trial 1.35 LLR
    assert llr_stream[same].min() > llr_stream[~same].max()
    assert np.abs(llr_stream - llr_offline).max() < 2.5


def test_a_recording_shorter_than_a_chunk_has_no_stream_voiceprint(
    speech_dir: Path, model_dir: Path, biometrics: Biometrics
) -> None:
    """A 3-s digit clip (8 kHz, 1.8 s of net speech) has an offline voiceprint but too little speech for
    one stream chunk; the call it opens (four clips joined) has both."""
    dataset = read_dataset(speech_dir / "fsdd_digits_3s_8k")
    job = _job(model_dir)
    call = units_of(dataset, clips=4)[0]
    assert call.name == "george/call-01" and call.paths[1].name == "george_seg001.flac"
    clip = Unit("clip", call.speaker, call.paths[1:2])
    offline = embed_one(clip.paths[0], job.embed_job(), biometrics)
    assert offline.error is None and offline.speech_s < job.chunk_s
    assert run_unit(clip, job, biometrics).stream is None
    joined = run_unit(call, job, biometrics)
    assert joined.stream is not None and joined.offline is not None and joined.offline.error is None
    assert joined.stream.speech_s >= job.chunk_s


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
