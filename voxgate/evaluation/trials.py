"""Trial lists: reading ``enroll,test[,target]`` CSVs, scoring them, writing the scores CSV."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from voxgate.biometrics.profile import CalibrationProfile
from voxgate.biometrics.voiceprint import Voiceprint, combine
from voxgate.errors import VoxgateError
from voxgate.evaluation.embedding import FileResult

ENROLL_SEPARATOR = "|"
INSUFFICIENT = "insufficient_speech"
UNUSABLE = "error"


class TrialsError(VoxgateError):
    """A trials file that cannot be read as specified."""


@dataclass(frozen=True)
class Trial:
    enroll: tuple[str, ...]  # paths relative to the root; several = one voiceprint from all of them
    test: str
    target: bool | None = None


@dataclass(frozen=True)
class TrialScore:
    trial: Trial
    score: float | None  # the profile's fused, normalised score before calibration (cosine for one model)
    llr: float | None
    verdict: str  # verified | not_sure | not_verified | insufficient_speech | error
    detail: str = ""


def read_trials(path: Path, *, need_target: bool = False) -> list[Trial]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or ())
            needed = {"enroll", "test"} | ({"target"} if need_target else set())
            if missing := needed - columns:
                raise TrialsError(
                    f"{path}: missing column(s) {', '.join(sorted(missing))} (has: {', '.join(sorted(columns)) or 'none'})"
                )
            trials = []
            for line, row in enumerate(reader, start=2):
                enroll = tuple(p.strip() for p in (row["enroll"] or "").split(ENROLL_SEPARATOR) if p.strip())
                test = (row["test"] or "").strip()
                if not enroll or not test:
                    raise TrialsError(f"{path}:{line}: empty enroll or test path")
                target = None
                if "target" in row and row["target"] not in (None, ""):
                    value = row["target"].strip().lower()
                    if value not in ("0", "1", "true", "false"):
                        raise TrialsError(f"{path}:{line}: target must be 1 or 0, not {row['target']!r}")
                    target = value in ("1", "true")
                elif need_target:
                    raise TrialsError(f"{path}:{line}: target is empty")
                trials.append(Trial(enroll, test, target))
    except OSError as exc:
        raise TrialsError(f"cannot read trials file {path}: {exc.strerror}") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise TrialsError(f"{path}: not a readable CSV file: {exc}") from exc
    if not trials:
        raise TrialsError(f"{path}: no trials")
    return trials


def trial_paths(trials: Iterable[Trial], root: Path) -> list[Path]:
    """Every distinct file the trials name, in first-seen order."""
    seen: dict[Path, None] = {}
    for trial in trials:
        for name in (*trial.enroll, trial.test):
            seen.setdefault(root / name, None)
    return list(seen)


def score_trials(
    trials: Sequence[Trial],
    results: dict[Path, FileResult],
    root: Path,
    profile_for: Callable[[int], CalibrationProfile],
) -> list[TrialScore]:
    """Score each trial with the profile chosen for its test file's native sample rate."""
    enrolled: dict[tuple[str, ...], Voiceprint | str] = {}
    for trial in trials:
        if trial.enroll not in enrolled:
            enrolled[trial.enroll] = _enrollment(trial.enroll, results, root)
    out: list[TrialScore | None] = [None] * len(trials)
    groups: dict[int, list[int]] = {}  # profile by test rate -> trial indices that can be scored
    for i, trial in enumerate(trials):
        test = results[root / trial.test]
        enroll = enrolled[trial.enroll]
        problem = enroll if isinstance(enroll, str) else _problem(test)
        if problem:
            verdict = INSUFFICIENT if "InsufficientSpeech" in problem else UNUSABLE
            out[i] = TrialScore(trial, None, None, verdict, problem)
        else:
            groups.setdefault(test.source_rate_hz, []).append(i)
    for rate, indices in groups.items():
        profile = profile_for(rate)
        enroll_prints = [enrolled[trials[i].enroll] for i in indices]
        test_prints = [results[root / trials[i].test].voiceprints[None] for i in indices]
        pairs = np.stack([np.arange(len(indices)), np.arange(len(indices))], axis=1)
        llrs = profile.pair_llrs(enroll_prints, test_prints, pairs)  # type: ignore[arg-type]
        fused = llrs - profile.offset
        for k, i in enumerate(indices):
            verdict = profile.thresholds.verdict(float(llrs[k])).value
            out[i] = TrialScore(trials[i], float(fused[k]), float(llrs[k]), verdict)
    return [score for score in out if score is not None]


def _problem(result: FileResult) -> str:
    return f"{result.path.name}: {result.error}" if result.error else ""


def _enrollment(names: tuple[str, ...], results: dict[Path, FileResult], root: Path) -> Voiceprint | str:
    prints = []
    for name in names:
        result = results[root / name]
        if result.error:
            return _problem(result)
        prints.append(result.voiceprints[None])
    return combine(prints)


def write_scores(scores: Sequence[TrialScore], handle: TextIO, *, with_target: bool = False) -> None:
    writer = csv.writer(handle, lineterminator="\n")
    header = ["enroll", "test", "score", "llr", "verdict"] + (["target"] if with_target else [])
    writer.writerow(header)
    for s in scores:
        row = [
            ENROLL_SEPARATOR.join(s.trial.enroll),
            s.trial.test,
            "" if s.score is None else f"{s.score:.6f}",
            "" if s.llr is None else f"{s.llr:.6f}",
            s.verdict,
        ]
        if with_target:
            row.append("" if s.trial.target is None else str(int(s.trial.target)))
        writer.writerow(row)
