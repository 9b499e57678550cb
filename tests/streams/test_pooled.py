"""An utterance's voiceprint from the stream's pooled sums: what was embedded between two moments, no audio
kept and nothing embedded twice (the voice-bot operations count utterances this way)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxgate.biometrics.engine import Biometrics
from voxgate.errors import InsufficientSpeech
from voxgate.streams.session import StreamSession, StreamType
from voxgate.streams.stages import EMPTY

ARABIC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "speech" / "arabic_commands_3s"
PAUSE = np.zeros(16000, dtype=np.float32)  # 1 s: the speaker finished


@pytest.fixture(scope="module")
def biometrics(model_dir: Path, speech_dir: Path) -> Biometrics:
    return Biometrics(model_dir, ["ecapa", "campplus"])


def clip(speaker: str, index: int) -> np.ndarray:
    samples, rate = sf.read(sorted((ARABIC / speaker).glob("*.flac"))[index], dtype="float32")
    assert rate == 16000
    return np.asarray(samples, dtype=np.float32)


def test_the_difference_of_two_moments_is_the_speech_between(biometrics: Biometrics) -> None:
    first, second = clip("00000003", 0), clip("00000005", 0)
    stream = StreamSession("s", StreamType.HTTP, 16000, {}, biometrics)
    stream.push(np.concatenate([first, PAUSE]))
    stream.pipeline.settle_inline(force=True)
    after_first = stream.pipeline.pooled()
    assert stream.pipeline.silence_s >= 0.9  # the pause, in analysed audio
    stream.push(np.concatenate([second, PAUSE]))
    stream.pipeline.settle_inline(force=True)
    between = stream.pipeline.pooled() - after_first

    alone = StreamSession("t", StreamType.HTTP, 16000, {}, biometrics)
    alone.push(np.concatenate([second, PAUSE]))
    alone.pipeline.settle_inline(force=True)
    expected = alone.voiceprint()
    got = stream.pipeline.voiceprint_of(between)
    assert got.speech_s == pytest.approx(expected.speech_s, abs=0.1)
    for model_id, embedding in expected.embeddings.items():
        assert float(np.dot(embedding.vector, got.embeddings[model_id].vector)) > 0.98, model_id
    both = stream.pipeline.voiceprint_of(after_first + between)  # sums add up to the whole
    assert both.speech_s == pytest.approx(stream.speech_s)
    whole = stream.voiceprint()
    for model_id, embedding in whole.embeddings.items():
        assert float(np.dot(embedding.vector, both.embeddings[model_id].vector)) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(InsufficientSpeech):
        stream.pipeline.voiceprint_of(EMPTY)


def test_a_bot_operation_lifts_the_cap_of_a_long_call(biometrics: Biometrics) -> None:
    """A call whose voiceprint reached VOXGATE_STREAM_MAX_SPEECH_S analyses again while the cap is lifted
    (what a bot operation does for its duration), and its utterance is cut as any other."""
    stream = StreamSession("s", StreamType.HTTP, 16000, {}, biometrics, max_speech_s=3.0)
    stream.push(np.concatenate([clip("00000003", 0), clip("00000003", 1), PAUSE]))
    stream.pipeline.settle_inline(force=True)
    heard = stream.heard_speech_s
    stream.push(np.concatenate([clip("00000003", 2), PAUSE]))
    assert stream.heard_speech_s == heard  # capped: counted, not analysed
    stream.pipeline.max_speech_s = None
    before = stream.pipeline.pooled()
    stream.push(np.concatenate([clip("00000003", 3), PAUSE]))
    stream.pipeline.settle_inline(force=True)
    assert stream.heard_speech_s > heard and stream.pipeline.silence_s >= 0.9
    assert (stream.pipeline.pooled() - before).speech_s > 1.0


def test_a_fresh_vad_state_hears_the_next_utterance_whole(biometrics: Biometrics) -> None:
    """Silero's state carried over one utterance and a pause makes it hear far less of the next one; a bot
    operation resets it at each utterance's end, so each is heard as if alone."""
    fsdd = ARABIC.parent / "fsdd_digits_3s_8k" / "nicolas"
    first, second = (sf.read(fsdd / f"nicolas_seg{n:03d}.flac", dtype="float32")[0] for n in (15, 16))
    pause = np.zeros(8000, dtype=np.float32)
    heard = {}
    for reset in (False, True):
        stream = StreamSession("s", StreamType.WEBSOCKET, 8000, {}, biometrics)
        stream.push(np.concatenate([first, pause]))
        if reset:
            stream.pipeline.reset_vad()
        before = stream.heard_speech_s
        stream.push(np.concatenate([second, pause]))
        heard[reset] = stream.heard_speech_s - before
    alone = StreamSession("t", StreamType.WEBSOCKET, 8000, {}, biometrics)
    alone.push(np.concatenate([second, pause]))
    assert heard[True] >= 0.85 * alone.heard_speech_s, (heard, alone.heard_speech_s)
    assert heard[False] < 0.5 * heard[True], heard
