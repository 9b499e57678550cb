from __future__ import annotations

import numpy as np
import pytest

from voxgate.biometrics.calibration import TrialSet, fit_linear_fusion, fit_thresholds
from voxgate.biometrics.metrics import cllr


def _set(name: str, rng: np.random.Generator, n_tar: int, n_non: int, shift: float) -> TrialSet:
    tar = rng.normal(0.6 + shift, 0.1, (n_tar, 2))
    non = rng.normal(0.1 + shift, 0.1, (n_non, 2))
    scores = np.vstack([tar, non]).astype(np.float32)
    return TrialSet(name, scores, np.r_[np.ones(n_tar, bool), np.zeros(n_non, bool)])


def test_fusion_gives_calibrated_llrs() -> None:
    rng = np.random.default_rng(0)
    trial_set = _set("a", rng, 500, 5000, 0.0)
    weights, offset = fit_linear_fusion([trial_set])
    llr = offset + trial_set.scores @ weights
    tar, non = llr[trial_set.is_target], llr[~trial_set.is_target]
    assert cllr(tar, non) < 0.1
    # independent Gaussian scores with equal variance: the ideal LLR is linear, slope (mu1 - mu0) / var each
    ideal_slope = (0.6 - 0.1) / 0.1**2
    np.testing.assert_allclose(weights, [ideal_slope, ideal_slope], rtol=0.15)


def test_each_set_counts_equally() -> None:
    """Repeating one set's trials ten times changes nothing: a set's weight does not grow with its size."""
    rng = np.random.default_rng(1)
    small, large = _set("small", rng, 100, 1000, 0.3), _set("large", rng, 300, 3000, 0.0)
    repeated = TrialSet("large", np.tile(large.scores, (10, 1)), np.tile(large.is_target, 10))
    w1, b1 = fit_linear_fusion([small, large])
    w2, b2 = fit_linear_fusion([small, repeated])
    np.testing.assert_allclose(w1, w2, rtol=1e-4)
    assert b1 == pytest.approx(b2, rel=1e-4)
    _, b_large = fit_linear_fusion([large])
    assert abs(b1 - b_large) > 0.5, "the small set must pull the fit too"


def test_thresholds_meet_operating_points_on_every_set() -> None:
    rng = np.random.default_rng(2)
    sets = [
        (rng.normal(3, 2, 2000).astype(np.float32), rng.normal(-3 + k, 2, 20000).astype(np.float32))
        for k in range(3)
    ]
    llrs = [(np.r_[tar, non], np.r_[np.ones(len(tar), bool), np.zeros(len(non), bool)]) for tar, non in sets]
    t = fit_thresholds(llrs, accept_far=0.005, reject_frr=0.02)
    for tar, non in sets:
        assert np.mean(non >= t.accept_llr) <= 0.005
        assert np.mean(tar < t.reject_llr) <= 0.02
    assert t.reject_llr <= t.accept_llr


def test_one_sided_sets_are_refused() -> None:
    with pytest.raises(ValueError, match="both"):
        TrialSet("x", np.zeros((3, 1), np.float32), np.ones(3, bool))


def test_a_duration_aware_fit_learns_that_short_speech_is_weaker_evidence() -> None:
    """Synthetic scores whose separation grows with speech length: the fit gives the interaction
    ``q · score`` a positive weight, so the same score means less with less speech."""
    rng = np.random.default_rng(1)
    n = 4000
    durations = rng.choice([1.5, 3.0, 10.0, 30.0], size=n)
    target = rng.random(n) < 0.5
    separation = 0.1 + 0.1 * np.log(durations)
    scores = np.where(target, separation, -separation) + 0.15 * rng.standard_normal(n)
    quality = np.log(durations / 10.0)
    trial_set = TrialSet("bands", scores[:, None].astype(np.float32), target, quality)
    weights, _ = fit_linear_fusion([trial_set])
    score_weight, _, interaction = weights
    assert score_weight > 0 and interaction > 0
    with pytest.raises(ValueError, match="quality"):
        fit_linear_fusion([trial_set, TrialSet("fixed", scores[:, None].astype(np.float32), target)])
