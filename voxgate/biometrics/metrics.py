"""Speaker-verification metrics: DET curve, EER, DCF and Cllr, plus threshold helpers.

One convention throughout: a trial is *accepted* when its score is ``>=`` the threshold. A target
scored below the threshold is a miss (false reject); a non-target at or above it is a false accept.

Curves come from one sort plus cumulative sums, never from a loop over thresholds. Tied scores are
always kept together as one block, because no threshold can separate them; treating them one by one
would report operating points that no real threshold reaches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voxgate.audio.types import Float64Array

__all__ = [
    "SummaryMetrics",
    "act_dcf",
    "cllr",
    "det_curve",
    "eer",
    "error_rates_at",
    "min_cllr",
    "min_dcf",
    "summarize",
    "threshold_for_far",
    "threshold_for_frr",
]

IntArray = npt.NDArray[np.int64]

_LN2 = math.log(2.0)


@dataclass(frozen=True)
class SummaryMetrics:
    """The headline numbers of one evaluation; ``min_dcf`` is normalised, Cllr values are in bits."""

    n_target: int
    n_nontarget: int
    eer: float
    min_dcf: float
    cllr: float
    min_cllr: float


def _scores(values: npt.ArrayLike, name: str) -> Float64Array:
    """A 1-D float64 copy of the scores, refusing input that would yield a believable but wrong metric."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of scores, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: metrics need at least one trial of each kind")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite scores")
    return arr


def _precision(values: npt.ArrayLike) -> np.dtype[np.floating]:
    """The float type the caller's scores are compared in: float16/32 stay, everything else is float64."""
    dtype = np.asarray(values).dtype
    if np.issubdtype(dtype, np.floating) and dtype.itemsize <= 4:
        return np.dtype(dtype.type)
    return np.dtype(np.float64)


def _probability(value: float, name: str) -> float:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be strictly between 0 and 1, got {value}")
    return float(value)


def _rate(value: float, name: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return float(value)


def _cost(value: float, name: str) -> float:
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a positive finite cost, got {value}")
    return float(value)


def _tied_counts(tar: Float64Array, non: Float64Array) -> tuple[Float64Array, IntArray, IntArray]:
    """Distinct scores in ascending order with the number of targets and non-targets at each.

    The single sort every curve is built from; tied scores collapse into one atom.
    """
    scores = np.concatenate([tar, non])
    is_target = np.concatenate([np.ones(tar.size, dtype=np.int64), np.zeros(non.size, dtype=np.int64)])
    order = np.argsort(scores, kind="stable")
    scores = scores[order]
    is_target = is_target[order]
    starts = np.flatnonzero(np.concatenate([[True], scores[1:] != scores[:-1]]))
    n_at = np.diff(np.append(starts, scores.size)).astype(np.int64)
    n_tar_at = np.add.reduceat(is_target, starts).astype(np.int64)
    return scores[starts], n_tar_at, n_at - n_tar_at


def _pav(n_tar: IntArray, n_all: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """Pool adjacent violators on the target fraction of score-ordered atoms.

    Returns per block the target count, the trial count and the exclusive end index into the atoms.
    Block fractions are strictly increasing: this is the monotone (optimally calibrated) posterior and
    its blocks are the vertices of the ROC convex hull. Neighbours with equal fractions are pooled with
    numpy first, so the O(n) stack loop only walks the places where the fraction changes.
    """
    same_as_next = n_tar[:-1] * n_all[1:] == n_tar[1:] * n_all[:-1]
    starts = np.flatnonzero(np.concatenate([[True], ~same_as_next]))
    ends = np.append(starts[1:], n_tar.size).tolist()
    tar_sums = np.add.reduceat(n_tar, starts).tolist()
    all_sums = np.add.reduceat(n_all, starts).tolist()

    # Python ints: the cross-multiplied comparisons below are exact.
    stack_tar: list[int] = []
    stack_all: list[int] = []
    stack_end: list[int] = []
    for t, a, e in zip(tar_sums, all_sums, ends, strict=True):
        while stack_tar and stack_tar[-1] * a >= t * stack_all[-1]:
            t += stack_tar.pop()
            a += stack_all.pop()
            stack_end.pop()
        stack_tar.append(t)
        stack_all.append(a)
        stack_end.append(e)
    return (
        np.asarray(stack_tar, dtype=np.int64),
        np.asarray(stack_all, dtype=np.int64),
        np.asarray(stack_end, dtype=np.int64),
    )


def det_curve(
    target_scores: npt.ArrayLike, nontarget_scores: npt.ArrayLike
) -> tuple[Float64Array, Float64Array, Float64Array]:
    """Miss and false-accept rates at every distinct threshold, from one sort and cumulative sums.

    ``thresholds`` are the distinct scores in ascending order followed by ``+inf`` (reject all), so the
    curve runs from ``(p_miss=0, p_fa=1)`` to ``(p_miss=1, p_fa=0)``. At ``thresholds[k]``,
    ``p_miss[k] = mean(tar < t)`` and ``p_fa[k] = mean(non >= t)``.
    """
    tar = _scores(target_scores, "target_scores")
    non = _scores(nontarget_scores, "nontarget_scores")
    distinct, n_tar_at, n_non_at = _tied_counts(tar, non)
    tar_below = np.concatenate([[0], np.cumsum(n_tar_at)])
    non_below = np.concatenate([[0], np.cumsum(n_non_at)])
    thresholds = np.append(distinct, np.inf)
    p_miss = tar_below / tar.size
    p_fa = (non.size - non_below) / non.size
    return thresholds, p_miss.astype(np.float64), p_fa.astype(np.float64)


def _rocch(tar: Float64Array, non: Float64Array) -> tuple[Float64Array, Float64Array]:
    """Vertices (p_miss, p_fa) of the ROC convex hull, from accept-all to reject-all (BOSARIS ``rocch``)."""
    _, n_tar_at, n_non_at = _tied_counts(tar, non)
    _, _, block_end = _pav(n_tar_at, n_tar_at + n_non_at)
    cut = np.concatenate([[0], block_end])
    tar_below = np.concatenate([[0], np.cumsum(n_tar_at)])[cut]
    non_below = np.concatenate([[0], np.cumsum(n_non_at)])[cut]
    return tar_below / tar.size, (non.size - non_below) / non.size


def eer(tar: npt.ArrayLike, non: npt.ArrayLike) -> float:
    """Equal error rate as ROCCH-EER (BOSARIS ``rocch2eer``), not interpolation on the step curve.

    The EER is where the ROC convex hull crosses ``p_miss == p_fa``. The hull is what a system reaches
    by randomising between two thresholds, so this value is well defined with ties and small counts,
    and it never favours the system: it is at least as large as any interpolated step-curve EER.
    Each hull segment's line is intersected with the diagonal; on a convex curve the largest
    intersection is the true crossing. Segments along an axis contribute 0.
    """
    p_miss, p_fa = _rocch(_scores(tar, "tar"), _scores(non, "non"))
    x1, x2 = p_fa[:-1], p_fa[1:]
    y1, y2 = p_miss[:-1], p_miss[1:]
    dx = x1 - x2
    dy = y2 - y1
    sloped = (dx > 0) & (dy > 0)
    if not np.any(sloped):
        return 0.0
    crossings = (x1 * y2 - x2 * y1)[sloped] / (dx + dy)[sloped]
    return float(max(0.0, crossings.max()))


def _normaliser(p_target: float, c_miss: float, c_fa: float) -> float:
    """Cost of the best trivial system (accept all or reject all), so that 1.0 means 'no better'."""
    return min(c_miss * p_target, c_fa * (1.0 - p_target))


def min_dcf(
    tar: npt.ArrayLike,
    non: npt.ArrayLike,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """Normalised minimum detection cost over all thresholds: the cost with an oracle threshold.

    Divided by ``min(c_miss * p_target, c_fa * (1 - p_target))``; the accept-all and reject-all points
    are on the curve, so the result is at most 1.
    """
    p_target = _probability(p_target, "p_target")
    c_miss, c_fa = _cost(c_miss, "c_miss"), _cost(c_fa, "c_fa")
    _, p_miss, p_fa = det_curve(tar, non)
    dcf = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    return float(dcf.min() / _normaliser(p_target, c_miss, c_fa))


def act_dcf(
    tar_llr: npt.ArrayLike,
    non_llr: npt.ArrayLike,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """Normalised detection cost at the Bayes threshold: what calibrated LLRs really cost.

    The threshold is ``-log(p_target * c_miss / ((1 - p_target) * c_fa))``, i.e. ``-logit(p_target)``
    with unit costs; accept when ``llr >= threshold``. The gap to ``min_dcf`` is the calibration loss.
    """
    tar = _scores(tar_llr, "tar_llr")
    non = _scores(non_llr, "non_llr")
    p_target = _probability(p_target, "p_target")
    c_miss, c_fa = _cost(c_miss, "c_miss"), _cost(c_fa, "c_fa")
    threshold = -math.log(p_target * c_miss / ((1.0 - p_target) * c_fa))
    p_miss = float(np.mean(tar < threshold))
    p_fa = float(np.mean(non >= threshold))
    dcf = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    return dcf / _normaliser(p_target, c_miss, c_fa)


def cllr(tar_llr: npt.ArrayLike, non_llr: npt.ArrayLike) -> float:
    """Log-likelihood-ratio cost in bits (Brümmer): judges the LLRs themselves, not one threshold.

    ``0.5 * (mean(log2(1 + exp(-tar))) + mean(log2(1 + exp(non))))``. LLRs that are all zero (a system
    that says nothing) cost exactly 1 bit; less is better.
    """
    tar = _scores(tar_llr, "tar_llr")
    non = _scores(non_llr, "non_llr")
    tar_cost = float(np.mean(np.logaddexp(0.0, -tar)))
    non_cost = float(np.mean(np.logaddexp(0.0, non)))
    return 0.5 * (tar_cost + non_cost) / _LN2


def min_cllr(tar: npt.ArrayLike, non: npt.ArrayLike) -> float:
    """Cllr after the best monotone recalibration (BOSARIS ``opt_loglr``): the discrimination part.

    PAV gives the optimal non-decreasing posterior per tied score block; subtracting the log-odds of the
    empirical target proportion turns it into LLRs. Pure blocks get infinite LLRs and cost nothing, so
    perfect separation gives 0. ``cllr - min_cllr`` is the calibration loss.
    """
    tar_arr = _scores(tar, "tar")
    non_arr = _scores(non, "non")
    _, n_tar_at, n_non_at = _tied_counts(tar_arr, non_arr)
    block_tar, block_all, _ = _pav(n_tar_at, n_tar_at + n_non_at)
    block_non = block_all - block_tar
    prior_log_odds = math.log(tar_arr.size / non_arr.size)

    has_tar = block_tar > 0
    has_non = block_non > 0
    # A pure block's posterior is 0 or 1: its LLR is -inf or +inf on purpose, and costs nothing.
    with np.errstate(divide="ignore"):
        llr = np.log(block_tar) - np.log(block_non) - prior_log_odds
    tar_cost = float(np.sum(block_tar[has_tar] * np.logaddexp(0.0, -llr[has_tar]))) / tar_arr.size
    non_cost = float(np.sum(block_non[has_non] * np.logaddexp(0.0, llr[has_non]))) / non_arr.size
    return 0.5 * (tar_cost + non_cost) / _LN2


def error_rates_at(tar: npt.ArrayLike, non: npt.ArrayLike, threshold: float) -> tuple[float, float]:
    """``(false_accept_rate, false_reject_rate)`` of one verdict threshold, to check what it delivers.

    Accept is ``score >= threshold``, the same convention as every curve in this module.
    """
    tar_arr = _scores(tar, "tar")
    non_arr = _scores(non, "non")
    if math.isnan(threshold):
        raise ValueError("threshold is NaN")
    return float(np.mean(non_arr >= threshold)), float(np.mean(tar_arr < threshold))


def threshold_for_far(non: npt.ArrayLike, far: float) -> float:
    """Smallest threshold whose false-accept rate is ``<= far`` (accept means ``score >= threshold``).

    The rate drops just *above* a non-target score, so the answer is the next representable value above
    that score: the score itself would still accept it (and every tie). The step is taken in the scores'
    own precision, because numpy compares float32 scores with a Python float in float32, where a
    float64 step would round back onto the score. ``far == 1`` allows everything: ``-inf``.
    """
    non_arr = _scores(non, "non")
    precision = _precision(non)
    far = _rate(far, "far")
    if far >= 1.0:
        return -math.inf
    distinct, counts = np.unique(non_arr, return_counts=True)  # ascending
    n_above = non_arr.size - np.cumsum(counts)
    ok = n_above / non_arr.size <= far  # same arithmetic as error_rates_at
    # n_above is non-increasing and 0 at the largest score, so a first True exists.
    first = int(np.argmax(ok))
    score = distinct[first].astype(precision)  # exact: the scores came in this precision
    return float(np.nextafter(score, precision.type(np.inf)))


def threshold_for_frr(tar: npt.ArrayLike, frr: float) -> float:
    """Largest threshold whose false-reject rate is ``<= frr`` (reject means ``score < threshold``).

    The rate only rises *after* a target score, so the answer is a target score itself (ties included
    are still accepted). ``frr == 1`` allows rejecting everyone: ``+inf``.
    """
    tar_arr = _scores(tar, "tar")
    frr = _rate(frr, "frr")
    if frr >= 1.0:
        return math.inf
    distinct, counts = np.unique(tar_arr, return_counts=True)  # ascending
    n_below = np.cumsum(counts) - counts
    ok = n_below / tar_arr.size <= frr  # same arithmetic as error_rates_at
    # n_below is non-decreasing and 0 at the smallest score, so ok is True on a prefix.
    last = int(np.flatnonzero(ok)[-1])
    return float(distinct[last])


def summarize(tar_llr: npt.ArrayLike, non_llr: npt.ArrayLike, p_target: float = 0.01) -> SummaryMetrics:
    """All headline metrics of one set of calibrated trials; ``min_dcf`` is at ``p_target``."""
    tar = _scores(tar_llr, "tar_llr")
    non = _scores(non_llr, "non_llr")
    return SummaryMetrics(
        n_target=int(tar.size),
        n_nontarget=int(non.size),
        eer=eer(tar, non),
        min_dcf=min_dcf(tar, non, p_target=p_target),
        cllr=cllr(tar, non),
        min_cllr=min_cllr(tar, non),
    )
