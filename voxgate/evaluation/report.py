"""Evaluation figures of scored trials, printed and written as a small report (CSV, PNGs, Markdown)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxgate.biometrics.metrics import SummaryMetrics, summarize
from voxgate.biometrics.profile import CalibrationProfile, Verdict
from voxgate.evaluation.plots import plot_det, plot_histogram
from voxgate.evaluation.trials import TrialScore, write_scores

ACCEPTED_OR_UNSURE = (Verdict.VERIFIED.value, Verdict.NOT_SURE.value)


@dataclass(frozen=True)
class VerdictRates:
    """How often each verdict was wrong or undecided. A refused trial (too little speech, unusable file) is
    a rejection: a refused target trial counts as a false reject."""

    false_accept: float  # non-target trials answered `verified`
    false_reject: float  # target trials answered `not_verified`
    not_sure_target: float
    not_sure_nontarget: float

    @classmethod
    def of(cls, target_verdicts: Sequence[str], nontarget_verdicts: Sequence[str]) -> VerdictRates:
        def share(verdicts: Sequence[str], verdict: Verdict) -> float:
            return sum(v == verdict.value for v in verdicts) / max(1, len(verdicts))

        rejected = sum(v not in ACCEPTED_OR_UNSURE for v in target_verdicts) / max(1, len(target_verdicts))
        return cls(
            false_accept=share(nontarget_verdicts, Verdict.VERIFIED),
            false_reject=rejected,
            not_sure_target=share(target_verdicts, Verdict.NOT_SURE),
            not_sure_nontarget=share(nontarget_verdicts, Verdict.NOT_SURE),
        )


@dataclass(frozen=True)
class Evaluation:
    """Figures over every labelled trial: an unscored one (too little speech, an unusable file) counts
    as a rejection with LLR 0, never left out."""

    metrics: SummaryMetrics
    rates: VerdictRates
    unscored: int  # trials with too little speech or an unusable file, counted in the figures


def _split(scores: Sequence[TrialScore]) -> tuple[list[TrialScore], list[TrialScore]]:
    labelled = [s for s in scores if s.trial.target is not None]
    return [s for s in labelled if s.trial.target], [s for s in labelled if not s.trial.target]


def _llrs(scores: Sequence[TrialScore]) -> npt.NDArray[np.float32]:
    return np.array([0.0 if s.llr is None else s.llr for s in scores], dtype=np.float32)


def evaluate(scores: Sequence[TrialScore]) -> Evaluation:
    targets, nontargets = _split(scores)
    rates = VerdictRates.of([s.verdict for s in targets], [s.verdict for s in nontargets])
    unscored = sum(s.llr is None for s in (*targets, *nontargets))
    return Evaluation(summarize(_llrs(targets), _llrs(nontargets)), rates, unscored)


def summary_lines(evaluation: Evaluation, profiles: Sequence[CalibrationProfile] = ()) -> list[str]:
    m, r = evaluation.metrics, evaluation.rates
    lines = [
        f"trials: {m.n_target} target, {m.n_nontarget} non-target; {evaluation.unscored} of them refused "
        "(too little speech or an unusable file), counted as rejections with LLR 0",
        f"EER: {100 * m.eer:.2f} %",
        f"minDCF (P_target=0.01): {m.min_dcf:.4f}",
        f"Cllr: {m.cllr:.4f} bits   minCllr: {m.min_cllr:.4f} bits",
        f"verified: false accepts {100 * r.false_accept:.2f} % of non-target trials",
        f"not_verified: false rejects {100 * r.false_reject:.2f} % of target trials",
        f"not_sure: {100 * r.not_sure_target:.2f} % of target, {100 * r.not_sure_nontarget:.2f} % of non-target trials",
    ]
    for p in profiles:
        t = p.thresholds
        lines.append(
            f"profile {p.name} ({p.channel.value}, {p.model_id}): verified if LLR >= {t.accept_llr:g}, "
            f"not_verified if LLR < {t.reject_llr:g}"
        )
    return lines


def write_report(
    out_dir: Path,
    title: str,
    scores: Sequence[TrialScore],
    evaluation: Evaluation,
    profiles: Sequence[CalibrationProfile] = (),
) -> Path:
    """scores.csv, det.png, histogram.png and report.md in ``out_dir``; returns the Markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    write_scores(scores, buffer, with_target=True)
    (out_dir / "scores.csv").write_text(buffer.getvalue())
    targets, nontargets = _split(scores)
    tar, non = _llrs(targets), _llrs(nontargets)
    plot_det({title: (tar, non)}, out_dir / "det.png", title=f"DET: {title}")
    thresholds = None
    if len(profiles) == 1:
        t = profiles[0].thresholds
        thresholds = {"verified ≥": t.accept_llr, "not_verified <": t.reject_llr}
    plot_histogram(tar, non, out_dir / "histogram.png", title=f"LLR: {title}", thresholds=thresholds)
    lines = [f"# {title}", ""]
    for p in profiles:
        lines += [
            f"Calibration profile `{p.name}` ({p.channel.value}, model {p.model_id}), hash `{p.content_hash[:16]}`.",
            "",
        ]
    lines += [f"- {line}" for line in summary_lines(evaluation, profiles)]
    lines += ["", "![DET curve](det.png)", "", "![LLR histogram](histogram.png)", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
