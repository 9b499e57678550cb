"""Metrics against brute-force definitions on small random data, and against hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from voxgate.audio.types import Float64Array
from voxgate.biometrics.metrics import (
    SummaryMetrics,
    act_dcf,
    cllr,
    det_curve,
    eer,
    error_rates_at,
    min_cllr,
    min_dcf,
    summarize,
    threshold_for_far,
    threshold_for_frr,
)


def _trials(seed: int, *, tied: bool) -> tuple[Float64Array, Float64Array]:
    """Small overlapping target/non-target sets; ``tied`` draws from a few values so ties abound."""
    rng = np.random.default_rng(seed)
    n_tar = int(rng.integers(1, 25))
    n_non = int(rng.integers(1, 40))
    tar = rng.normal(1.0, 1.0, n_tar)
    non = rng.normal(0.0, 1.0, n_non)
    if tied:
        tar, non = np.round(tar * 2) / 2, np.round(non * 2) / 2
    return tar, non


CASES = [(seed, tied) for seed in range(12) for tied in (False, True)]


# -- brute-force references: the definitions, one threshold at a time ---------------------------


def _rates(tar: Float64Array, non: Float64Array, t: float) -> tuple[float, float]:
    """(p_miss, p_fa) straight from the definition: accept means score >= t."""
    return sum(s < t for s in tar) / len(tar), sum(s >= t for s in non) / len(non)


def _all_points(tar: Float64Array, non: Float64Array) -> list[tuple[float, float]]:
    """Every reachable (p_miss, p_fa): thresholds at each score and above all of them."""
    candidates = [*sorted({*tar.tolist(), *non.tolist()}), math.inf]
    return [_rates(tar, non, t) for t in candidates]


def _hull_eer(points: list[tuple[float, float]]) -> float:
    """Lowest point of the diagonal inside the hull of the ROC points, by trying every pair of points."""
    best = math.inf
    for pm_i, pf_i in points:
        for pm_j, pf_j in points:
            d_i, d_j = pm_i - pf_i, pm_j - pf_j
            if d_i <= 0 <= d_j:
                lam = 0.0 if d_i == d_j else d_i / (d_i - d_j)
                best = min(best, pm_i + lam * (pm_j - pm_i))
    return best


def _naive_pav(values: list[float], weights: list[float]) -> list[float]:
    """Quadratic PAV: merge the first violating pair of blocks until the fit is non-decreasing."""
    blocks = [(v * w, w, 1) for v, w in zip(values, weights, strict=True)]  # (sum, weight, atoms)
    merged = True
    while merged:
        merged = False
        for i in range(len(blocks) - 1):
            (s1, w1, n1), (s2, w2, n2) = blocks[i], blocks[i + 1]
            if s1 / w1 > s2 / w2:
                blocks[i : i + 2] = [(s1 + s2, w1 + w2, n1 + n2)]
                merged = True
                break
    return [s / w for s, w, n in blocks for _ in range(n)]


def _reference_min_cllr(tar: Float64Array, non: Float64Array) -> float:
    """Cllr of PAV posteriors per tied score, written as posterior odds times the prior correction."""
    atoms = sorted({*tar.tolist(), *non.tolist()})
    n_tar = [float(np.sum(tar == a)) for a in atoms]
    n_all = [float(np.sum(tar == a) + np.sum(non == a)) for a in atoms]
    fractions = [t / a for t, a in zip(n_tar, n_all, strict=True)]
    posterior = dict(zip(atoms, _naive_pav(fractions, n_all), strict=True))
    odds = len(tar) / len(non)
    tar_bits = [math.log2(1 + (1 - posterior[s]) / posterior[s] * odds) for s in tar]
    non_bits = [math.log2(1 + posterior[s] / (1 - posterior[s]) / odds) for s in non]
    return 0.5 * (sum(tar_bits) / len(tar) + sum(non_bits) / len(non))


# -- DET curve -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "tied"), CASES)
def test_det_curve_matches_definition_at_every_threshold(seed: int, tied: bool) -> None:
    tar, non = _trials(seed, tied=tied)
    thresholds, p_miss, p_fa = det_curve(tar, non)

    expected_thresholds = [*sorted({*tar.tolist(), *non.tolist()}), math.inf]
    assert thresholds.tolist() == expected_thresholds
    for t, pm, pf in zip(thresholds, p_miss, p_fa, strict=True):
        assert (pm, pf) == pytest.approx(_rates(tar, non, float(t)), abs=1e-12)


def test_det_curve_runs_from_accept_all_to_reject_all() -> None:
    _, p_miss, p_fa = det_curve([3.0, 1.0], [2.0, 0.0, 2.0])
    assert (p_miss[0], p_fa[0]) == (0.0, 1.0)
    assert (p_miss[-1], p_fa[-1]) == (1.0, 0.0)
    assert np.all(np.diff(p_miss) >= 0) and np.all(np.diff(p_fa) <= 0)


def test_det_curve_keeps_ties_together() -> None:
    # Scores 1.0 appear in both classes: no threshold splits them, so there is no point (0.5, 0.5).
    thresholds, p_miss, p_fa = det_curve([1.0, 2.0], [1.0, 0.0])
    assert thresholds.tolist() == [0.0, 1.0, 2.0, math.inf]
    assert p_miss.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert p_fa.tolist() == [1.0, 0.5, 0.0, 0.0]


# -- EER -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "tied"), CASES)
def test_eer_is_where_the_hull_crosses_the_diagonal(seed: int, tied: bool) -> None:
    tar, non = _trials(seed, tied=tied)
    points = _all_points(tar, non)
    value = eer(tar, non)

    assert value == pytest.approx(_hull_eer(points), abs=1e-12)
    # Bracket: no operating point beats the hull, and the hull mixes operating points.
    assert min((pm + pf) / 2 for pm, pf in points) - 1e-12 <= value
    assert value <= min(max(pm, pf) for pm, pf in points) + 1e-12


def test_eer_hand_worked_hull() -> None:
    # ROC points (p_fa, p_miss): (1,0) (.5,0) (.5,1/3) (0,1/3) ...; the hull edge (.5,0)-(0,1/3)
    # crosses the diagonal at 0.2, below every step of the curve.
    assert eer([1.0, 3.0, 4.0], [0.0, 2.0]) == pytest.approx(0.2, abs=1e-12)


def test_eer_counts_a_tie_as_half_right() -> None:
    # A target and a non-target tied at 0 cannot be told apart: ordering them optimistically gives 0.
    assert eer([0.0, 1.0], [0.0, -1.0]) == pytest.approx(0.25, abs=1e-12)


def test_eer_analytic_extremes() -> None:
    assert eer([2.0, 3.0, 5.0], [-1.0, 0.0, 1.9]) == 0.0
    assert eer([0.7] * 5, [0.7] * 9) == pytest.approx(0.5, abs=1e-12)
    rng = np.random.default_rng(7)
    same = eer(rng.normal(size=20_000), rng.normal(size=20_000))
    assert same == pytest.approx(0.5, abs=0.02)
    # Unit-variance Gaussians two apart: EER = Phi(-1) = 0.1587.
    apart = eer(rng.normal(2.0, 1.0, 20_000), rng.normal(0.0, 1.0, 20_000))
    assert apart == pytest.approx(0.1587, abs=0.01)


def test_eer_and_min_cllr_ignore_monotone_rescaling() -> None:
    tar, non = _trials(3, tied=True)
    assert eer(np.exp(tar / 3), np.exp(non / 3)) == pytest.approx(eer(tar, non), abs=1e-12)
    assert min_cllr(tar**3, non**3) == pytest.approx(min_cllr(tar, non), abs=1e-12)


# -- DCF -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "tied"), CASES)
@pytest.mark.parametrize(("p_target", "c_miss", "c_fa"), [(0.01, 1, 1), (0.5, 1, 1), (0.05, 10, 1)])
def test_min_dcf_is_the_brute_force_minimum(
    seed: int, tied: bool, p_target: float, c_miss: float, c_fa: float
) -> None:
    tar, non = _trials(seed, tied=tied)
    costs = [c_miss * p_target * pm + c_fa * (1 - p_target) * pf for pm, pf in _all_points(tar, non)]
    normaliser = min(c_miss * p_target, c_fa * (1 - p_target))
    value = min_dcf(tar, non, p_target=p_target, c_miss=c_miss, c_fa=c_fa)
    assert value == pytest.approx(min(costs) / normaliser, abs=1e-12)
    assert value <= 1.0


def test_min_dcf_of_a_useless_system_is_one_and_of_a_perfect_one_zero() -> None:
    assert min_dcf([0.3] * 4, [0.3] * 7, p_target=0.2) == pytest.approx(1.0)
    assert min_dcf([1.0, 2.0], [0.0, 0.5]) == 0.0


@pytest.mark.parametrize(("seed", "tied"), CASES)
def test_act_dcf_matches_definition_and_never_beats_min_dcf(seed: int, tied: bool) -> None:
    tar, non = _trials(seed, tied=tied)
    p_target = 0.1
    threshold = -math.log(p_target / (1 - p_target))
    pm, pf = _rates(tar, non, threshold)
    expected = (p_target * pm + (1 - p_target) * pf) / p_target
    value = act_dcf(tar, non, p_target=p_target)
    assert value == pytest.approx(expected, abs=1e-12)
    assert value >= min_dcf(tar, non, p_target=p_target) - 1e-12


def test_act_dcf_accepts_an_llr_exactly_at_the_bayes_threshold() -> None:
    # p_target 0.5: threshold 0. The non-target at 0 is a false accept, the target at -1 a miss.
    assert act_dcf([-1.0, 1.0], [-1.0, 0.0], p_target=0.5) == pytest.approx(1.0)
    assert act_dcf([-1.0, 1.0], [-1.0, -0.001], p_target=0.5) == pytest.approx(0.5)


def test_act_dcf_uses_costs_in_the_bayes_threshold() -> None:
    # c_miss = 9 at p_target 0.1 makes the threshold -log(0.9 / 0.9) = 0.
    assert act_dcf([0.5], [-0.5], p_target=0.1, c_miss=9.0) == 0.0
    assert act_dcf([-0.5], [-0.5], p_target=0.1, c_miss=9.0) == pytest.approx(1.0)


# -- Cllr ------------------------------------------------------------------------------------------


def test_cllr_of_silent_llrs_is_one_bit() -> None:
    assert cllr(np.zeros(3), np.zeros(11)) == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("seed", range(6))
def test_cllr_matches_brummer_formula(seed: int) -> None:
    rng = np.random.default_rng(seed)
    tar, non = rng.normal(2.0, 2.0, 30), rng.normal(-2.0, 2.0, 50)
    expected = 0.5 * (np.mean(np.log2(1 + np.exp(-tar))) + np.mean(np.log2(1 + np.exp(non))))
    assert cllr(tar, non) == pytest.approx(float(expected), rel=1e-12)


def test_cllr_stays_finite_for_huge_llrs() -> None:
    # A confidently wrong LLR of -800 costs 800 / ln 2 bits; exp(800) would overflow.
    assert cllr([-800.0], [-800.0]) == pytest.approx(0.5 * 800 / math.log(2), rel=1e-12)


@pytest.mark.parametrize(("seed", "tied"), CASES)
def test_min_cllr_matches_naive_pav(seed: int, tied: bool) -> None:
    tar, non = _trials(seed, tied=tied)
    assert min_cllr(tar, non) == pytest.approx(_reference_min_cllr(tar, non), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_min_cllr_is_no_worse_than_any_affine_calibration(seed: int) -> None:
    rng = np.random.default_rng(seed)
    tar, non = rng.normal(1.5, 1.0, 200), rng.normal(0.0, 1.2, 300)
    best = min_cllr(tar, non)
    for scale in (0.25, 0.5, 1.0, 2.0, 4.0):
        for offset in (-3.0, -1.0, 0.0, 1.0, 3.0):
            assert best <= cllr(scale * tar + offset, scale * non + offset)


def test_min_cllr_analytic_cases() -> None:
    assert min_cllr([2.0, 3.0], [0.0, 1.0, 1.5]) == 0.0
    # All tied: the only monotone calibration says "the prior", i.e. LLR 0, whatever the counts.
    assert min_cllr([4.0] * 3, [4.0] * 8) == pytest.approx(1.0, abs=1e-12)
    # The tie at 0 gets LLR 0 (1 bit for each of its two trials); the rest are separated.
    assert min_cllr([0.0, 1.0], [0.0, -1.0]) == pytest.approx(0.5, abs=1e-12)


# -- thresholds ------------------------------------------------------------------------------------


def test_error_rates_at_counts_ties_as_accepted() -> None:
    tar, non = [1.0, 2.0, 2.0, 3.0], [0.0, 2.0, 2.0, 5.0]
    assert error_rates_at(tar, non, 2.0) == (0.75, 0.25)
    assert error_rates_at(tar, non, math.nextafter(2.0, math.inf)) == (0.25, 0.75)
    assert error_rates_at(tar, non, -math.inf) == (1.0, 0.0)


@pytest.mark.parametrize(
    ("far", "expected"),
    [
        (0.0, math.nextafter(0.9, math.inf)),
        (0.25, math.nextafter(0.5, math.inf)),  # 0.5 itself still accepts both tied non-targets
        (0.5, math.nextafter(0.5, math.inf)),
        (0.74, math.nextafter(0.5, math.inf)),
        (0.75, math.nextafter(0.1, math.inf)),
        (0.99, math.nextafter(0.1, math.inf)),
        (1.0, -math.inf),
    ],
)
def test_threshold_for_far_with_ties(far: float, expected: float) -> None:
    assert threshold_for_far([0.5, 0.1, 0.9, 0.5], far) == expected


@pytest.mark.parametrize(
    ("frr", "expected"),
    [
        (0.0, 0.1),
        (0.2, 0.1),
        (0.25, 0.5),  # rejects only 0.1; the tied 0.5 targets are still accepted
        (0.74, 0.5),
        (0.75, 0.9),
        (1.0, math.inf),
    ],
)
def test_threshold_for_frr_with_ties(frr: float, expected: float) -> None:
    assert threshold_for_frr([0.5, 0.1, 0.9, 0.5], frr) == expected


@pytest.mark.parametrize(("seed", "tied"), CASES)
def test_threshold_helpers_are_tight(seed: int, tied: bool) -> None:
    tar, non = _trials(seed, tied=tied)
    for rate in [*np.linspace(0.0, 0.99, 23).tolist(), 0.29, 1 / 3]:
        t = threshold_for_far(non, rate)
        far, _ = error_rates_at(tar, non, t)
        below, _ = error_rates_at(tar, non, math.nextafter(t, -math.inf))
        assert far <= rate < below  # met at t, missed by the next float down

        t = threshold_for_frr(tar, rate)
        _, frr = error_rates_at(tar, non, t)
        _, above = error_rates_at(tar, non, math.nextafter(t, math.inf))
        assert frr <= rate < above  # met at t, missed by the next float up


def test_threshold_for_far_steps_in_the_scores_own_precision() -> None:
    # numpy compares float32 scores with a Python float in float32: a float64 step above 0.5 would
    # round back to 0.5 and still accept both tied non-targets.
    non = np.array([0.1, 0.5, 0.5], dtype=np.float32)
    t = threshold_for_far(non, 0.4)
    assert t > 0.5
    assert float(np.mean(non >= t)) <= 0.4
    assert t == float(np.nextafter(np.float32(0.5), np.float32(np.inf)))
    assert float(np.mean(non >= threshold_for_frr(non, 0.0))) == 1.0  # scores are returned exactly


# -- summary and validation ------------------------------------------------------------------------


def test_summarize_collects_the_individual_metrics() -> None:
    tar, non = _trials(5, tied=False)
    summary = summarize(tar, non, p_target=0.05)
    assert summary == SummaryMetrics(
        n_target=len(tar),
        n_nontarget=len(non),
        eer=eer(tar, non),
        min_dcf=min_dcf(tar, non, p_target=0.05),
        cllr=cllr(tar, non),
        min_cllr=min_cllr(tar, non),
    )
    assert summary.min_dcf != min_dcf(tar, non, p_target=0.5)  # p_target really reached min_dcf


@pytest.mark.parametrize(
    "metric",
    [
        lambda tar, non: det_curve(tar, non),
        eer,
        min_dcf,
        act_dcf,
        cllr,
        min_cllr,
        summarize,
        lambda tar, non: error_rates_at(tar, non, 0.0),
    ],
)
def test_empty_trials_are_refused(metric: object) -> None:
    assert callable(metric)
    with pytest.raises(ValueError, match="empty"):
        metric([], [1.0])
    with pytest.raises(ValueError, match="empty"):
        metric([1.0], np.array([]))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        eer([1.0, math.nan], [0.0])
    with pytest.raises(ValueError, match="1-D"):
        cllr([[1.0]], [0.0])
    with pytest.raises(ValueError, match="p_target"):
        min_dcf([1.0], [0.0], p_target=1.0)
    with pytest.raises(ValueError, match="c_fa"):
        act_dcf([1.0], [0.0], c_fa=0.0)
    with pytest.raises(ValueError, match="far"):
        threshold_for_far([0.0], 1.5)
    with pytest.raises(ValueError, match="frr"):
        threshold_for_frr([0.0], -0.1)
    with pytest.raises(ValueError, match="empty"):
        threshold_for_far([], 0.1)
    with pytest.raises(ValueError, match="threshold"):
        error_rates_at([1.0], [0.0], math.nan)
