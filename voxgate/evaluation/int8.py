"""fp32 against the static int8 models (``VOXGATE_INT8``): do the shipped profiles still hold?

    nice -n 19 python -m voxgate.evaluation.int8 --jobs 2

Embeds every set of the speech folder on its channels with the fp32 and with the int8 models (the same
pipeline and cache as the accuracy report, ``.cache/accuracy/``), scores each set with the *shipped*
profiles -- fitted on the fp32 embeddings of these very sets -- and prints Markdown: EER and the verdict
error rates at the shipped thresholds, fp32 against int8, and how closely the int8 embeddings agree with
the fp32 ones (cosine per recording). The figures are quoted by hand in docs/accuracy.md
("Static int8 quantisation").
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxgate.audio.types import Float64Array
from voxgate.biometrics.models import MODEL_IDS
from voxgate.biometrics.profile import Channel, shipped_profile
from voxgate.evaluation.accuracy import (
    DEFAULT_SPEECH,
    REPO,
    SHIPPED,
    SYSTEMS,
    Row,
    embed_sets,
    evaluate_set,
    pct,
)
from voxgate.evaluation.fitting import EmbeddedSet
from voxgate.settings import Settings


@dataclass(frozen=True)
class Pair:
    """One set scored with one shipped profile, fp32 and int8."""

    channel: Channel
    profile: str
    fp32: Row
    int8: Row


def agreement(fp32: EmbeddedSet, int8: EmbeddedSet, model_id: str) -> Float64Array:
    """Cosine of each recording's int8 embedding to its fp32 one (full speech, both usable)."""
    cosines = [
        float(
            np.dot(
                a.voiceprints[None].embedding(model_id).vector,
                b.voiceprints[None].embedding(model_id).vector,
            )
        )  # voiceprint embeddings are L2-normalised
        for a, b in zip(fp32.results, int8.results, strict=True)
        if not a.error and not b.error
    ]
    return np.array(cosines, dtype=np.float64)


def compare(fp32: dict[Channel, list[EmbeddedSet]], int8: dict[Channel, list[EmbeddedSet]]) -> list[Pair]:
    """Every set with every shipped profile of its channel, fp32 and int8 on the same trials."""
    pairs: list[Pair] = []
    for channel, sets in fp32.items():
        for suffix, key in SHIPPED.items():
            name = f"{channel.value}{suffix}"
            profile = shipped_profile(name)
            system = next(s for s in SYSTEMS if s.key == key)
            for full, quantised in zip(sets, int8[channel], strict=True):
                pairs.append(
                    Pair(
                        channel,
                        name,
                        evaluate_set(profile, full, system),
                        evaluate_set(profile, quantised, system),
                    )
                )
    return pairs


def render(
    pairs: Sequence[Pair],
    fp32: dict[Channel, list[EmbeddedSet]],
    int8: dict[Channel, list[EmbeddedSet]],
) -> str:
    """Two Markdown tables: verdict errors at the shipped thresholds, and embedding agreement."""
    out = [
        "| channel | set | profile | EER % fp32 → int8 | `verified` FA % fp32 → int8 "
        "| `not_verified` FR % fp32 → int8 | Cllr fp32 → int8 |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in pairs:
        a, b = p.fp32, p.int8
        out.append(
            f"| {p.channel.value} | {a.set_name} | `{p.profile}` "
            f"| {pct(a.metrics.eer)} → {pct(b.metrics.eer)} "
            f"| {pct(a.rates.false_accept)} → {pct(b.rates.false_accept)} "
            f"| {pct(a.rates.false_reject)} → {pct(b.rates.false_reject)} "
            f"| {a.metrics.cllr:.3f} → {b.metrics.cllr:.3f} |"
        )
    out += [
        "",
        "| channel | set | model | recordings | cosine int8 vs fp32: median | 1st percentile | min |",
        "|---|---|---|---|---|---|---|",
    ]
    everything: dict[str, list[Float64Array]] = {m: [] for m in MODEL_IDS}
    for channel, sets in fp32.items():
        for full, quantised in zip(sets, int8[channel], strict=True):
            for model_id in MODEL_IDS:
                cosines = agreement(full, quantised, model_id)
                everything[model_id].append(cosines)
                out.append(f"| {channel.value} | {full.name} | {model_id} | {_spread(cosines)} |")
    for model_id, parts in everything.items():
        out.append(f"| all | all | {model_id} | {_spread(np.concatenate(parts))} |")
    return "\n".join(out) + "\n"


def _spread(cosines: Float64Array) -> str:
    return (
        f"{cosines.size} | {np.median(cosines):.4f} | {np.percentile(cosines, 1):.4f} | {cosines.min():.4f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--speech", type=Path, default=DEFAULT_SPEECH, help="folder of speech sets")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "accuracy")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.speech.is_dir():
        print(f"int8: no speech folder at {args.speech}", file=sys.stderr)
        return 1
    settings = Settings()
    fp32 = embed_sets(args.speech, settings, args.cache, args.jobs)
    int8 = embed_sets(args.speech, settings, args.cache, args.jobs, int8=True)
    print(render(compare(fp32, int8), fp32, int8))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
