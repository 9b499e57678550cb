"""Evaluation figures of scored trials, printed and written as a small report (CSV, PNGs, Markdown)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxgate.biometrics.metrics import SummaryMetrics, summarize
from voxgate.biometrics.profile import CalibrationProfile, Verdict
from voxgate.evaluation.plots import plot_det, plot_histogram
from voxgate.evaluation.trials import TrialScore, write_scores


@dataclass(frozen=True)
class VerdictRates:
    """How often each verdict was wrong or undecided."""

    false_accept: float  # non-target trials answered `verified`
    false_reject: float  # target trials answered `not_verified`
    not_sure_target: float
    not_sure_nontarget: float

    @classmethod
    def of(cls, target_verdicts: Sequence[str], nontarget_verdicts: Sequence[str]) -> VerdictRates:
        def share(verdicts: Sequence[str], verdict: Verdict) -> float:
            return sum(v == verdict.value for v in verdicts) / max(1, len(verdicts))

        return cls(
            false_accept=share(nontarget_verdicts, Verdict.VERIFIED),
            false_reject=share(target_verdicts, Verdict.NOT_VERIFIED),
            not_sure_target=share(target_verdicts, Verdict.NOT_SURE),
            not_sure_nontarget=share(nontarget_verdicts, Verdict.NOT_SURE),
        )


@dataclass(frozen=True)
class Evaluation:
    metrics: SummaryMetrics
    rates: VerdictRates
    unscored: int  # trials with too little speech or an unusable file


def _split(scores: Sequence[TrialScore]) -> tuple[list[TrialScore], list[TrialScore]]:
    scored = [s for s in scores if s.llr is not None and s.trial.target is not None]
    return [s for s in scored if s.trial.target], [s for s in scored if not s.trial.target]


def evaluate(scores: Sequence[TrialScore]) -> Evaluation:
    targets, nontargets = _split(scores)
    tar = np.array([s.llr for s in targets], dtype=np.float32)
    non = np.array([s.llr for s in nontargets], dtype=np.float32)
    rates = VerdictRates.of([s.verdict for s in targets], [s.verdict for s in nontargets])
    return Evaluation(summarize(tar, non), rates, len(scores) - len(targets) - len(nontargets))


def summary_lines(evaluation: Evaluation, profiles: Sequence[CalibrationProfile] = ()) -> list[str]:
    m, r = evaluation.metrics, evaluation.rates
    lines = [
        f"trials: {m.n_target} target, {m.n_nontarget} non-target, {evaluation.unscored} unscored",
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
    tar = np.array([s.llr for s in targets], dtype=np.float32)
    non = np.array([s.llr for s in nontargets], dtype=np.float32)
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
