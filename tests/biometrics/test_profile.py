from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from voxgate.biometrics.profile import (
    CalibrationProfile,
    Channel,
    ModelTerm,
    QualityTerm,
    Thresholds,
    Verdict,
    resolve_profile,
    shipped_profile,
    shipped_profiles,
)
from voxgate.biometrics.voiceprint import Embedding, Voiceprint, l2_normalise
from voxgate.errors import ModelMismatch, ProfileError


def _profile(normalisation: str = "none") -> CalibrationProfile:
    rng = np.random.default_rng(0)
    cohort = rng.standard_normal((50, 8)).astype(np.float32)
    cohort /= np.linalg.norm(cohort, axis=1, keepdims=True)
    term = ModelTerm(
        "ecapa",
        "v1",
        10.0,
        normalisation,
        10 if normalisation == "asnorm" else 0,
        cohort if normalisation == "asnorm" else None,
    )
    return CalibrationProfile("test", Channel.WIDEBAND, (term,), -3.0, Thresholds(2.0, -1.0, 0.005, 0.02))


def _vp(vector: list[float], version: str = "v1") -> Voiceprint:
    return Voiceprint(
        {"ecapa": Embedding("ecapa", version, l2_normalise(np.array(vector, np.float32)))}, 20.0
    )


def test_verdict_boundaries() -> None:
    t = Thresholds(accept_llr=2.0, reject_llr=-1.0)
    assert t.verdict(2.0) is Verdict.VERIFIED
    assert t.verdict(1.999) is Verdict.NOT_SURE
    assert t.verdict(-1.0) is Verdict.NOT_SURE
    assert t.verdict(-1.001) is Verdict.NOT_VERIFIED


def test_score_is_calibrated_cosine() -> None:
    profile = _profile()
    a, b = _vp([1, 0, 0, 0, 0, 0, 0, 0]), _vp([1, 1, 0, 0, 0, 0, 0, 0])
    result = profile.score(a, b)
    cosine = 1 / np.sqrt(2)
    assert result.cosines["ecapa"] == pytest.approx(cosine, abs=1e-6)
    assert result.llr == pytest.approx(-3.0 + 10.0 * cosine, abs=1e-5)
    assert result.verdict is Verdict.VERIFIED


def test_asnorm_pairs_match_single_scores() -> None:
    profile = _profile("asnorm")
    rng = np.random.default_rng(3)
    prints = [_vp(list(rng.standard_normal(8))) for _ in range(5)]
    pairs = np.array([[0, 1], [2, 3], [4, 0], [1, 1]], dtype=np.int64)
    batch = profile.llr_from_normalised(profile.normalised_pairs(prints, prints, pairs))
    single = [profile.score(prints[i], prints[j]).llr for i, j in pairs]
    np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-5)


def test_json_round_trip_and_hash(tmp_path: Path) -> None:
    profile = _profile("asnorm")
    path = tmp_path / "p.json"
    profile.save(path)
    loaded = CalibrationProfile.load(path)
    assert loaded.content_hash == profile.content_hash
    np.testing.assert_array_equal(loaded.terms[0].cohort, profile.terms[0].cohort)
    child = loaded.derived(name="child")
    assert child.parent_hash == profile.content_hash and child.content_hash != profile.content_hash


def test_edited_profile_is_refused(tmp_path: Path) -> None:
    doc = _profile().to_dict()
    doc["thresholds"]["accept_llr"] = 50.0
    with pytest.raises(ProfileError, match="hash"):
        CalibrationProfile.from_dict(doc)
    with pytest.raises(ProfileError, match="not valid JSON"):
        CalibrationProfile.from_json(b"{nope")
    with pytest.raises(ProfileError, match="format"):
        CalibrationProfile.from_json(json.dumps({"format": "other"}))
    doc = _profile().to_dict()
    del doc["hash"], doc["models"]
    with pytest.raises(ProfileError, match="malformed"):
        CalibrationProfile.from_dict(doc)


def test_model_version_mismatch_is_an_error_not_a_score() -> None:
    with pytest.raises(ModelMismatch):
        _profile().score(_vp([1] * 8), _vp([1] * 8, version="v2"))


def test_shipped_profiles_load_and_resolve() -> None:
    names = shipped_profiles()
    assert {"wideband", "telephone"} <= set(names)
    for name in names:
        profile = shipped_profile(name)
        assert profile.thresholds.reject_llr <= profile.thresholds.accept_llr
        assert profile.fitted_on, "shipped profiles say what they were fitted on"
    assert resolve_profile("auto", 8000).channel is Channel.TELEPHONE
    assert resolve_profile("auto", 16000).channel is Channel.WIDEBAND
    assert resolve_profile("auto", 44100, model="ecapa").model_id == "ecapa"
    with pytest.raises(ProfileError, match="neither"):
        resolve_profile("no-such-profile")


def _duration_aware() -> CalibrationProfile:
    return replace(_profile(), quality=QualityTerm(weight=0.5, interaction=(4.0,)))


def test_a_duration_aware_profile_weighs_short_speech_less() -> None:
    profile = _duration_aware()
    same = [1.0, 0.2, 0, 0, 0, 0, 0, 0]
    close = [1.0, 0.0, 0, 0, 0, 0, 0, 0]

    def llr(enrolled_s: float, test_s: float) -> float:
        a, b = _vp(same), _vp(close)
        return profile.score(replace(a, speech_s=enrolled_s), replace(b, speech_s=test_s)).llr

    cosine = float(_vp(same).embedding("ecapa").vector @ _vp(close).embedding("ecapa").vector)
    q = np.log(2.0 / 10.0)
    assert llr(20.0, 2.0) == pytest.approx(-3.0 + 10.0 * cosine + 0.5 * q + 4.0 * q * cosine, abs=1e-4)
    assert llr(20.0, 2.0) < llr(20.0, 6.0) < llr(20.0, 30.0)  # a high cosine counts more with more speech
    assert llr(20.0, 30.0) == pytest.approx(llr(20.0, 500.0))  # beyond max_s: treated as max_s
    assert llr(0.2, 20.0) == pytest.approx(llr(1.0, 20.0))  # below min_s: treated as min_s
    assert llr(float("inf"), 20.0) == pytest.approx(llr(20.0, 20.0))  # a snapshot without its speech length
    with pytest.raises(ProfileError, match="speech lengths"):
        profile.llr_from_normalised(np.zeros((1, 1), np.float32))


def test_the_quality_term_round_trips_and_old_profiles_keep_their_hash() -> None:
    profile = _duration_aware()
    doc = profile.to_dict()
    assert doc["format_version"] == 2 and doc["quality"]["interaction"] == [4.0]
    assert CalibrationProfile.from_json(profile.to_json()) == profile
    fixed = _profile().to_dict()
    assert fixed["format_version"] == 1 and "quality" not in fixed  # version-1 hashes unchanged
    for shipped in shipped_profiles():  # every shipped profile reads back with the hash it states
        assert shipped_profile(shipped).content_hash
    broken = dict(doc, quality={**doc["quality"], "interaction": [1.0, 2.0]})
    broken.pop("hash")
    with pytest.raises(ProfileError, match="one interaction weight per model"):
        CalibrationProfile.from_dict(broken)
