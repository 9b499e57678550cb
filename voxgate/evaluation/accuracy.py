"""The accuracy report (``make accuracy``): regenerates docs/accuracy.md and the shipped profiles.

For every set in the speech folder (trials within one set only), on the wideband channel (16 kHz sets) and
the telephone channel (native for the 8 kHz sets, simulated 8 kHz G.711 µ-law for the others), it scores
every pair of recordings with each candidate engine and reports EER, minDCF, Cllr and the verdict error
rates. Every trial counts: a recording refused for too little speech makes each of its trials a rejection
with LLR 0. Figures are *held out*: the profile scoring a set was fitted on the channel's other sets only,
so no set is calibrated on itself. Duration-aware engines are fitted and reported per test-speech band
(the test side also cut to 2, 4.5, 8 and 20 s of net speech). The shipped profiles are then fitted on all
sets; the passphrase profiles on three recordings enrolled together and one tested.

    python -m voxgate.evaluation.accuracy --jobs 2 --out docs/accuracy.md [--write-profiles]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import pickle
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxgate.audio.types import AudioLimits, Float64Array
from voxgate.audio.vad import VAD_SHA256
from voxgate.biometrics.metrics import SummaryMetrics, eer, summarize
from voxgate.biometrics.models import read_card
from voxgate.biometrics.profile import CalibrationProfile, Channel, shipped_profile
from voxgate.biometrics.voiceprint import combine
from voxgate.errors import ProfileError
from voxgate.evaluation.datasets import Dataset, read_dataset
from voxgate.evaluation.embedding import EmbedJob, FileResult, embed_files
from voxgate.evaluation.fitting import (
    BANDS_S,
    CALL_SIZES,
    CROPS_S,
    EmbeddedSet,
    ScoredTrials,
    Trials,
    band_label,
    fit_profile,
)
from voxgate.evaluation.report import VerdictRates
from voxgate.evaluation.sections import carry_notes, keep_foreign, notes_block, table_row
from voxgate.settings import Settings

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SPEECH = REPO.parent / "shared" / "data" / "speech"
BoolArray = npt.NDArray[np.bool_]
CACHE_VERSION = "2"  # bump when what is embedded per file changes (cut, crops, VAD)
PASSPHRASE_ENROLL = 3  # recordings enrolled together in the text-dependent case
# `verified` at ≤ 0.1 % false accepts on every fitting set and band, each set also scored by a profile
# fitted on the others: measured held out, 0.3 % let 0.9-1.3 % of the keyword-clip impostors through
# on the telephone channel (same small vocabulary as the targets: harder than any fitting set).
ACCEPT_FAR = 0.001


@dataclass(frozen=True)
class System:
    """A candidate engine: which models, whether duration-aware. ``key`` names its shipped profile."""

    key: str
    label: str
    model_ids: tuple[str, ...]
    duration_aware: bool


SYSTEMS = (
    System("ecapa-raw", "ECAPA cosine", ("ecapa",), False),
    System("fused-raw", "ECAPA+CAM++ fused", ("ecapa", "campplus"), False),
    System("ecapa", "ECAPA, duration-aware", ("ecapa",), True),
    System("campplus", "CAM++, duration-aware", ("campplus",), True),
    System("fused", "ECAPA+CAM++ fused, duration-aware", ("ecapa", "campplus"), True),
)
DEFAULT = "fused"
# The shipped profiles: `<channel>` is the default engine; `<channel>-<model>` for --model.
SHIPPED = {"": "fused", "-ecapa": "ecapa", "-campplus": "campplus"}
# Engines also scored as a customer would after `voxgate calibrate` on their own recordings.
IN_DOMAIN = ("ecapa-raw", "fused")


@dataclass(frozen=True)
class Row:
    set_name: str
    system: System
    full: ScoredTrials  # every pair of whole recordings
    bands: dict[tuple[float, float], ScoredTrials]  # whole recordings and crops, by test speech
    calls: dict[int, ScoredTrials] = field(default_factory=dict)  # short clips joined, by clips per call

    @property
    def metrics(self) -> SummaryMetrics:
        return _metrics(self.full)

    @property
    def rates(self) -> VerdictRates:
        return _rates(self.full)


def _metrics(trials: ScoredTrials) -> SummaryMetrics:
    return summarize(trials.llr[trials.is_target], trials.llr[~trials.is_target])


def _rates(trials: ScoredTrials) -> VerdictRates:
    return VerdictRates.of(
        [v for v, t in zip(trials.verdicts, trials.is_target, strict=True) if t],
        [v for v, t in zip(trials.verdicts, trials.is_target, strict=True) if not t],
    )


def embed_set(
    dataset: Dataset, telephone: bool, settings: Settings, cache: Path, jobs: int, *, int8: bool = False
) -> tuple[FileResult, ...]:
    """Every file of ``dataset`` embedded once (cached per model files); ``int8``: the quantised models."""
    cards = [read_card(settings.model_dir, m) for m in ("ecapa", "campplus")]
    key_parts = [
        dataset.name,
        str(telephone),
        VAD_SHA256,
        CACHE_VERSION,
        str(settings.min_score_speech_s),
    ] + [card.int8_sha256 if int8 else card.onnx_sha256 for card in cards]
    key = hashlib.sha256("|".join(key_parts).encode()).hexdigest()[:16]
    path = cache / f"{dataset.name}-{'tel' if telephone else 'wb'}{'-int8' if int8 else ''}-{key}.pkl"
    if path.exists():
        with path.open("rb") as handle:
            cached: dict[Path, FileResult] = pickle.load(handle)  # our own cache file
    else:
        job = EmbedJob(
            model_dir=settings.model_dir,
            model_ids=("ecapa", "campplus"),
            limits=AudioLimits.from_settings(settings),
            min_speech_s=settings.min_score_speech_s,
            telephone=telephone,
            lengths_s=(None, *CROPS_S),
            int8=int8,
            whole_clip=not int8,
        )
        cached = embed_files(
            list(dataset.files),
            job,
            jobs=jobs,
            desc=f"{dataset.name} {'telephone' if telephone else 'wideband'}{' int8' if int8 else ''}",
        )
        cache.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            pickle.dump(cached, handle)
    return tuple(cached[p] for p in dataset.files)


def _band_split(trials: ScoredTrials) -> dict[tuple[float, float], ScoredTrials]:
    return {
        band: trials.select((trials.test_s >= band[0]) & (trials.test_s < band[1]))
        for band in BANDS_S
        if ((trials.test_s >= band[0]) & (trials.test_s < band[1])).any()
    }


def _row(set_name: str, system: System, parts: Sequence[tuple[CalibrationProfile, EmbeddedSet]]) -> Row:
    """Figures of one set, pooling the trials of several (profile, part of the set) pairs."""
    full = ScoredTrials.pooled([e.trials().scored(profile) for profile, e in parts])
    cropped = ScoredTrials.pooled([e.trials(CROPS_S).scored(profile) for profile, e in parts])
    calls = {
        size: ScoredTrials.pooled([e.call_trials(size).scored(profile) for profile, e in parts])
        for size in CALL_SIZES
        if all(e.short for _, e in parts)
    }
    return Row(set_name, system, full, _band_split(cropped), calls)


def evaluate_set(profile: CalibrationProfile, embedded: EmbeddedSet, system: System) -> Row:
    """The figures of one set scored with one profile."""
    return _row(embedded.name, system, [(profile, embedded)])


def _speaker_fold(embedded: EmbeddedSet, fold: int) -> tuple[EmbeddedSet, EmbeddedSet]:
    """(the set without fold ``fold``'s speakers, the set with only them): a speaker-disjoint split in two."""
    speakers = sorted(set(embedded.dataset.speakers))
    held = set(speakers[fold::2])

    def part(keep: bool) -> EmbeddedSet:
        index = [i for i, s in enumerate(embedded.dataset.speakers) if (s in held) == keep]
        dataset = Dataset(
            embedded.name,
            tuple(embedded.dataset.files[i] for i in index),
            tuple(embedded.dataset.speakers[i] for i in index),
        )
        return EmbeddedSet(dataset, embedded.channel, tuple(embedded.results[i] for i in index))

    return part(False), part(True)


def _fit(
    sets: Sequence[EmbeddedSet],
    system: System,
    channel: Channel,
    name: str,
    trials: Sequence[Trials] | None = None,
) -> CalibrationProfile:
    return fit_profile(
        sets,
        system.model_ids,
        name=name,
        channel=channel,
        normalisation="none",
        duration_aware=system.duration_aware,
        trials=trials,
        accept_far=ACCEPT_FAR,
        transfer=True,
        description=f"{system.label}, {channel.value} channel, fitted by `make accuracy` on the development sets",
    )


def passphrase_trials(embedded: EmbeddedSet, enroll: int = PASSPHRASE_ENROLL) -> Trials:
    """The text-dependent case: ``enroll`` usable recordings of a speaker enrolled together (consecutive
    groups in manifest order), each tested against every other recording of the set; a recording that
    was refused is a refused test (LLR 0)."""
    speakers = np.array(embedded.dataset.speakers)
    usable = embedded.usable()
    groups: list[list[int]] = []
    for speaker in dict.fromkeys(embedded.dataset.speakers):
        own = [int(i) for i in usable if speakers[i] == speaker]
        groups += [own[k : k + enroll] for k in range(0, len(own) - enroll + 1, enroll)]
    enrolled = [combine(embedded.voiceprints(np.array(g, dtype=np.int64))) for g in groups]
    tests = embedded.voiceprints(usable)
    position = {int(f): k for k, f in enumerate(usable)}
    refused_files = [i for i in range(len(embedded.results)) if i not in position]
    pairs, target, refused_target = [], [], []
    for g, group in enumerate(groups):
        speaker = speakers[group[0]]
        pairs += [(g, position[int(f)]) for f in usable if int(f) not in group]
        target += [speakers[f] == speaker for f in usable if int(f) not in group]
        refused_target += [speakers[f] == speaker for f in refused_files]
    return Trials(
        embedded.name,
        enrolled,
        tests,
        np.array(pairs, dtype=np.int64).reshape(-1, 2),
        np.array(target, dtype=bool),
        np.array(refused_target, dtype=bool),
        np.array([embedded.results[f].speech_s for f in refused_files] * len(groups), dtype=np.float64),
    )


@dataclass(frozen=True)
class NaivePairs:
    """Every pair of the recordings with a whole-clip voiceprint, scored by the naive fusion."""

    files: list[int]  # indices into the set's results
    speakers: npt.NDArray[np.str_]  # of those files
    i: npt.NDArray[np.int64]  # the pairs, as positions in ``files``
    j: npt.NDArray[np.int64]
    scores: Float64Array  # the mean of the raw ECAPA and CAM++ cosines

    @classmethod
    def of(cls, embedded: EmbeddedSet) -> NaivePairs:
        files = [k for k, r in enumerate(embedded.results) if r.whole is not None]
        wholes = [r.whole for r in embedded.results if r.whole is not None]
        speakers = np.array([embedded.dataset.speakers[k] for k in files])
        i, j = np.triu_indices(len(files), k=1)
        vectors = {m: np.stack([v.embedding(m).vector for v in wholes]) for m in ("ecapa", "campplus")}
        scores = sum(np.einsum("ij,ij->i", v[i], v[j]) for v in vectors.values()) / len(vectors)
        return cls(files, speakers, i, j, np.asarray(scores, dtype=np.float64))

    @property
    def is_target(self) -> BoolArray:
        return np.asarray(self.speakers[self.i] == self.speakers[self.j], dtype=bool)


def naive_eer(embedded: EmbeddedSet) -> float:
    """EER of the mean of the raw ECAPA and CAM++ cosines on the whole recordings (no VAD), every pair."""
    naive = NaivePairs.of(embedded)
    target = naive.is_target
    return eer(naive.scores[target], naive.scores[~target])


def _step_eer(scores: Float64Array, is_target: BoolArray, weights: Float64Array) -> float:
    """Equal error rate of weighted trials, on the step curve (the bootstrap's: fast, not ROCCH)."""
    order = np.argsort(scores, kind="stable")
    w, target = weights[order], is_target[order]
    miss = np.cumsum(w * target) / max(float((w * target).sum()), 1e-12)
    false_accept = 1.0 - np.cumsum(w * ~target) / max(float((w * ~target).sum()), 1e-12)
    ends = np.flatnonzero(np.diff(scores[order], append=np.inf) > 0)  # thresholds between distinct scores
    miss, false_accept = miss[ends], false_accept[ends]
    k = int(np.argmin(np.abs(miss - false_accept)))
    return float((miss[k] + false_accept[k]) / 2)


def naive_gap(
    profile: CalibrationProfile, embedded: EmbeddedSet, rounds: int = 200, seed: int = 0
) -> tuple[float, float]:
    """95 % interval of (the profile's EER − the naive fusion's) on every pair of whole recordings,
    resampling the set's speakers with replacement: a set of 6 or 30 speakers makes the EER of either
    system uncertain by about a point, and a difference smaller than that is not a finding.

    A refused recording's trials score LLR 0, as everywhere in this report."""
    naive = NaivePairs.of(embedded)
    files, i, j = naive.files, naive.i, naive.j
    index = {name: n for n, name in enumerate(sorted(set(naive.speakers)))}
    speaker_id = np.array([index[name] for name in naive.speakers])
    usable = [n for n, k in enumerate(files) if None in embedded.results[k].voiceprints]
    position = np.full(len(files), -1)
    position[usable] = np.arange(len(usable))
    scorable = (position[i] >= 0) & (position[j] >= 0)
    voiceprints = [embedded.results[files[n]].voiceprints[None] for n in usable]
    llr = np.zeros(len(i))
    pairs = np.stack([position[i[scorable]], position[j[scorable]]], axis=1).astype(np.int64)
    llr[scorable] = profile.pair_llrs(voiceprints, voiceprints, pairs)
    target = naive.is_target
    rng = np.random.default_rng(seed)
    n_speakers = len(index)
    gaps = []
    for _ in range(rounds):
        count = np.bincount(rng.integers(0, n_speakers, n_speakers), minlength=n_speakers).astype(float)
        weights = count[speaker_id[i]] * count[speaker_id[j]]
        gaps.append(_step_eer(llr, target, weights) - _step_eer(naive.scores, target, weights))
    low, high = np.percentile(gaps, [2.5, 97.5])
    return float(low), float(high)


@dataclass
class Results:
    by_channel: dict[Channel, list[EmbeddedSet]]
    held_out: dict[Channel, list[Row]]
    in_domain: dict[Channel, list[Row]]
    fitted_all: dict[Channel, list[Row]]
    passphrase: dict[Channel, list[Row]]  # text-dependent trials: default (held out), passphrase (in-domain)
    shipped: dict[str, CalibrationProfile]
    naive: dict[tuple[Channel, str], float]
    naive_gap: dict[tuple[Channel, str], tuple[float, float]]  # default − naive EER, 95 % interval


def embed_sets(
    speech: Path, settings: Settings, cache: Path, jobs: int, *, int8: bool = False
) -> dict[Channel, list[EmbeddedSet]]:
    """Every set of ``speech`` embedded on the channels it has: 16 kHz sets on both (the telephone one
    simulated), 8 kHz sets on the telephone channel only."""
    sets = [
        read_dataset(folder)
        for folder in sorted(p for p in speech.iterdir() if (p / "manifest.csv").exists())
    ]
    by_channel: dict[Channel, list[EmbeddedSet]] = {Channel.WIDEBAND: [], Channel.TELEPHONE: []}
    for dataset in sets:
        results = embed_set(dataset, False, settings, cache, jobs, int8=int8)
        rates = [r.source_rate_hz for r in results if not r.error]
        if min(rates) >= 16000:
            by_channel[Channel.WIDEBAND].append(EmbeddedSet(dataset, Channel.WIDEBAND, results))
            results = embed_set(dataset, True, settings, cache, jobs, int8=int8)
        by_channel[Channel.TELEPHONE].append(EmbeddedSet(dataset, Channel.TELEPHONE, results))
    return by_channel


def _passphrase_rows(
    by_channel: dict[Channel, list[EmbeddedSet]], channel: Channel, default: System
) -> list[Row]:
    """Text-dependent trials of the short sets: the default engine held out, and the passphrase profile
    fitted speaker-disjoint (one half of the speakers' passphrase trials scores the other half)."""
    rows = []
    passphrase = System("passphrase", "passphrase profile (in-domain)", default.model_ids, True)
    for target in (s for s in by_channel[channel] if s.short):
        others = fitting_sets(by_channel, channel, target)
        profile = _fit(others, default, channel, f"held-out-{target.name}")
        trials = passphrase_trials(target).scored(profile)
        rows.append(Row(target.name, default, trials, _band_split(trials)))
        parts = []
        for fit_part, test_part in (_speaker_fold(target, k) for k in (0, 1)):
            fitted = _fit([fit_part], passphrase, channel, "passphrase", [passphrase_trials(fit_part)])
            parts.append(passphrase_trials(test_part).scored(fitted))
        pooled = ScoredTrials.pooled(parts)
        rows.append(Row(target.name, passphrase, pooled, _band_split(pooled)))
    return rows


def fitting_sets(
    by_channel: dict[Channel, list[EmbeddedSet]], channel: Channel, target: EmbeddedSet | None = None
) -> list[EmbeddedSet]:
    """The sets a profile of ``channel`` is fitted on (without ``target``). The wideband profile also
    learns from the 8 kHz sets as the engine hears them (the same voiceprints: audio at 16 kHz from a
    narrowband line is common, and only they hold more short, same-vocabulary clips)."""
    sets = list(by_channel[channel])
    if channel is Channel.WIDEBAND:
        sets += [s for s in by_channel[Channel.TELEPHONE] if _native_8k(s)]
    return [s for s in sets if s is not target]


def _native_8k(embedded: EmbeddedSet) -> bool:
    return max(r.source_rate_hz for r in embedded.results if not r.error) <= 8000


def run(speech: Path, settings: Settings, cache: Path, jobs: int) -> Results:
    by_channel = embed_sets(speech, settings, cache, jobs)
    out = Results(by_channel, {}, {}, {}, {}, {}, {}, {})
    for channel, embedded in by_channel.items():
        out.held_out[channel], out.fitted_all[channel], out.in_domain[channel] = [], [], []
        for target in embedded:
            out.naive[(channel, target.name)] = naive_eer(target)
        for system in SYSTEMS:
            started = time.monotonic()
            for target in embedded:
                others = fitting_sets(by_channel, channel, target)
                profile = _fit(others, system, channel, f"held-out-{target.name}")
                out.held_out[channel].append(evaluate_set(profile, target, system))
                if system.key == DEFAULT:
                    out.naive_gap[(channel, target.name)] = naive_gap(profile, target)
            full = _fit(fitting_sets(by_channel, channel), system, channel, channel.value)
            out.fitted_all[channel].extend(evaluate_set(full, target, system) for target in embedded)
            for suffix, key in SHIPPED.items():
                if key == system.key:
                    out.shipped[f"{channel.value}{suffix}"] = replace(full, name=f"{channel.value}{suffix}")
            if system.key in IN_DOMAIN:
                for target in embedded:
                    folds = [_speaker_fold(target, k) for k in (0, 1)]
                    parts = [
                        (_fit([fit_part], system, channel, f"in-domain-{target.name}"), test_part)
                        for fit_part, test_part in folds
                    ]
                    out.in_domain[channel].append(_row(target.name, system, parts))
            print(f"{channel.value} {system.label}: {time.monotonic() - started:.0f} s", file=sys.stderr)
        default = next(s for s in SYSTEMS if s.key == DEFAULT)
        out.passphrase[channel] = _passphrase_rows(by_channel, channel, default)
        short = [s for s in fitting_sets(by_channel, channel) if s.short]
        if short:
            passphrase = System("passphrase", "passphrase", default.model_ids, True)
            profile = _fit(
                short,
                passphrase,
                channel,
                f"{channel.value}-passphrase",
                [passphrase_trials(s) for s in short],
            )
            out.shipped[f"{channel.value}-passphrase"] = replace(
                profile,
                description=f"text-dependent: {PASSPHRASE_ENROLL} short recordings enrolled, one tested; "
                f"{channel.value} channel, fitted by `make accuracy`",
            )
    return out


SUMMARY = "## Summary: the shipped default against raw ECAPA cosine (held out)"


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _cells(trials: ScoredTrials) -> list[str]:
    m, v = _metrics(trials), _rates(trials)
    return [
        f"{m.n_target} / {m.n_nontarget}",
        pct(trials.refused / max(1, len(trials.verdicts))),
        pct(m.eer),
        f"{m.min_dcf:.3f}",
        f"{m.cllr:.3f}",
        f"{m.min_cllr:.3f}",
        pct(v.false_accept),
        pct(v.false_reject),
        f"{pct(v.not_sure_target)} / {pct(v.not_sure_nontarget)}",
    ]


CELLS_HEAD = "target / non-target | refused % | EER % | minDCF | Cllr | minCllr | verified FA % | not_verified FR % | not_sure (tgt / non) % |"


def _table(rows: list[Row]) -> list[str]:
    head = "| set | engine | " + CELLS_HEAD
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    lines += [table_row([r.set_name, r.system.label, *_cells(r.full)]) for r in rows]
    return lines


def _band_table(rows: list[Row]) -> list[str]:
    head = "| set | engine | test speech | " + CELLS_HEAD
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        for band, trials in r.bands.items():
            lines.append(table_row([r.set_name, r.system.label, band_label(band), *_cells(trials)]))
        for size, trials in r.calls.items():
            speech = f"calls of {size} clips ({np.median(trials.test_s):.1f} s)"
            lines.append(table_row([r.set_name, r.system.label, speech, *_cells(trials)]))
    return lines


def render(results: Results) -> str:
    by_channel = results.by_channel
    out = [
        "# Accuracy",
        "",
        "Regenerate with `make accuracy` (about 30 minutes on 2 cores; embeddings are cached in `.cache/accuracy/`).",
        "Source: `voxgate/evaluation/accuracy.py`. Data: `../shared/data/speech` (real recorded speech; see its README).",
        "The notes under the summary and live-stream tables are written by people from the figures; regenerating",
        "keeps them as they are, so check them when the figures change.",
        "",
        "How to read this:",
        "- **Trials**: every pair of distinct recordings *within one set*, one recording enrolled, the other tested.",
        "  **Every trial counts**: a recording with less net speech than the minimum (`VOXGATE_MIN_SCORE_SPEECH_S`,",
        f"  {Settings().min_score_speech_s:g} s by default) is refused, and each of its trials is a rejection with LLR 0",
        "  (`refused %`; a refused same-speaker trial counts as a false reject).",
        "- **Channels**: *wideband* is the 16 kHz sets as recorded. *telephone* is the 8 kHz sets as recorded and the",
        "  16 kHz sets through a **simulated channel** (resampled to 8 kHz, G.711 µ-law round trip). VAD runs at 8 kHz",
        "  on telephone audio.",
        "- **Held out**: the profile scoring a set (calibration, fusion weights, verdict thresholds) was fitted on the",
        "  *other* sets only. This is what a customer meets on audio we never saw. The wideband profiles also learn",
        "  from the two 8 kHz sets as the engine hears them (the same voiceprints): with LibriSpeech alone, the",
        "  wideband thresholds let 7.7 % of the keyword-clip impostors through, held out.",
        "- **Duration-aware** engines weigh a score by the net speech behind it (the shorter side's, `log` of it,",
        "  with an interaction per model); their thresholds hold in every test-speech band with enough trials.",
        "- **Speech bands**: the test side cut to its first 2, 4.5, 8 and 20 s of net speech (enrollment side whole)",
        "  pooled with the whole recordings, each trial in the band of its test side's net speech.",
        "- **EER, minDCF** (P_target = 0.01, normalised) measure discrimination; **Cllr** (bits) measures the",
        "  calibrated LLRs, **minCllr** what perfect calibration would give. Verdict rates: `verified` given to",
        "  non-target trials (FA), `not_verified` (or refused) given to target trials (FR), `not_sure` for each.",
        "- **Naive fusion**: the mean of the raw ECAPA and CAM++ cosines of the *whole* recordings (no VAD), the",
        "  baseline a short-speech engine has to beat. **default − naive, 95 %**: the interval of the EER",
        "  difference when the set's speakers are resampled with replacement (200 rounds, step-curve EER): an",
        "  interval that holds 0 is no evidence either way.",
        "",
        "Verdict thresholds are fitted for two operating points on *every* fitting set (and, duration-aware, every",
        "speech band), each set scored both by the profile and by one fitted on the other sets: `verified` at",
        "≤ 0.1 % false accepts and `not_verified` at ≤ 2 % false rejects (the strictest decides). Between them:",
        "`not_sure`.",
        "",
    ]
    default = next(x for x in SYSTEMS if x.key == DEFAULT)
    out += [
        SUMMARY,
        "",
        f"The shipped default engine is {default.label}. Each row: the same trials (every pair of whole recordings), held-out profiles.",
        "",
        "| channel | set | ECAPA EER % | naive fusion EER % | default EER % | default − naive, 95 % | default Cllr | refused % | default `verified` FA % | default `not_verified` FR % |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for channel in (Channel.WIDEBAND, Channel.TELEPHONE):
        rows = {(r.set_name, r.system.key): r for r in results.held_out[channel]}
        for embedded in by_channel[channel]:
            e, d = rows[(embedded.name, "ecapa-raw")], rows[(embedded.name, DEFAULT)]
            out.append(
                table_row(
                    [
                        channel.value,
                        embedded.name,
                        pct(e.metrics.eer),
                        pct(results.naive[(channel, embedded.name)]),
                        pct(d.metrics.eer),
                        "{:+.2f} … {:+.2f}".format(*(100 * x for x in results.naive_gap[(channel, embedded.name)])),
                        f"{d.metrics.cllr:.3f}",
                        pct(d.full.refused / len(d.full.verdicts)),
                        pct(d.rates.false_accept),
                        pct(d.rates.false_reject),
                    ]
                )
            )
    out += ["", *notes_block(), ""]
    out += [
        "## Short speech: the default engine by test-speech band (held out)",
        "",
        "Every trial of each band counted, refused ones included. `< 1.5 s` holds the recordings that are that",
        "short as recorded (and the trials refused for too little speech). *Calls of k clips*, for the sets of",
        "short clips: k consecutive recordings of a speaker pooled into one voiceprint (as a live stream pools",
        "what a caller says), every pair of calls a trial (speech: the median test side). Two callers saying the",
        "same few words at length: these are not in the bands above, and no fitting set but the other short",
        "ones holds such trials.",
        "",
    ]
    for channel in (Channel.WIDEBAND, Channel.TELEPHONE):
        out += [f"### {channel.value.capitalize()}", ""]
        out += [*_band_table([r for r in results.held_out[channel] if r.system.key == DEFAULT]), ""]
    out += [
        "## Text-dependent: three short recordings enrolled, one tested",
        "",
        f"The passphrase case on the sets of short clips: each speaker's usable recordings in groups of {PASSPHRASE_ENROLL}"
        " (manifest order) are enrolled together, and every other recording of the set is tested against each group.",
        "The manifests carry no transcripts, so same-phrase trials cannot be picked out: the clips are words from one",
        "small vocabulary (Arabic commands, English digits), so their lexical overlap is high but not complete.",
        "*Default* is the shipped default engine, held out; *passphrase* is a profile fitted on these trials of the",
        "other half of the set's speakers (speaker-disjoint, both halves pooled). The shipped `<channel>-passphrase`",
        "profiles are fitted on all of them.",
        "",
    ]
    for channel in (Channel.WIDEBAND, Channel.TELEPHONE):
        if results.passphrase[channel]:
            out += [f"### {channel.value.capitalize()}", ""]
            out += [*_table(results.passphrase[channel]), ""]
    for channel in (Channel.WIDEBAND, Channel.TELEPHONE):
        sets = by_channel[channel]
        out += [f"## {channel.value.capitalize()} channel, held out", ""]
        out += [
            f"Sets: {', '.join(f'`{s.name}`' + (' (simulated channel)' if channel is Channel.TELEPHONE and max(r.source_rate_hz for r in s.results if not r.error) > 8000 else '') for s in sets)}.",
            "",
        ]
        out += [*_table(results.held_out[channel]), ""]
    out += [
        "## After calibrating on your own recordings (in-domain, speaker-disjoint)",
        "",
        "What `voxgate calibrate` buys a customer: each set's speakers are split in two halves; a profile is fitted on",
        "one half's recordings only and scores the trials of the other half, and the other way round; the figures",
        "pool both halves. No speaker is scored by a profile that saw them.",
        "",
    ]
    for channel in (Channel.WIDEBAND, Channel.TELEPHONE):
        out += [f"### {channel.value.capitalize()}", ""]
        out += [*_table(results.in_domain[channel]), ""]
    out += [
        "## The shipped profiles, on the sets they were fitted on",
        "",
        "The profiles in `voxgate/profiles/` are fitted on all sets of their channel. Figures on the same sets are",
        "optimistic for calibration; they show the thresholds hold where they were set.",
        "",
    ]
    for channel in (Channel.WIDEBAND, Channel.TELEPHONE):
        out += [f"### {channel.value.capitalize()}", ""]
        out += [*_table([r for r in results.fitted_all[channel] if r.system.key in SHIPPED.values()]), ""]
    out += [
        "### Profiles",
        "",
        "| profile | engine | accept LLR | reject LLR | fitted on (target / non-target trials) | hash |",
        "|---|---|---|---|---|---|",
    ]
    for name, profile in sorted(results.shipped.items()):
        fitted = ", ".join(
            f"{s['name']} ({s['target_trials']} / {s['nontarget_trials']})" for s in profile.fitted_on["sets"]
        )
        kind = "duration-aware" if profile.quality is not None else "fixed"
        out.append(
            f"| `{name}` | {profile.model_id} ({kind}) | {profile.thresholds.accept_llr:g} | {profile.thresholds.reject_llr:g} | {fitted} | `{profile.content_hash[:12]}` |"
        )
    out.append("")
    return "\n".join(out)


def _as_shipped(fitted: CalibrationProfile) -> CalibrationProfile:
    """The shipped profile itself when ``fitted`` differs from it only in its creation time, so that a
    rerun on the same embeddings reports (and, with --write-profiles, writes) the hashes already shipped."""
    try:
        shipped = shipped_profile(fitted.name)
    except ProfileError:
        return fitted
    same = replace(fitted, created=shipped.created).content_hash == shipped.content_hash
    return shipped if same else fitted


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--speech", type=Path, default=DEFAULT_SPEECH, help="folder of speech sets")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "accuracy.md")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "accuracy")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--write-profiles", action="store_true", help="refit voxgate/profiles/*.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.speech.is_dir():
        print(f"accuracy: no speech folder at {args.speech}", file=sys.stderr)
        return 1
    results = run(args.speech, Settings(), args.cache, args.jobs)
    results.shipped = {name: _as_shipped(profile) for name, profile in results.shipped.items()}
    if args.write_profiles:
        for name, profile in results.shipped.items():
            profile.save(REPO / "voxgate" / "profiles" / f"{name}.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old = args.out.read_text() if args.out.exists() else ""
    new = keep_foreign(old, render(results))
    args.out.write_text(carry_notes(old, new))
    print(f"accuracy: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
