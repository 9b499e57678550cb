"""Fitting calibration profiles on labelled datasets, and scoring datasets with a profile.

Used by ``voxgate calibrate`` and by the accuracy report that fits the shipped default profiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from voxgate.audio.types import FloatArray
from voxgate.biometrics.calibration import (
    DEFAULT_ACCEPT_FAR,
    DEFAULT_REJECT_FRR,
    TrialSet,
    fit_linear_fusion,
    fit_thresholds,
)
from voxgate.biometrics.profile import CalibrationProfile, Channel, ModelTerm, Thresholds
from voxgate.biometrics.voiceprint import Voiceprint
from voxgate.evaluation.datasets import Dataset
from voxgate.evaluation.embedding import FileResult

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class EmbeddedSet:
    """A dataset's recordings after embedding (one channel), aligned with ``dataset.files``."""

    dataset: Dataset
    channel: Channel
    results: tuple[FileResult, ...]

    @property
    def name(self) -> str:
        return self.dataset.name

    def usable(self, length_s: float | None = None) -> IntArray:
        """Indices of files that gave a voiceprint (of at least ``length_s`` net speech, if given)."""
        return np.array(
            [i for i, r in enumerate(self.results) if not r.error and length_s in r.voiceprints],
            dtype=np.int64,
        )

    def voiceprints(self, indices: IntArray, length_s: float | None = None) -> list[Voiceprint]:
        return [self.results[i].voiceprints[length_s] for i in indices]

    def trials(
        self, test_length_s: float | None = None
    ) -> tuple[list[Voiceprint], list[Voiceprint], IntArray, BoolArray]:
        """Pairs of distinct usable files: (enrolled, tests, (pairs, 2) indices into them, same speaker?).

        Without a crop every unordered pair is used once. With ``test_length_s`` the test side is cut to
        that much net speech, and every ordered pair whose test file has that much speech is used.
        """
        full = self.usable()
        speakers = np.array(self.dataset.speakers)
        enrolled = self.voiceprints(full)
        if test_length_s is None:
            i, j = np.triu_indices(len(full), k=1)
            pairs = np.stack([i, j], axis=1).astype(np.int64)
            return enrolled, enrolled, pairs, speakers[full[i]] == speakers[full[j]]
        cropped = self.usable(test_length_s)
        tests = self.voiceprints(cropped, test_length_s)
        i, j = (
            grid.ravel() for grid in np.meshgrid(np.arange(len(full)), np.arange(len(cropped)), indexing="ij")
        )
        distinct = full[i] != cropped[j]
        i, j = i[distinct], j[distinct]
        return (
            enrolled,
            tests,
            np.stack([i, j], axis=1).astype(np.int64),
            speakers[full[i]] == speakers[cropped[j]],
        )


def _versions(sets: Sequence[EmbeddedSet], model_ids: Sequence[str]) -> dict[str, str]:
    for embedded in sets:
        for result in embedded.results:
            if not result.error:
                vp = result.voiceprints[None]
                return {m: vp.embedding(m).model_version for m in model_ids}
    raise ValueError("no usable recordings to fit on")


def build_cohort(sets: Sequence[EmbeddedSet], model_id: str, size: int, seed: int = 0) -> FloatArray:
    """Up to ``size`` embeddings spread evenly over the fitting sets' speakers (round robin, shuffled)."""
    rng = np.random.default_rng(seed)
    by_speaker: dict[tuple[str, str], list[FloatArray]] = {}
    for embedded in sets:
        for index in embedded.usable():
            key = (embedded.name, embedded.dataset.speakers[index])
            vector = embedded.results[index].voiceprints[None].embedding(model_id).vector
            by_speaker.setdefault(key, []).append(vector)
    pools = [rng.permutation(len(v)).tolist() for v in by_speaker.values()]
    vectors = list(by_speaker.values())
    chosen: list[FloatArray] = []
    while len(chosen) < size and any(pools):
        for pool, group in zip(pools, vectors, strict=True):
            if pool and len(chosen) < size:
                chosen.append(group[pool.pop()])
    return np.stack(chosen).astype(np.float32)


def unfitted_profile(
    sets: Sequence[EmbeddedSet], model_ids: Sequence[str], normalisation: str, top_k: int, cohort_size: int
) -> CalibrationProfile:
    """Terms (models, normalisation, cohort) with unit weights: the input to fitting."""
    versions = _versions(sets, model_ids)
    terms = tuple(
        ModelTerm(
            model_id=m,
            model_version=versions[m],
            weight=1.0,
            normalisation=normalisation,
            top_k=top_k if normalisation == "asnorm" else 0,
            cohort=build_cohort(sets, m, cohort_size) if normalisation == "asnorm" else None,
        )
        for m in model_ids
    )
    return CalibrationProfile(
        name="unfitted", channel=sets[0].channel, terms=terms, offset=0.0, thresholds=Thresholds(0.0, 0.0)
    )


def normalised_trials(
    profile: CalibrationProfile, embedded: EmbeddedSet, test_length_s: float | None = None
) -> TrialSet:
    enrolled, tests, pairs, is_target = embedded.trials(test_length_s)
    return TrialSet(embedded.name, profile.normalised_pairs(enrolled, tests, pairs), is_target)


def fit_profile(
    sets: Sequence[EmbeddedSet],
    model_ids: Sequence[str],
    *,
    name: str,
    channel: Channel,
    normalisation: str = "asnorm",
    top_k: int = 100,
    cohort_size: int = 300,
    accept_far: float = DEFAULT_ACCEPT_FAR,
    reject_frr: float = DEFAULT_REJECT_FRR,
    parent_hash: str | None = None,
    description: str = "",
) -> CalibrationProfile:
    """Fit fusion weights, offset and verdict thresholds on every pair of recordings within each set."""
    base = unfitted_profile(sets, model_ids, normalisation, top_k, cohort_size)
    trial_sets = [normalised_trials(base, s) for s in sets]
    weights, offset = fit_linear_fusion(trial_sets)
    terms = tuple(
        ModelTerm(t.model_id, t.model_version, float(w), t.normalisation, t.top_k, t.cohort)
        for t, w in zip(base.terms, weights, strict=True)
    )
    fitted = CalibrationProfile(
        name=name, channel=channel, terms=terms, offset=offset, thresholds=Thresholds(0, 0)
    )
    llrs = [(fitted.llr_from_normalised(ts.scores), ts.is_target) for ts in trial_sets]
    thresholds = fit_thresholds(llrs, accept_far=accept_far, reject_frr=reject_frr)
    fitted_on: dict[str, Any] = {
        "sets": [
            {
                "name": s.name,
                "channel": s.channel.value,
                "recordings": len(s.usable()),
                "speakers": len(set(s.dataset.speakers)),
                "target_trials": int(ts.is_target.sum()),
                "nontarget_trials": int((~ts.is_target).sum()),
            }
            for s, ts in zip(sets, trial_sets, strict=True)
        ],
        "trials": "every pair of distinct recordings within one set",
        "cohort_size": 0 if normalisation == "none" else int(terms[0].cohort.shape[0]),  # type: ignore[union-attr]
    }
    return CalibrationProfile(
        name=name,
        channel=channel,
        terms=terms,
        offset=offset,
        thresholds=thresholds,
        parent_hash=parent_hash,
        description=description,
        fitted_on=fitted_on,
    )
