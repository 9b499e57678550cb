"""Trials the report builds from a set (synthetic voiceprints: only the bookkeeping is under test)."""

from pathlib import Path

import numpy as np

from voxgate.biometrics.profile import Channel
from voxgate.biometrics.voiceprint import Embedding, Voiceprint
from voxgate.evaluation.datasets import Dataset
from voxgate.evaluation.embedding import FileResult
from voxgate.evaluation.fitting import EmbeddedSet


def _set(speech_s: list[float], speakers: list[str], refused: int | None = None) -> EmbeddedSet:
    rng = np.random.default_rng(0)
    results = []
    for k, seconds in enumerate(speech_s):
        vector = rng.standard_normal(4).astype(np.float32)
        voiceprint = Voiceprint({"m": Embedding("m", "1", vector / np.linalg.norm(vector))}, seconds)
        error = "too short" if k == refused else None
        results.append(FileResult(Path(f"{k}.wav"), 8000, seconds, {} if error else {None: voiceprint}, error))
    files = tuple(r.path for r in results)
    return EmbeddedSet(Dataset("s", files, tuple(speakers)), Channel.TELEPHONE, tuple(results))


def test_calls_pool_consecutive_usable_clips_of_one_speaker() -> None:
    speakers = ["a"] * 5 + ["b"] * 4
    embedded = _set([2.0] * 9, speakers, refused=1)
    calls = embedded.call_trials(2)
    # a: clips 0, 2, 3, 4 usable -> calls (0, 2), (3, 4); b: (5, 6), (7, 8)
    assert [v.speech_s for v in calls.enrolled] == [4.0] * 4
    assert len(calls.pairs) == 6 and calls.is_target.tolist() == [True, False, False, False, False, True]
    assert embedded.short and not _set([6.0] * 9, speakers).short
