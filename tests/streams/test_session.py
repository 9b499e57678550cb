from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxgate.audio.frames import float_to_pcm16
from voxgate.audio.resample import resample
from voxgate.audio.types import Audio, FloatArray
from voxgate.audio.vad import (
    WINDOW_S,
    WINDOW_SAMPLES,
    SegmentationRules,
    net_speech_s,
    speech_only,
    speech_segments,
)
from voxgate.biometrics.engine import Biometrics
from voxgate.biometrics.models import EmbeddingModel
from voxgate.errors import InsufficientSpeech
from voxgate.streams.session import CHUNK_S, SpeechGate, StreamClosed, StreamSession, StreamType
from voxgate.streams.stages import MAX_HANGOVER_S

LIBRI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "speech" / "librispeech_test_other"


@pytest.fixture(scope="module")
def biometrics(model_dir: Path) -> Biometrics:
    return Biometrics(model_dir, ["ecapa", "campplus"])


def speaker_audio(speaker: str, files: slice) -> np.ndarray:
    paths = sorted((LIBRI / speaker).glob("*.flac"))[files]
    assert paths, f"no LibriSpeech files for speaker {speaker}"
    return np.concatenate([sf.read(p, dtype="float32")[0] for p in paths])


def push_in_odd_chunks(session: StreamSession, pcm: bytes, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(pcm):
        n = int(rng.integers(1, 4001)) | 1  # odd sizes: samples are split between pushes
        session.push_pcm16(pcm[i : i + n])
        i += n


def gate_probabilities(seed: int) -> FloatArray:
    """Random speech runs and pauses, some pauses short (< keep_pause_s: kept), some long (cut)."""
    rng = np.random.default_rng(seed)
    probs: list[float] = []
    speaking = False
    while len(probs) < 3000:
        if speaking:
            run = int(rng.integers(1, 40))
            probs += list(rng.choice([0.9, 0.7, 0.45, 0.2], size=run, p=[0.6, 0.25, 0.1, 0.05]))
        else:
            run = int(rng.choice([rng.integers(1, 40), rng.integers(30, 90)]))  # 32 ms-1.3 s, 1-2.9 s
            probs += list(rng.choice([0.05, 0.3, 0.6], size=run, p=[0.85, 0.1, 0.05]))
        speaking = not speaking
    probs += [0.0] * 60  # close the last segment and let its trailing pad out
    return np.array(probs, dtype=np.float32)


@pytest.mark.parametrize("seed", [7, 8, 9, 10])
def test_gate_is_the_offline_cut_window_by_window(seed: int) -> None:
    """Window by window, the gate keeps exactly the audio the offline pass keeps: the segments, their
    pads, and the pauses shorter than keep_pause_s between them."""
    probabilities = gate_probabilities(seed)
    rules = SegmentationRules()
    # window i holds the value i, so the output tells which windows (or pads of them) were kept
    audio = np.repeat(np.arange(len(probabilities), dtype=np.float32), WINDOW_SAMPLES)

    gate = SpeechGate(rules)
    out: list[np.ndarray] = []
    windows = 0
    most_held = 0
    for i, p in enumerate(probabilities.tolist()):
        parts, n = gate.step(audio[i * WINDOW_SAMPLES : (i + 1) * WINDOW_SAMPLES].copy(), p)
        out += parts
        windows += n
        most_held = max(most_held, gate.held_samples)
    online = np.concatenate(out)

    segments = speech_segments(probabilities, rules)
    offline = speech_only(audio, 16000, segments, pad_s=rules.pad_s, keep_pause_s=rules.keep_pause_s)
    pauses = np.array([b.start_s - a.end_s for a, b in itertools.pairwise(segments)])
    assert len(segments) > 20
    assert (pauses < rules.keep_pause_s).sum() > 5 and (pauses >= rules.keep_pause_s).sum() > 5
    assert windows * WINDOW_S == pytest.approx(net_speech_s(segments))
    assert np.array_equal(online, offline), "the same samples, pads included"
    # after the last pause only the leading pad of a next segment is kept
    assert gate.held_samples <= round(rules.pad_s * 16000) + WINDOW_SAMPLES and not gate.in_segment
    # a held pause (< keep_pause_s), an unconfirmed start (< min_speech_s) and a hangover (MAX_HANGOVER_S)
    assert most_held < (rules.keep_pause_s + rules.min_speech_s + MAX_HANGOVER_S + rules.pad_s) * 16000


def test_gate_releases_a_short_pause_only_when_speech_resumes() -> None:
    rules = SegmentationRules()
    gate = SpeechGate(rules)
    pad_windows = math.ceil(rules.pad_s / WINDOW_S)

    def feed(probability: float, n: int) -> tuple[int, int]:
        released = speech = 0
        for _ in range(n):
            parts, windows = gate.step(np.ones(WINDOW_SAMPLES, dtype=np.float32), probability)
            released += sum(part.size for part in parts)
            speech += windows
        return released, speech

    assert feed(0.0, 40) == (0, 0)
    assert feed(0.9, 20) == (round(rules.pad_s * 16000) + 20 * WINDOW_SAMPLES, 20)  # leading pad + speech
    released, speech = feed(0.0, 20)  # a 0.64 s pause: the segment closes, its trailing pad goes out
    assert not gate.in_segment and speech == 0
    assert released == round(rules.pad_s * 16000)
    assert gate.held_samples == (20 - rules.pad_s / WINDOW_S) * WINDOW_SAMPLES
    released, speech = feed(0.9, 10)  # speech resumes: the pause is released with it
    assert speech == 10 and released == (20 + 10) * WINDOW_SAMPLES - round(rules.pad_s * 16000)
    feed(0.0, pad_windows + 40)  # a long pause: held only until keep_pause_s, then dropped
    assert gate.held_samples <= round(rules.pad_s * 16000) + WINDOW_SAMPLES


def test_stream_voiceprint_matches_the_offline_one(biometrics: Biometrics) -> None:
    audio_16k = speaker_audio("1688", slice(0, 1))
    audio_8k = resample(audio_16k, 16000, 8000)
    pcm = float_to_pcm16(audio_8k).astype("<i2").tobytes()

    calls = {"n": 0}
    counting = copy.copy(biometrics)
    counting.models = {}
    for model_id, model in biometrics.models.items():
        wrapped = copy.copy(model)

        def embed(waveform: FloatArray, _model: EmbeddingModel = model) -> FloatArray:
            calls["n"] += 1
            return _model.embed(waveform)

        wrapped.embed = embed  # type: ignore[method-assign]  # counts the calls into the real model
        counting.models[model_id] = wrapped

    session = StreamSession("s", StreamType.HTTP, 8000, {}, counting)
    push_in_odd_chunks(session, pcm)
    assert session.duration_s == pytest.approx(len(audio_8k) / 8000)

    offline_analysis = biometrics.analyse(Audio(audio_8k, 8000, 1, "PCM_16", "raw"))
    offline = biometrics.voiceprint(offline_analysis, min_speech_s=1.0)
    assert session.heard_speech_s == pytest.approx(offline_analysis.speech_s, abs=0.2)
    # chunks of at least CHUNK_S, cut at pauses (or at twice CHUNK_S): less than that is still pending
    assert session.heard_speech_s - 2 * CHUNK_S < session.speech_s <= session.heard_speech_s
    assert session.chunks >= 2
    embeds_while_pushing = calls["n"]
    assert embeds_while_pushing == session.chunks * 2, "each chunk is embedded once per model"

    for _ in range(50):  # polling: no forward pass
        pooled = session.voiceprint(3.0)
    assert calls["n"] == embeds_while_pushing
    assert pooled.speech_s == session.speech_s
    for model_id in ("ecapa", "campplus"):
        cosine = float(pooled.embedding(model_id).vector @ offline.embedding(model_id).vector)
        print(f"{model_id}: cosine stream vs offline {cosine:.4f} ({session.chunks} chunks)")
        assert cosine > 0.9, (model_id, cosine)


def test_memory_stays_bounded_over_a_long_stream(biometrics: Biometrics) -> None:
    light = copy.copy(biometrics)
    light.models = {"campplus": biometrics.models["campplus"]}  # one model keeps this test fast
    audio_8k = resample(speaker_audio("2033", slice(0, 6)), 16000, 8000)
    audio_8k = np.tile(audio_8k, 3)[: 8000 * 90]  # 90 s
    session = StreamSession("s", StreamType.HTTP, 8000, {}, light)
    rules = light.rules
    step = 4000  # 0.5 s pushes, as a client streaming in real time would send
    most = most_held = 0
    for i in range(0, audio_8k.size, step):
        session.push(audio_8k[i : i + step])
        most = max(most, session.buffered_samples)
        most_held = max(most_held, session.pipeline._gate.held_samples)
    assert session.duration_s == pytest.approx(90.0, abs=0.01)
    assert session.speech_s > 45.0
    print(f"most 16 kHz samples held: {most} ({most / 16000:.2f} s, {most * 4 / 1024:.0f} KiB)")
    # the gate: a pause (< keep_pause_s), an unconfirmed segment start and a hangover, or a leading pad
    assert most_held < (rules.keep_pause_s + rules.min_speech_s + MAX_HANGOVER_S) * 16000
    # pending: < two chunks of net speech (a chunk waits for a pause up to twice CHUNK_S) with their
    # context (pads, the pauses < keep_pause_s joining segments), plus what the gate holds
    assert most < (2 * CHUNK_S + 2.5) * 16000 + most_held


def test_silence_gives_no_voiceprint(biometrics: Biometrics) -> None:
    session = StreamSession("s", StreamType.HTTP, 16000, {}, biometrics)
    session.push(np.zeros(16000 * 5, dtype=np.float32))
    assert session.speech_s == 0.0 and session.heard_speech_s == 0.0
    with pytest.raises(InsufficientSpeech):
        session.voiceprint()


def test_too_little_speech_is_insufficient(biometrics: Biometrics) -> None:
    session = StreamSession("s", StreamType.HTTP, 16000, {}, biometrics)
    session.push(speaker_audio("1998", slice(1, 2)))
    assert session.speech_s > 0
    with pytest.raises(InsufficientSpeech) as caught:
        session.voiceprint(session.speech_s + 10.0)
    assert caught.value.speech_s == session.speech_s


def test_a_closed_stream_refuses_audio(biometrics: Biometrics) -> None:
    session = StreamSession("s", StreamType.HTTP, 8000, {}, biometrics)
    session.push_pcm16(b"\x00\x01\x02")
    session.close()
    with pytest.raises(StreamClosed):
        session.push_pcm16(b"\x00\x00")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        StreamSession("s", StreamType.HTTP, 0, {}, None)  # type: ignore[arg-type]  # refused before it is used
