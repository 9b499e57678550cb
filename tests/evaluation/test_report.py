"""The report functions count every trial: a refused one is a rejection with LLR 0, never left out."""

from __future__ import annotations

import pytest

from voxgate.evaluation.report import VerdictRates, evaluate
from voxgate.evaluation.trials import INSUFFICIENT, Trial, TrialScore


def _score(target: bool, llr: float | None, verdict: str) -> TrialScore:
    return TrialScore(Trial(("e.wav",), "t.wav", target), None if llr is None else llr - 1, llr, verdict)


def test_refused_trials_count_as_rejections_with_llr_zero() -> None:
    scores = [
        _score(True, 5.0, "verified"),
        _score(True, 4.0, "verified"),
        _score(True, None, INSUFFICIENT),  # refused: a false reject, LLR 0
        _score(False, -5.0, "not_verified"),
        _score(False, -4.0, "not_verified"),
        _score(False, None, INSUFFICIENT),  # refused: a correct rejection, LLR 0
    ]
    evaluation = evaluate(scores)
    assert evaluation.metrics.n_target == 3 and evaluation.metrics.n_nontarget == 3
    assert evaluation.unscored == 2
    assert evaluation.rates.false_reject == pytest.approx(1 / 3)
    assert evaluation.rates.false_accept == 0.0
    # the two LLR-0 trials tie: one miss among three targets at the EER point, not a perfect 0 %
    assert evaluation.metrics.eer > 0.0
    without = evaluate([s for s in scores if s.llr is not None])
    assert without.metrics.eer == 0.0 and without.unscored == 0


def test_verdict_rates_treat_every_refusal_as_a_rejection() -> None:
    rates = VerdictRates.of(["verified", "not_sure", "error", INSUFFICIENT], ["not_sure", "verified"])
    assert rates.false_reject == pytest.approx(0.5)
    assert rates.not_sure_target == pytest.approx(0.25)
    assert rates.false_accept == pytest.approx(0.5)
