"""Fitting calibration profiles from labelled trials.

Linear logistic-regression fusion (as in BOSARIS/FoCal): ``llr = offset + Σ weight_m · score_m``, fitted at
an effective prior of 0.5 so the output is a log-likelihood ratio. Every fitting set counts equally,
whatever its number of trials, so one large set cannot pull the calibration to itself. Verdict
thresholds are then read off the data for stated operating points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voxgate.audio.types import FloatArray
from voxgate.biometrics.metrics import threshold_for_far, threshold_for_frr
from voxgate.biometrics.profile import Thresholds, quality_features

BoolArray = npt.NDArray[np.bool_]

DEFAULT_ACCEPT_FAR = 0.003  # `verified` falsely accepts at most 0.5 % of impostors on every fitting set
DEFAULT_REJECT_FRR = 0.02  # `not_verified` falsely rejects at most 2 % of true speakers on every fitting set


@dataclass(frozen=True)
class TrialSet:
    """Normalised scores of one set's trials, one column per model, and which trials are same-speaker."""

    name: str
    scores: FloatArray  # (trials, models)
    is_target: BoolArray  # (trials,)
    quality: FloatArray | None = None  # (trials,) the duration quality measure, for a duration-aware fit

    @property
    def design(self) -> FloatArray:
        """The fit's columns: the scores, then (duration-aware) ``q`` and ``q · score`` per model."""
        if self.quality is None:
            return self.scores
        return np.hstack([self.scores.astype(np.float64), quality_features(self.scores, self.quality)])

    def __post_init__(self) -> None:
        if self.scores.ndim != 2 or self.scores.shape[0] != self.is_target.shape[0]:
            raise ValueError(
                f"{self.name}: scores {self.scores.shape} do not match labels {self.is_target.shape}"
            )
        if not self.is_target.any() or self.is_target.all():
            raise ValueError(f"{self.name}: fitting needs both same-speaker and different-speaker trials")


def fit_linear_fusion(
    sets: Sequence[TrialSet], *, l2: float = 1e-7, iterations: int = 100
) -> tuple[FloatArray, float]:
    """Weights (one per column of :attr:`TrialSet.design`) and offset of the linear fusion, by Newton's
    method on the prior-weighted cross-entropy."""
    if not sets:
        raise ValueError("no trial sets to fit on")
    if len({s.quality is None for s in sets}) > 1:
        raise ValueError("either every trial set has quality measures or none has")
    x = np.concatenate([s.design for s in sets]).astype(np.float64)
    x = np.hstack([x, np.ones((x.shape[0], 1))])  # (trials, models + 1), last column is the offset
    y = np.concatenate([s.is_target for s in sets]).astype(np.float64)
    sample_weight = np.concatenate(
        [np.where(s.is_target, 0.5 / s.is_target.sum(), 0.5 / (~s.is_target).sum()) / len(sets) for s in sets]
    )
    theta = np.zeros(x.shape[1])
    ridge = l2 * np.eye(x.shape[1])
    ridge[-1, -1] = 0.0  # the offset is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        gradient = x.T @ (sample_weight * (p - y)) + ridge @ theta
        hessian = (x * (sample_weight * p * (1 - p))[:, None]).T @ x + ridge
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.max(np.abs(step)) < 1e-9:
            break
    return theta[:-1].astype(np.float32), float(theta[-1])


def fit_thresholds(
    llrs: Sequence[tuple[FloatArray, BoolArray]],
    *,
    accept_far: float = DEFAULT_ACCEPT_FAR,
    reject_frr: float = DEFAULT_REJECT_FRR,
) -> Thresholds:
    """Thresholds meeting both operating points on every fitting set (the strictest set decides)."""
    accept = max(threshold_for_far(llr[~target], accept_far) for llr, target in llrs)
    reject = min(threshold_for_frr(llr[target], reject_frr) for llr, target in llrs)
    reject = min(reject, accept)
    return Thresholds(
        accept_llr=math.ceil(float(accept) * 1e4) / 1e4,  # rounded only towards the safe side
        reject_llr=math.floor(float(reject) * 1e4) / 1e4,
        accept_far=accept_far,
        reject_frr=reject_frr,
    )
