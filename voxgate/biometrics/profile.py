"""Calibration profiles (our ASP): how raw similarities become a log-likelihood ratio and a verdict.

A profile is a versioned JSON document. It names the models it scores with, how each model's cosine is
normalised (optionally adaptive s-norm against a cohort), the linear fusion/calibration that maps the
normalised scores to an LLR, and the verdict thresholds. Its content hash identifies it; a profile
refitted from another records that parent's hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voxgate.audio.types import FloatArray
from voxgate.biometrics.voiceprint import Voiceprint
from voxgate.errors import ModelMismatch, ProfileError

IntArray = npt.NDArray[np.int64]

PROFILE_FORMAT = "voxgate-calibration-profile"
PROFILE_FORMAT_VERSION = 2  # 2: the optional duration-aware `quality` term (written only when present)
DEFAULT_MODEL = "ecapa+campplus"  # the engine the plain `wideband` / `telephone` profiles use
TELEPHONE_MAX_RATE_HZ = 8000


class Verdict(StrEnum):
    VERIFIED = "verified"
    NOT_SURE = "not_sure"
    NOT_VERIFIED = "not_verified"


class Channel(StrEnum):
    WIDEBAND = "wideband"
    TELEPHONE = "telephone"


@dataclass(frozen=True)
class Thresholds:
    """Verdict thresholds on the LLR, and the operating points they were chosen for."""

    accept_llr: float  # LLR >= accept_llr -> verified
    reject_llr: float  # LLR < reject_llr -> not_verified; between -> not_sure
    accept_far: float | None = None  # target false-accept rate of `verified` on the fitting data
    reject_frr: float | None = None  # target false-reject rate of `not_verified` on the fitting data

    def verdict(self, llr: float) -> Verdict:
        if llr >= self.accept_llr:
            return Verdict.VERIFIED
        if llr < self.reject_llr:
            return Verdict.NOT_VERIFIED
        return Verdict.NOT_SURE


@dataclass(frozen=True)
class ModelTerm:
    """One model's contribution: cosine, optional adaptive s-norm, then ``weight`` in the linear fusion."""

    model_id: str
    model_version: str
    weight: float
    normalisation: str = "none"  # "none" | "asnorm"
    top_k: int = 0
    cohort: FloatArray | None = None  # (cohort, dimension), unit rows

    def cohort_stats(self, vectors: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Mean and std of each vector's ``top_k`` highest cohort scores (adaptive s-norm statistics)."""
        # vectors: (n, dimension)
        if self.cohort is None:
            raise ProfileError(f"{self.model_id}: adaptive s-norm needs a cohort")
        scores = vectors @ self.cohort.T  # (n, cohort)
        # A cohort entry identical to the vector is the recording itself, not an impostor.
        scores = np.where(scores > 0.9999, -np.inf, scores)
        k = min(self.top_k, scores.shape[1] - 1)
        top = -np.partition(-scores, k - 1, axis=1)[:, :k]  # (n, k)
        top = np.where(np.isfinite(top), top, np.nan)
        mean = np.nanmean(top, axis=1).astype(np.float32)
        std = np.maximum(np.nanstd(top, axis=1), 1e-4).astype(np.float32)
        return mean, std

    def normalise(
        self,
        cosines: FloatArray,
        enroll_stats: tuple[FloatArray, FloatArray] | None,
        test_stats: tuple[FloatArray, FloatArray] | None,
    ) -> FloatArray:
        if self.normalisation == "none":
            return cosines
        if enroll_stats is None or test_stats is None:
            raise ProfileError(f"{self.model_id}: adaptive s-norm needs cohort statistics of both sides")
        (me, se), (mt, st) = enroll_stats, test_stats
        return (0.5 * ((cosines - me) / se + (cosines - mt) / st)).astype(np.float32)


@dataclass(frozen=True)
class QualityTerm:
    """Duration-aware calibration: how much net speech stands behind a trial changes what a score means.

    ``q = log(clip(min(enrolled speech, test speech), min_s, max_s) / reference_s)``, and the LLR gains
    ``weight · q + Σ interaction_m · q · score_m``: with little speech the same cosine is weaker
    evidence, so the fit shrinks the scale (and shifts the offset) as speech gets shorter. Speech
    outside ``[min_s, max_s]`` (the range fitted on) is treated as its nearest end.
    """

    weight: float
    interaction: tuple[float, ...]  # one per model term
    min_s: float = 1.0
    max_s: float = 30.0
    reference_s: float = 10.0

    def measure(self, enrolled_s: FloatArray, test_s: FloatArray) -> FloatArray:
        shortest = np.clip(np.minimum(enrolled_s, test_s), self.min_s, self.max_s)
        return np.log(shortest / self.reference_s).astype(np.float64)


def quality_features(normalised: FloatArray, quality: FloatArray) -> FloatArray:
    """The columns a duration-aware fit weighs after the scores: ``q`` and ``q · score`` per model."""
    q = quality.astype(np.float64)[:, None]
    return np.hstack([q, q * normalised.astype(np.float64)])


def speech_of(voiceprints: Sequence[Voiceprint]) -> FloatArray:
    return np.array([v.speech_s for v in voiceprints], dtype=np.float64)


@dataclass(frozen=True)
class ScoreResult:
    cosines: dict[str, float]  # raw cosine per model
    llr: float
    verdict: Verdict


@dataclass(frozen=True)
class CalibrationProfile:
    name: str
    channel: Channel
    terms: tuple[ModelTerm, ...]
    offset: float  # llr = offset + sum(term.weight * normalised score)
    thresholds: Thresholds
    quality: QualityTerm | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    parent_hash: str | None = None
    description: str = ""
    fitted_on: Mapping[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        """The engine this profile scores with, e.g. ``ecapa`` or ``ecapa+campplus``."""
        return "+".join(term.model_id for term in self.terms)

    @property
    def model_ids(self) -> tuple[str, ...]:
        return tuple(term.model_id for term in self.terms)

    # -- scoring -------------------------------------------------------------------------------------

    def llr_from_normalised(self, normalised: FloatArray, quality: FloatArray | None = None) -> FloatArray:
        """LLRs from normalised scores (trials, terms) and, for a duration-aware profile, each trial's
        quality measure (:meth:`QualityTerm.measure`)."""
        weights = np.array([term.weight for term in self.terms], dtype=np.float64)
        llr = self.offset + normalised.astype(np.float64) @ weights
        if self.quality is not None:
            if quality is None:
                raise ProfileError(f"profile {self.name} is duration-aware: scoring needs the speech lengths")
            extra = np.array([self.quality.weight, *self.quality.interaction], dtype=np.float64)
            llr = llr + quality_features(normalised, quality) @ extra
        return llr.astype(np.float32)

    def quality_pairs(
        self, enrolled: Sequence[Voiceprint], tests: Sequence[Voiceprint], pairs: IntArray
    ) -> FloatArray | None:
        """Each pair's quality measure, or None when the profile is not duration-aware."""
        if self.quality is None:
            return None
        return self.quality.measure(speech_of(enrolled)[pairs[:, 0]], speech_of(tests)[pairs[:, 1]])

    def pair_llrs(
        self, enrolled: Sequence[Voiceprint], tests: Sequence[Voiceprint], pairs: IntArray
    ) -> FloatArray:
        """LLRs of ``enrolled[i]`` against ``tests[j]`` for each row (i, j) of pairs."""
        return self.llr_from_normalised(
            self.normalised_pairs(enrolled, tests, pairs), self.quality_pairs(enrolled, tests, pairs)
        )

    def normalised_pairs(
        self, enrolled: Sequence[Voiceprint], tests: Sequence[Voiceprint], pairs: IntArray
    ) -> FloatArray:
        """Normalised scores (pairs, terms) of ``enrolled[i]`` against ``tests[j]`` for each row (i, j) of pairs.

        Cohort statistics are computed once per voiceprint, not once per pair.
        """
        columns = []
        for term in self.terms:
            e = _matrix(enrolled, term)  # (enrolled, dimension)
            t = _matrix(tests, term)  # (tests, dimension)
            if term.cohort is not None and term.cohort.shape[1] != e.shape[1]:
                raise ModelMismatch(
                    f"{term.model_id}: the profile's cohort dimension does not match the voiceprints"
                )
            cosines = np.einsum("ij,ij->i", e[pairs[:, 0]], t[pairs[:, 1]]).astype(np.float32)
            if term.normalisation == "none":
                columns.append(cosines)
                continue
            (me, se), (mt, st) = term.cohort_stats(e), term.cohort_stats(t)
            columns.append(
                term.normalise(
                    cosines, (me[pairs[:, 0]], se[pairs[:, 0]]), (mt[pairs[:, 1]], st[pairs[:, 1]])
                )
            )
        return np.stack(columns, axis=1)

    def score(self, enrolled: Voiceprint, test: Voiceprint) -> ScoreResult:
        llr = float(self.pair_llrs([enrolled], [test], np.zeros((1, 2), dtype=np.int64))[0])
        cosines = {
            term.model_id: float(
                enrolled.embedding(term.model_id).vector @ test.embedding(term.model_id).vector
            )
            for term in self.terms
        }
        return ScoreResult(cosines, llr, self.thresholds.verdict(llr))

    # -- documents -----------------------------------------------------------------------------------

    def _body(self) -> dict[str, Any]:
        body = {
            "format": PROFILE_FORMAT,
            "format_version": 1 if self.quality is None else PROFILE_FORMAT_VERSION,
            "name": self.name,
            "channel": self.channel.value,
            "model": self.model_id,
            "description": self.description,
            "created": self.created,
            "parent_hash": self.parent_hash,
            "calibration": {"kind": "linear_fusion", "offset": self.offset},
            "models": [
                {
                    "model_id": t.model_id,
                    "model_version": t.model_version,
                    "weight": t.weight,
                    "normalisation": t.normalisation,
                    "top_k": t.top_k,
                    "cohort": None if t.cohort is None else _encode_matrix(t.cohort),
                }
                for t in self.terms
            ],
            "thresholds": {
                "accept_llr": self.thresholds.accept_llr,
                "reject_llr": self.thresholds.reject_llr,
                "accept_far": self.thresholds.accept_far,
                "reject_frr": self.thresholds.reject_frr,
            },
            "fitted_on": dict(self.fitted_on),
        }
        if self.quality is not None:  # absent otherwise: the hashes of version-1 profiles stay as they were
            q = self.quality
            body["quality"] = {
                "kind": "log_min_speech",
                "weight": q.weight,
                "interaction": list(q.interaction),
                "min_s": q.min_s,
                "max_s": q.max_s,
                "reference_s": q.reference_s,
            }
        return body

    @property
    def content_hash(self) -> str:
        canonical = json.dumps(self._body(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {**self._body(), "hash": self.content_hash}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(path.suffix + ".partial")
        partial.write_text(self.to_json())
        partial.replace(path)

    def derived(self, **changes: Any) -> CalibrationProfile:
        """A new profile from this one (new creation time, this one's hash as parent)."""
        changes.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
        return replace(self, parent_hash=self.content_hash, **changes)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> CalibrationProfile:
        """Every number is checked finite and in a sane range: a NaN or infinite threshold would turn an
        impostor into ``verified`` (or every verdict into ``score: null``)."""
        try:
            if doc.get("format") != PROFILE_FORMAT:
                raise ProfileError(f"not a calibration profile (format is {doc.get('format')!r})")
            if int(doc["format_version"]) > PROFILE_FORMAT_VERSION:
                raise ProfileError(
                    f"profile format version {doc['format_version']} is newer than this voxgate"
                )
            terms = tuple(
                ModelTerm(
                    model_id=str(m["model_id"]),
                    model_version=str(m["model_version"]),
                    weight=_number(m["weight"], "a model weight", WEIGHT_RANGE),
                    normalisation=str(m.get("normalisation", "none")),
                    top_k=int(_number(m.get("top_k", 0), "top_k", (0, 100_000))),
                    cohort=None if m.get("cohort") is None else _decode_matrix(m["cohort"]),
                )
                for m in doc["models"]
            )
            if not terms:
                raise ProfileError("a calibration profile needs at least one model")
            for term in terms:
                if term.normalisation not in ("none", "asnorm"):
                    raise ProfileError(f"unknown normalisation {term.normalisation!r}")
                if term.normalisation == "asnorm" and (term.cohort is None or term.top_k < 1):
                    raise ProfileError(f"{term.model_id}: adaptive s-norm needs a cohort and top_k >= 1")
            t = doc["thresholds"]
            thresholds = Thresholds(
                accept_llr=_number(t["accept_llr"], "the accept threshold", LLR_RANGE),
                reject_llr=_number(t["reject_llr"], "the reject threshold", LLR_RANGE),
                accept_far=None
                if t.get("accept_far") is None
                else _number(t["accept_far"], "accept_far", (0, 1)),
                reject_frr=None
                if t.get("reject_frr") is None
                else _number(t["reject_frr"], "reject_frr", (0, 1)),
            )
            if thresholds.reject_llr > thresholds.accept_llr:
                raise ProfileError("reject threshold is above the accept threshold")
            quality = _quality(doc.get("quality"), len(terms))
            profile = cls(
                name=str(doc["name"]),
                channel=Channel(doc["channel"]),
                terms=terms,
                offset=_number(doc["calibration"]["offset"], "the calibration offset", LLR_RANGE),
                thresholds=thresholds,
                quality=quality,
                created=str(doc["created"]),
                parent_hash=doc.get("parent_hash"),
                description=str(doc.get("description", "")),
                fitted_on=dict(doc.get("fitted_on") or {}),
            )
        except ProfileError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"malformed calibration profile: {exc!r}") from exc
        stated = doc.get("hash")
        if stated is not None and stated != profile.content_hash:
            raise ProfileError("calibration profile hash does not match its content (edited or corrupted)")
        return profile

    @classmethod
    def from_json(cls, text: str | bytes) -> CalibrationProfile:
        try:
            doc = json.loads(text, parse_constant=refuse_constant)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProfileError(f"calibration profile is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ProfileError("calibration profile must be a JSON object")
        return cls.from_dict(doc)

    @classmethod
    def load(cls, path: Path) -> CalibrationProfile:
        try:
            return cls.from_json(path.read_bytes())
        except OSError as exc:
            raise ProfileError(f"cannot read calibration profile {path}: {exc.strerror}") from exc


# Sane ranges: fitted weights and offsets are within ±100 on every set measured; LLR thresholds within ±20.
WEIGHT_RANGE = (-1000.0, 1000.0)
LLR_RANGE = (-1000.0, 1000.0)


def refuse_constant(name: str) -> float:
    """``json.loads`` hook: ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON, and not numbers a profile
    may hold."""
    raise ProfileError(f"calibration profile holds {name}: every number must be finite")


def _number(value: Any, what: str, bounds: tuple[float, float]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ProfileError(f"{what} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ProfileError(f"{what} is {number}: every number in a calibration profile must be finite")
    low, high = bounds
    if not low <= number <= high:
        raise ProfileError(f"{what} is {number:g}, outside the sane range {low:g} to {high:g}")
    return number


def _quality(doc: Any, n_terms: int) -> QualityTerm | None:
    if doc is None:
        return None
    if not isinstance(doc, Mapping) or doc.get("kind") != "log_min_speech":
        raise ProfileError("unknown quality term (expected kind `log_min_speech`)")
    interaction = doc["interaction"]
    if not isinstance(interaction, list) or len(interaction) != n_terms:
        raise ProfileError(f"the quality term needs one interaction weight per model ({n_terms})")
    term = QualityTerm(
        weight=_number(doc["weight"], "the quality weight", WEIGHT_RANGE),
        interaction=tuple(_number(w, "a quality interaction weight", WEIGHT_RANGE) for w in interaction),
        min_s=_number(doc["min_s"], "the quality min_s", (0.01, 3600)),
        max_s=_number(doc["max_s"], "the quality max_s", (0.01, 3600)),
        reference_s=_number(doc["reference_s"], "the quality reference_s", (0.01, 3600)),
    )
    if term.min_s > term.max_s:
        raise ProfileError("the quality term's min_s is above its max_s")
    return term


def _matrix(voiceprints: Sequence[Voiceprint], term: ModelTerm) -> FloatArray:
    """The term's embeddings of several voiceprints as rows; model or version mismatches are errors."""
    rows = []
    for voiceprint in voiceprints:
        embedding = voiceprint.embedding(term.model_id, term.model_version)
        rows.append(embedding.vector)
    if len({row.shape for row in rows}) > 1:
        raise ModelMismatch(f"{term.model_id}: voiceprints of different dimensions")
    return np.stack(rows)


def _encode_matrix(matrix: FloatArray) -> dict[str, Any]:
    data = np.ascontiguousarray(matrix, dtype="<f4")
    return {"shape": list(data.shape), "dtype": "float32", "data": base64.b64encode(data.tobytes()).decode()}


def _decode_matrix(doc: Mapping[str, Any]) -> FloatArray:
    shape = tuple(int(n) for n in doc["shape"])
    raw = base64.b64decode(doc["data"], validate=True)
    if len(shape) != 2 or len(raw) != 4 * shape[0] * shape[1]:
        raise ProfileError(f"cohort matrix data does not match its shape {shape}")
    matrix = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
    if not np.isfinite(matrix).all():
        raise ProfileError("the cohort matrix holds NaN or infinite values")
    return matrix


def shipped_profiles() -> list[str]:
    """Names of the profiles that ship inside the package: ``<channel>`` (default engine) and
    ``<channel>-<model>`` for each engine."""
    folder = resources.files("voxgate.profiles")
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def shipped_profile(name: str) -> CalibrationProfile:
    """A profile that ships inside the package, e.g. ``telephone`` or ``wideband-ecapa``."""
    available = shipped_profiles()
    if name not in available:
        raise ProfileError(f"no shipped profile {name!r}; shipped: {', '.join(available) or 'none'}")
    text = resources.files("voxgate.profiles").joinpath(f"{name}.json").read_text()
    return CalibrationProfile.from_json(text)


def channel_for_rate(sample_rate_hz: int) -> Channel:
    """Audio that reached us at telephone rates is scored with the telephone profile."""
    return Channel.TELEPHONE if sample_rate_hz <= TELEPHONE_MAX_RATE_HZ else Channel.WIDEBAND


def resolve_profile(
    spec: str, sample_rate_hz: int | None = None, model: str | None = None
) -> CalibrationProfile:
    """``auto`` (channel by the audio's native rate), a shipped profile name, or a path to a profile file.

    ``model`` picks the engine among the shipped profiles (``ecapa``, ``campplus``, ``ecapa+campplus``).
    """
    channel: str | None = None
    if spec == "auto":
        channel = (channel_for_rate(sample_rate_hz) if sample_rate_hz else Channel.WIDEBAND).value
    elif spec in tuple(c.value for c in Channel):
        channel = spec
    if channel is not None:
        return shipped_profile(channel if model is None or model == DEFAULT_MODEL else f"{channel}-{model}")
    if spec in shipped_profiles():
        return shipped_profile(spec)
    path = Path(spec)
    if not path.exists():
        raise ProfileError(
            f"calibration profile {spec!r} is neither `auto`, a shipped profile "
            f"({', '.join(shipped_profiles())}) nor an existing file"
        )
    profile = CalibrationProfile.load(path)
    if model is not None and profile.model_id != model:
        raise ProfileError(f"profile {spec} scores with {profile.model_id}, not {model}")
    return profile
