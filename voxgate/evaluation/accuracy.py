"""The accuracy report (``make accuracy``): regenerates docs/accuracy.md and the shipped profiles.

For every set in the speech folder (trials within one set only), on the wideband channel (16 kHz sets) and
the telephone channel (native for the 8 kHz sets, simulated 8 kHz G.711 µ-law for the others), it scores
every pair of recordings with each candidate engine and reports EER, minDCF, Cllr and the verdict error
rates. Figures are *held out*: the profile scoring a set was fitted on the channel's other sets only (its
cohort too), so no set is calibrated on itself. The shipped profiles are then fitted on all sets.

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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voxgate.audio.types import AudioLimits, FloatArray
from voxgate.audio.vad import VAD_SHA256
from voxgate.biometrics.metrics import SummaryMetrics, summarize
from voxgate.biometrics.models import read_card
from voxgate.biometrics.profile import CalibrationProfile, Channel
from voxgate.evaluation.datasets import Dataset, read_dataset
from voxgate.evaluation.embedding import EmbedJob, FileResult, embed_files
from voxgate.evaluation.fitting import EmbeddedSet, fit_profile, normalised_trials
from voxgate.evaluation.report import VerdictRates
from voxgate.evaluation.sections import carry_notes, keep_foreign, notes_block, table_row
from voxgate.settings import Settings

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SPEECH = REPO.parent / "shared" / "data" / "speech"
LENGTHS_S = (3.0, 10.0)
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class System:
    """A candidate engine: which models, how normalised. ``key`` names its shipped profile."""

    key: str
    label: str
    model_ids: tuple[str, ...]
    normalisation: str


SYSTEMS = (
    System("ecapa-raw", "ECAPA cosine", ("ecapa",), "none"),
    System("campplus-raw", "CAM++ cosine", ("campplus",), "none"),
    System("fused-raw", "ECAPA+CAM++ fused", ("ecapa", "campplus"), "none"),
    System("ecapa", "ECAPA AS-norm", ("ecapa",), "asnorm"),
    System("campplus", "CAM++ AS-norm", ("campplus",), "asnorm"),
    System("ecapa+campplus", "ECAPA+CAM++ AS-norm fused", ("ecapa", "campplus"), "asnorm"),
)
# The shipped profiles: `<channel>` is the default engine; `<channel>-<model>` for --model.
# Engines also scored as a customer would after `voxgate calibrate` on their own recordings.
IN_DOMAIN = ("ecapa-raw", "fused-raw", "ecapa+campplus")
SHIPPED = {"": "fused-raw", "-ecapa": "ecapa-raw", "-campplus": "campplus-raw"}


@dataclass(frozen=True)
class Row:
    set_name: str
    system: System
    metrics: SummaryMetrics
    rates: VerdictRates
    by_length: dict[float, float]  # EER by test-side net speech crop


def embed_set(
    dataset: Dataset, telephone: bool, settings: Settings, cache: Path, jobs: int, *, int8: bool = False
) -> tuple[FileResult, ...]:
    """Every file of ``dataset`` embedded once (cached per model files); ``int8``: the quantised models."""
    cards = [read_card(settings.model_dir, m) for m in ("ecapa", "campplus")]
    key_parts = [dataset.name, str(telephone), VAD_SHA256] + [
        card.int8_sha256 if int8 else card.onnx_sha256 for card in cards
    ]
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
            lengths_s=(None, *LENGTHS_S),
            int8=int8,
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


def _llrs(
    profile: CalibrationProfile, embedded: EmbeddedSet, length_s: float | None = None
) -> tuple[FloatArray, BoolArray] | None:
    if length_s is not None and len(embedded.usable(length_s)) == 0:
        return None  # no recording of this set has that much speech
    trials = normalised_trials(profile, embedded, test_length_s=length_s)
    return profile.llr_from_normalised(trials.scores), trials.is_target


def _row(set_name: str, system: System, parts: Sequence[tuple[CalibrationProfile, EmbeddedSet]]) -> Row:
    """Figures of one set, pooling the trials of several (profile, part of the set) pairs."""
    llrs, labels, verdicts = [], [], []
    for profile, embedded in parts:
        scored = _llrs(profile, embedded)
        assert scored is not None
        llrs.append(scored[0])
        labels.append(scored[1])
        verdicts += [profile.thresholds.verdict(float(x)).value for x in scored[0]]
    llr, target = np.concatenate(llrs), np.concatenate(labels)
    by_length: dict[float, float] = {}
    for length in LENGTHS_S:
        cropped = [c for c in (_llrs(p, e, length) for p, e in parts) if c is not None]
        if cropped:
            c_llr, c_target = np.concatenate([c[0] for c in cropped]), np.concatenate([c[1] for c in cropped])
            if c_target.any() and (~c_target).any():
                by_length[length] = summarize(c_llr[c_target], c_llr[~c_target]).eer
    rates = VerdictRates.of(
        [v for v, t in zip(verdicts, target, strict=True) if t],
        [v for v, t in zip(verdicts, target, strict=True) if not t],
    )
    return Row(set_name, system, summarize(llr[target], llr[~target]), rates, by_length)


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


def _fit(sets: Sequence[EmbeddedSet], system: System, channel: Channel, name: str) -> CalibrationProfile:
    return fit_profile(
        sets,
        system.model_ids,
        name=name,
        channel=channel,
        normalisation=system.normalisation,
        description=f"{system.label}, {channel.value} channel, fitted by `make accuracy` on the development sets",
    )


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


def run(
    speech: Path, settings: Settings, cache: Path, jobs: int
) -> tuple[
    dict[Channel, list[Row]],
    dict[Channel, list[Row]],
    dict[str, CalibrationProfile],
    dict[Channel, list[EmbeddedSet]],
    dict[Channel, list[Row]],
]:
    by_channel = embed_sets(speech, settings, cache, jobs)
    held_out: dict[Channel, list[Row]] = {}
    in_domain: dict[Channel, list[Row]] = {Channel.WIDEBAND: [], Channel.TELEPHONE: []}
    fitted_all: dict[Channel, list[Row]] = {}
    shipped: dict[str, CalibrationProfile] = {}
    for channel, embedded in by_channel.items():
        held_out[channel], fitted_all[channel] = [], []
        for system in SYSTEMS:
            started = time.monotonic()
            for target in embedded:
                others = [s for s in embedded if s is not target]
                profile = _fit(others, system, channel, f"held-out-{target.name}")
                held_out[channel].append(evaluate_set(profile, target, system))
            full = _fit(embedded, system, channel, channel.value)
            fitted_all[channel].extend(evaluate_set(full, target, system) for target in embedded)
            for suffix, key in SHIPPED.items():
                if key == system.key:
                    shipped[f"{channel.value}{suffix}"] = replace(full, name=f"{channel.value}{suffix}")
            if system.key in IN_DOMAIN:
                for target in embedded:
                    folds = [_speaker_fold(target, k) for k in (0, 1)]
                    parts = [
                        (_fit([fit_part], system, channel, f"in-domain-{target.name}"), test_part)
                        for fit_part, test_part in folds
                    ]
                    in_domain[channel].append(_row(target.name, system, parts))
            print(f"{channel.value} {system.label}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    return held_out, fitted_all, shipped, by_channel, in_domain


SUMMARY = "## Summary: the shipped default against raw ECAPA cosine (held out)"


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _table(rows: list[Row], with_lengths: bool) -> list[str]:
    head = "| set | engine | target / non-target | EER % | minDCF | Cllr | minCllr | verified FA % | not_verified FR % | not_sure (tgt / non) % |"
    if with_lengths:
        head += " EER % @3 s | EER % @10 s |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        m, v = r.metrics, r.rates
        cells = [
            r.set_name,
            r.system.label,
            f"{m.n_target} / {m.n_nontarget}",
            pct(m.eer),
            f"{m.min_dcf:.3f}",
            f"{m.cllr:.3f}",
            f"{m.min_cllr:.3f}",
            pct(v.false_accept),
            pct(v.false_reject),
            f"{pct(v.not_sure_target)} / {pct(v.not_sure_nontarget)}",
        ]
        if with_lengths:
            cells += [pct(r.by_length[x]) if x in r.by_length else "–" for x in LENGTHS_S]
        lines.append(table_row(cells))
    return lines


def render(
    held_out: dict[Channel, list[Row]],
    fitted_all: dict[Channel, list[Row]],
    shipped: dict[str, CalibrationProfile],
    by_channel: dict[Channel, list[EmbeddedSet]],
    in_domain: dict[Channel, list[Row]],
) -> str:
    out = [
        "# Accuracy",
        "",
        "Regenerate with `make accuracy` (about 15 minutes on 2 cores; embeddings are cached in `.cache/accuracy/`).",
        "Source: `voxgate/evaluation/accuracy.py`. Data: `../shared/data/speech` (real recorded speech; see its README).",
        "The notes under the summary and live-stream tables are written by people from the figures; regenerating",
        "keeps them as they are, so check them when the figures change.",
        "",
        "How to read this:",
        "- **Trials**: every pair of distinct recordings *within one set*, one recording enrolled, the other tested.",
        "  Recordings with less than 1 s of net speech are left out (the CLI's `score`/`evaluate` default).",
        "- **Channels**: *wideband* is the 16 kHz sets as recorded. *telephone* is the 8 kHz sets as recorded and the",
        "  16 kHz sets through a **simulated channel** (resampled to 8 kHz, G.711 µ-law round trip).",
        "- **Held out**: the profile scoring a set (calibration, fusion weights, AS-norm cohort, verdict thresholds)",
        "  was fitted on the *other* sets of that channel only. This is what a customer meets on audio we never saw.",
        "  The wideband channel has only two sets, so each is scored with a profile fitted on the other one alone.",
        "- **EER, minDCF** (P_target = 0.01, normalised) measure discrimination; **Cllr** (bits) measures the",
        "  calibrated LLRs, **minCllr** what perfect calibration would give. Verdict rates: `verified` given to",
        "  non-target trials (FA), `not_verified` given to target trials (FR), `not_sure` for each.",
        "- Speech length: the test side cut to its first 3 s or 10 s of net speech (enrollment side full); only",
        "  test recordings with at least that much speech take part.",
        "",
        "Verdict thresholds are fitted for two operating points on *every* fitting set: `verified` at ≤ 0.5 % false",
        "accepts and `not_verified` at ≤ 2 % false rejects (the strictest set decides). Between them: `not_sure`.",
        "",
    ]
    default = SHIPPED[""]
    out += [
        SUMMARY,
        "",
        f"The shipped default engine is {next(x.label for x in SYSTEMS if x.key == default)}. "
        "Each row: the same trials, held-out profiles.",
        "",
        "| channel | set | ECAPA EER % | default EER % | ECAPA Cllr | default Cllr | default `verified` FA % | default `not_verified` FR % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for channel in (Channel.WIDEBAND, Channel.TELEPHONE):
        rows = {(r.set_name, r.system.key): r for r in held_out[channel]}
        for embedded in by_channel[channel]:
            e, d = rows[(embedded.name, "ecapa-raw")], rows[(embedded.name, default)]
            out.append(
                f"| {channel.value} | {embedded.name} | {pct(e.metrics.eer)} | {pct(d.metrics.eer)} | "
                f"{e.metrics.cllr:.3f} | {d.metrics.cllr:.3f} | {pct(d.rates.false_accept)} | {pct(d.rates.false_reject)} |"
            )
    out += ["", *notes_block(), ""]
    for channel in (Channel.WIDEBAND, Channel.TELEPHONE):
        sets = by_channel[channel]
        out += [f"## {channel.value.capitalize()} channel, held out", ""]
        out += [
            f"Sets: {', '.join(f'`{s.name}`' + (' (simulated channel)' if channel is Channel.TELEPHONE and max(r.source_rate_hz for r in s.results if not r.error) > 8000 else '') for s in sets)}.",
            "",
        ]
        out += [*_table(held_out[channel], with_lengths=True), ""]
    out += [
        "## After calibrating on your own recordings (in-domain, speaker-disjoint)",
        "",
        "What `voxgate calibrate` buys a customer: each set's speakers are split in two halves; a profile is fitted on",
        "one half's recordings only (calibration, fusion weights and, for AS-norm, the cohort) and scores the trials of",
        "the other half, and the other way round; the figures pool both halves. No speaker is scored by a profile that",
        "saw them.",
        "",
    ]
    for channel in (Channel.WIDEBAND, Channel.TELEPHONE):
        out += [f"### {channel.value.capitalize()}", ""]
        out += [*_table(in_domain[channel], with_lengths=True), ""]
    out += [
        "## The shipped profiles, on the sets they were fitted on",
        "",
        "The profiles in `voxgate/profiles/` are fitted on all sets of their channel (AS-norm cohort drawn from all",
        "of them). Figures on the same sets are optimistic for calibration; they show the thresholds hold where they",
        "were set.",
        "",
    ]
    for channel in (Channel.WIDEBAND, Channel.TELEPHONE):
        out += [f"### {channel.value.capitalize()}", ""]
        out += [
            *_table([r for r in fitted_all[channel] if r.system.key in SHIPPED.values()], with_lengths=False),
            "",
        ]
    out += [
        "### Profiles",
        "",
        "| profile | engine | accept LLR | reject LLR | fitted on (target / non-target trials) | hash |",
        "|---|---|---|---|---|---|",
    ]
    for name, profile in sorted(shipped.items()):
        fitted = ", ".join(
            f"{s['name']} ({s['target_trials']} / {s['nontarget_trials']})" for s in profile.fitted_on["sets"]
        )
        out.append(
            f"| `{name}` | {profile.model_id} ({profile.terms[0].normalisation}) | {profile.thresholds.accept_llr:g} | {profile.thresholds.reject_llr:g} | {fitted} | `{profile.content_hash[:12]}` |"
        )
    out.append("")
    return "\n".join(out)


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
    held_out, fitted_all, shipped, by_channel, in_domain = run(args.speech, Settings(), args.cache, args.jobs)
    if args.write_profiles:
        for name, profile in shipped.items():
            profile.save(REPO / "voxgate" / "profiles" / f"{name}.json")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    old = args.out.read_text() if args.out.exists() else ""
    new = keep_foreign(old, render(held_out, fitted_all, shipped, by_channel, in_domain))
    args.out.write_text(carry_notes(old, new))
    print(f"accuracy: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
