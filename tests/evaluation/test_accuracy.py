"""The accuracy report's own arithmetic (on small synthetic score lists; the figures come from real speech)."""

import numpy as np
import pytest

from voxgate.biometrics.metrics import eer
from voxgate.evaluation.accuracy import _step_eer


def test_step_eer_weights_are_trial_counts() -> None:
    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.normal(1.0, 1.0, 300), rng.normal(-1.0, 1.0, 3000)])
    target = np.arange(scores.size) < 300
    counts = rng.integers(0, 4, scores.size).astype(float)
    repeated = np.repeat(np.arange(scores.size), counts.astype(int))
    weighted = _step_eer(scores, target, counts)
    assert weighted == pytest.approx(_step_eer(scores[repeated], target[repeated], np.ones(repeated.size)))
    # close to the report's ROCCH EER (which is never lower), and about Φ(-1) for these two normals
    assert weighted == pytest.approx(eer(scores[target], scores[~target]), abs=0.01)
    assert 0.13 < weighted < 0.19


def test_step_eer_of_separated_scores_is_zero() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    target = np.array([False, False, False, True, True])
    assert _step_eer(scores, target, np.ones(5)) == 0.0
    assert _step_eer(-scores, target, np.ones(5)) == 1.0
