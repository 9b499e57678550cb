"""Fitting calibration profiles on labelled datasets, and scoring datasets with a profile.

Used by ``voxgate calibrate`` and by the accuracy report that fits the shipped default profiles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
from voxgate.biometrics.profile import (
    CalibrationProfile,
    Channel,
    ModelTerm,
    QualityTerm,
    Thresholds,
    speech_of,
)
from voxgate.biometrics.voiceprint import Voiceprint, combine
from voxgate.evaluation.datasets import Dataset
from voxgate.evaluation.embedding import FileResult

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


# A set whose recordings (90 %) hold less speech than this is a set of short clips (keywords, digits,
# passphrases); the report also joins them into calls of CALL_SIZES clips.
SHORT_CLIP_MAX_S = 4.5
CALL_SIZES = (2, 4)


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

    @property
    def short(self) -> bool:
        """Its recordings are short clips (see :data:`SHORT_CLIP_MAX_S`)."""
        durations = [r.speech_s for r in self.results if not r.error]
        return bool(durations) and float(np.quantile(durations, 0.9)) < SHORT_CLIP_MAX_S

    def call_trials(self, size: int) -> Trials:
        """Calls of ``size`` clips: consecutive groups of a speaker's usable recordings (manifest order)
        pooled into one voiceprint, as a live stream pools the things a caller says; every pair of
        calls is a trial.

        Short clips alone never reach the 6–30 s bands: these are the long trials of a small shared
        vocabulary (two callers saying the same few words), the hardest impostors the report has.
        Fitting on them too was measured and rejected (docs/accuracy.md, short speech)."""
        speakers = np.array(self.dataset.speakers)
        usable = self.usable()
        calls: list[Voiceprint] = []
        owners: list[str] = []
        for speaker in dict.fromkeys(self.dataset.speakers):
            own = usable[speakers[usable] == speaker]
            for start in range(0, len(own) - size + 1, size):
                calls.append(combine(self.voiceprints(own[start : start + size])))
                owners.append(speaker)
        i, j = np.triu_indices(len(calls), k=1)
        who = np.array(owners)
        return Trials(
            f"{self.name} (calls of {size})",
            calls,
            calls,
            np.stack([i, j], axis=1).astype(np.int64),
            who[i] == who[j],
            np.zeros(0, dtype=bool),
            np.zeros(0, dtype=np.float64),
        )

    def trials(self, crops_s: Sequence[float] = ()) -> Trials:
        """Every trial of the set, the refused ones counted apart.

        Full recordings: every unordered pair of distinct files once. Each crop length: the test side cut
        to its first that many seconds of net speech, every ordered pair whose test file has more speech
        than that. A trial with a file that gave no voiceprint is refused (LLR 0, a rejection).
        """
        full = self.usable()
        speakers = np.array(self.dataset.speakers)
        n = len(self.results)
        ok = np.zeros(n, dtype=bool)
        ok[full] = True
        position = np.full(n, -1, dtype=np.int64)
        position[full] = np.arange(len(full))
        enrolled = self.voiceprints(full)
        tests = list(enrolled)
        file_speech = np.array([r.speech_s for r in self.results], dtype=np.float64)
        i, j = np.triu_indices(n, k=1)
        scorable = ok[i] & ok[j]
        pairs = [np.stack([position[i[scorable]], position[j[scorable]]], axis=1)]
        is_target = [speakers[i[scorable]] == speakers[j[scorable]]]
        refused_target = [speakers[i[~scorable]] == speakers[j[~scorable]]]
        refused_test_s = [np.minimum(file_speech[i[~scorable]], file_speech[j[~scorable]])]
        for crop in crops_s:
            cropped = self.usable(crop)
            if not len(cropped):
                continue
            offset = len(tests)
            tests += self.voiceprints(cropped, crop)
            e, t = (g.ravel() for g in np.meshgrid(np.arange(n), np.arange(len(cropped)), indexing="ij"))
            distinct = e != cropped[t]
            e, t = e[distinct], t[distinct]
            scorable = ok[e]
            pairs.append(np.stack([position[e[scorable]], offset + t[scorable]], axis=1))
            is_target.append(speakers[e[scorable]] == speakers[cropped[t[scorable]]])
            refused_target.append(speakers[e[~scorable]] == speakers[cropped[t[~scorable]]])
            refused_test_s.append(np.full(int((~scorable).sum()), crop))
        return Trials(
            self.name,
            enrolled,
            tests,
            np.concatenate(pairs).astype(np.int64),
            np.concatenate(is_target),
            np.concatenate(refused_target),
            np.concatenate(refused_test_s),
        )


@dataclass(frozen=True)
class Trials:
    """A set's trials: the scorable ones as pairs of voiceprints, the refused ones only counted."""

    name: str
    enrolled: list[Voiceprint]
    tests: list[Voiceprint]
    pairs: IntArray  # (scorable, 2) indices into enrolled, tests
    is_target: BoolArray  # (scorable,)
    refused_target: BoolArray  # (refused,) same speaker?
    refused_test_s: FloatArray  # (refused,) the shorter side's net speech (for bands)

    @property
    def test_s(self) -> FloatArray:
        """Each scorable trial's test-side net speech, seconds."""
        return speech_of(self.tests)[self.pairs[:, 1]]

    def quality(self, term: QualityTerm) -> FloatArray:
        return term.measure(speech_of(self.enrolled)[self.pairs[:, 0]], self.test_s)

    def scored(self, profile: CalibrationProfile) -> ScoredTrials:
        """Every trial's LLR and verdict under ``profile``; refused ones get LLR 0 and their own verdict."""
        llr = profile.pair_llrs(self.enrolled, self.tests, self.pairs)
        verdicts = [profile.thresholds.verdict(float(x)).value for x in llr]
        n_refused = len(self.refused_target)
        return ScoredTrials(
            np.concatenate([llr, np.zeros(n_refused, dtype=np.float32)]),
            np.concatenate([self.is_target, self.refused_target]),
            np.concatenate([self.test_s, self.refused_test_s]),
            verdicts + [REFUSED] * n_refused,
        )


REFUSED = "insufficient_speech"


@dataclass(frozen=True)
class ScoredTrials:
    """Every trial of a set (refused ones included, LLR 0), for figures that count them all."""

    llr: FloatArray
    is_target: BoolArray
    test_s: FloatArray
    verdicts: list[str]

    def select(self, mask: BoolArray) -> ScoredTrials:
        return ScoredTrials(
            self.llr[mask],
            self.is_target[mask],
            self.test_s[mask],
            [v for v, keep in zip(self.verdicts, mask, strict=True) if keep],
        )

    @property
    def refused(self) -> int:
        return sum(v == REFUSED for v in self.verdicts)

    @staticmethod
    def pooled(parts: Sequence[ScoredTrials]) -> ScoredTrials:
        return ScoredTrials(
            np.concatenate([p.llr for p in parts]),
            np.concatenate([p.is_target for p in parts]),
            np.concatenate([p.test_s for p in parts]),
            [v for p in parts for v in p.verdicts],
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


# Speech lengths (net, seconds) of the test side, for duration-aware fitting and the report's bands.
CROPS_S = (2.0, 4.5, 8.0, 20.0)  # one inside each band from 1.5 s up
BANDS_S = ((0.0, 1.5), (1.5, 3.0), (3.0, 6.0), (6.0, 10.0), (10.0, 30.0), (30.0, math.inf))
DEFAULT_QUALITY = QualityTerm(weight=0.0, interaction=())  # the measure's bounds for fitting


def band_label(band: tuple[float, float]) -> str:
    low, high = band
    return f"< {high:g} s" if low == 0 else (f"≥ {low:g} s" if math.isinf(high) else f"{low:g}–{high:g} s")


def normalised_trials(
    profile: CalibrationProfile, trials: Trials, quality: QualityTerm | None = None
) -> TrialSet:
    """The scorable trials' normalised scores (and quality measures, for a duration-aware fit)."""
    return TrialSet(
        trials.name,
        profile.normalised_pairs(trials.enrolled, trials.tests, trials.pairs),
        trials.is_target,
        None if quality is None else trials.quality(quality),
    )


def _threshold_groups(
    profile: CalibrationProfile, trials: Sequence[Trials], banded: bool
) -> list[tuple[FloatArray, BoolArray]]:
    """Each set's scorable LLRs, split by test-speech band when ``banded``: bands with too few trials for
    the operating points are left to the others (a set with no such band counts as one group)."""
    groups = []
    for t in trials:
        llr = profile.pair_llrs(t.enrolled, t.tests, t.pairs)
        bands = []
        if banded:
            test_s = t.test_s
            for low, high in BANDS_S:
                inside = (test_s >= low) & (test_s < high)
                targets, nontargets = int(t.is_target[inside].sum()), int((~t.is_target[inside]).sum())
                if targets >= MIN_BAND_TARGETS and nontargets >= MIN_BAND_NONTARGETS:
                    bands.append((llr[inside], t.is_target[inside]))
        groups += bands or [(llr, t.is_target)]
    return groups


MIN_BAND_TARGETS = 50
MIN_BAND_NONTARGETS = 1000


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
    duration_aware: bool = False,
    trials: Sequence[Trials] | None = None,
    transfer: bool = False,
) -> CalibrationProfile:
    """Fit fusion weights, offset and verdict thresholds on every pair of recordings within each set.

    ``duration_aware``: the test sides are also cut to each of ``CROPS_S`` seconds of net speech, the fit
    learns how speech length changes a score's meaning (:class:`QualityTerm`), and the thresholds hold
    in every test-speech band with enough trials, not just on average. ``trials`` replaces the sets'
    own trials (e.g. several recordings enrolled together).

    ``transfer``: the thresholds must also hold on each fitting set as scored by a profile fitted on the
    *other* sets (leave one set out), not only as the profile fitted on all of them scores it: a
    calibration does not transfer perfectly to audio it never saw, and the operating points should
    hold there too."""
    base = unfitted_profile(sets, model_ids, normalisation, top_k, cohort_size)
    if trials is None:
        trials = [s.trials(CROPS_S if duration_aware else ()) for s in sets]
    quality = DEFAULT_QUALITY if duration_aware else None
    trial_sets = [normalised_trials(base, t, quality) for t in trials]
    weights, offset = fit_linear_fusion(trial_sets)
    n = len(base.terms)
    terms = tuple(
        ModelTerm(t.model_id, t.model_version, float(w), t.normalisation, t.top_k, t.cohort)
        for t, w in zip(base.terms, weights[:n], strict=True)
    )
    fitted_quality = (
        None
        if quality is None
        else replace(quality, weight=float(weights[n]), interaction=tuple(float(w) for w in weights[n + 1 :]))
    )
    fitted = CalibrationProfile(
        name=name,
        channel=channel,
        terms=terms,
        offset=offset,
        thresholds=Thresholds(0, 0),
        quality=fitted_quality,
    )
    groups = _threshold_groups(fitted, trials, banded=duration_aware)
    if transfer and len(sets) > 1:
        for k in range(len(sets)):
            others = [i for i in range(len(sets)) if i != k]
            unseen = fit_profile(
                [sets[i] for i in others],
                model_ids,
                name=name,
                channel=channel,
                normalisation=normalisation,
                top_k=top_k,
                cohort_size=cohort_size,
                duration_aware=duration_aware,
                trials=[trials[i] for i in others],
            )
            groups += _threshold_groups(unseen, [trials[k]], banded=duration_aware)
    thresholds = fit_thresholds(groups, accept_far=accept_far, reject_frr=reject_frr)
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
        "trials": "every pair of distinct recordings within one set"
        + (
            f"; test side also cut to {', '.join(f'{c:g}' for c in CROPS_S)} s of net speech"
            if duration_aware
            else ""
        ),
        "thresholds": "hold on every fitting set"
        + (" and speech band" if duration_aware else "")
        + (
            "; also on each set as scored by a profile fitted on the others"
            if transfer and len(sets) > 1
            else ""
        ),
        "cohort_size": 0 if normalisation == "none" else int(terms[0].cohort.shape[0]),  # type: ignore[union-attr]
    }
    return CalibrationProfile(
        name=name,
        channel=channel,
        terms=terms,
        offset=offset,
        thresholds=thresholds,
        quality=fitted_quality,
        parent_hash=parent_hash,
        description=description,
        fitted_on=fitted_on,
    )
