"""The one decision of which embedding models this server runs, and the engine loaded for them.

Everything that must agree with the engine asks here: loading the biometrics, snapshot and backup
imports (whose embeddings must match), calibration-profile uploads (which must score with them).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from voxgate.audio.vad import SegmentationRules
from voxgate.biometrics.engine import Biometrics
from voxgate.biometrics.models import MODEL_IDS, read_card
from voxgate.biometrics.profile import resolve_profile
from voxgate.errors import ProfileError
from voxgate.settings import Settings
from voxgate.store.snapshots import ModelSpec

log = logging.getLogger(__name__)


def engine_model_ids(settings: Settings) -> tuple[str, ...]:
    """Every model a shipped profile (or the configured one) scores with, so that any of them can score
    voiceprints made here: embeddings are made once, with all of these. ``VOXGATE_MODELS`` narrows them
    (a faster live engine; profiles needing another model then cannot score)."""
    if settings.models:  # known ids, without repeats: checked and normalised by Settings at start
        return tuple(settings.models.split(","))
    ids: list[str] = []
    for spec, rate_hz in (
        ("wideband", 16000),
        ("telephone", 8000),
        (settings.profile, 8000),
        (settings.profile, 16000),
    ):
        try:
            ids.extend(resolve_profile(spec, rate_hz).model_ids)
        except ProfileError as exc:
            log.warning("profile %s: %s", spec, exc)
    ordered = [m for m in MODEL_IDS if m in ids] + [m for m in dict.fromkeys(ids) if m not in MODEL_IDS]
    if not ordered:
        raise ProfileError("no calibration profile could be read, so no model is known to be needed")
    return tuple(ordered)


def engine_models(settings: Settings) -> dict[str, ModelSpec]:
    """The engine's models (id, version, dimension) at the versions of the prepared model cards: what
    snapshots, backups and calibration profiles must match."""
    specs = {}
    for model_id in engine_model_ids(settings):
        card = read_card(settings.model_dir, model_id)
        specs[model_id] = ModelSpec(model_id, card.version, card.dimension)
    return specs


def load_biometrics(settings: Settings) -> Biometrics:
    """The engine for these settings, shared per process (see ``_load_biometrics``)."""
    return _load_biometrics(
        settings.model_dir,
        engine_model_ids(settings),
        settings.onnx_threads,
        settings.max_embed_chunk_s,
        settings.vad_threshold,
        settings.int8,
    )


@lru_cache(maxsize=2)
def _load_biometrics(
    model_dir: Path,
    model_ids: tuple[str, ...],
    threads: int,
    max_chunk_s: float,
    vad_threshold: float,
    int8: bool,
) -> Biometrics:
    """One engine per process and configuration: stateless (onnxruntime sessions), shared by all streams
    and requests, the CLI's files, and the apps a test process creates."""
    return Biometrics(
        model_dir,
        model_ids,
        threads=threads,
        rules=SegmentationRules(threshold=vad_threshold),
        max_chunk_s=max_chunk_s,
        int8=int8,
    )
