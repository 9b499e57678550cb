"""Static int8 copies of the exported speaker models (``model.int8.onnx``), calibrated on real speech.

Why this recipe (measured on the 2-core development CPU, single thread; figures in bench/README.md and
docs/accuracy.md): onnxruntime's *static* quantisation of the convolutions, calibrated on a handful of
real recordings, makes ECAPA about 3.4x and CAM++ about 1.7x faster, at a small accuracy cost;
*dynamic* int8 was 3-5x *slower* than fp32 here, so it is not offered. QDQ was 3-6 % faster than
QOperator (ECAPA 0.0120 vs 0.0123, CAM++ 0.0061 vs 0.0065 real-time factor, network alone) and agreed
with fp32 as well (minimum cosine within 0.004 on 12 held-out files). Pre-processing (onnxruntime's ``quant_pre_process``: shape inference and graph
optimisation) made the int8 ECAPA about 10 % faster. Activations are uint8, weights int8 per channel,
ranges from the min/max over the calibration speech (the histogram calibrators need equal-length inputs,
which real recordings are not).

Calibration features are computed exactly as serving computes them: the recording at 16 kHz, Silero VAD,
the speech only, then the backend's NumPy features.

onnxruntime.quantization imports ``onnx`` (a ``prepare`` extra), so it is imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import onnxruntime as ort

from voxgate.audio.types import Audio, FloatArray
from voxgate.biometrics.engine import Biometrics
from voxgate.biometrics.features import SAMPLE_RATE_HZ
from voxgate.biometrics.models.base import (
    INT8_FILE,
    MODEL_CARD,
    MODEL_FILE,
    ModelCard,
    OnnxEmbeddingModel,
    cosine,
    sha256_file,
)
from voxgate.errors import ModelNotPrepared

_log = logging.getLogger(__name__)

INT8_OP_TYPES = ["Conv"]  # the convolutions carry nearly all of both networks' time
# The int8 copy must agree with fp32 on the calibration speech at least this well, else it is not kept.
# Measured there: 0.991 (ECAPA), 0.989 (CAM++); on all 1,785 recordings of the speech sets the median is
# 0.993 / 0.989 (docs/accuracy.md).
MIN_INT8_COSINE = 0.97


def int8_is_current(folder: Path, card: ModelCard) -> bool:
    """The card names an int8 copy and ``folder/model.int8.onnx`` is that file."""
    path = folder / INT8_FILE
    return bool(card.int8_sha256) and path.is_file() and sha256_file(path) == card.int8_sha256


def calibration_speech(model_dir: Path, clips: list[FloatArray]) -> list[FloatArray]:
    """Each clip's speech as serving sees it: Silero VAD, pauses cut (clips with < 0.5 s are dropped)."""
    try:
        vad = Biometrics(model_dir, [])
    except ModelNotPrepared as exc:  # `voxgate models prepare` installs the VAD first; a bare call may not
        _log.warning("no VAD for the int8 calibration (%s); calibrating on whole recordings", exc)
        return clips
    speech = [vad.analyse(Audio(c, SAMPLE_RATE_HZ, 1, "FLOAT", "check audio")).speech for c in clips]
    return [s for s in speech if s.shape[0] >= SAMPLE_RATE_HZ // 2]


def quantise_static(source: Path, target: Path, input_name: str, features: list[FloatArray]) -> str:
    """Write the static int8 copy of ``source`` to ``target``; return the recipe recorded in the card."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        """Feeds the calibration features one recording at a time (lengths differ)."""

        def __init__(self) -> None:
            self._batches: Iterator[FloatArray] = iter(features)

        def get_next(self) -> dict[str, FloatArray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    with tempfile.TemporaryDirectory(prefix=".int8-", dir=target.parent) as scratch:
        optimised = Path(scratch) / "pre.onnx"
        # auto_merge: without it CAM++'s pooling defeats symbolic shape inference, which then drops
        # a copy of the model into the working directory
        quant_pre_process(str(source), str(optimised), skip_symbolic_shape=False, auto_merge=True)
        quantize_static(
            str(optimised),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=INT8_OP_TYPES,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return (
        f"onnxruntime=={ort.__version__} quantize_static QDQ, {'+'.join(INT8_OP_TYPES)}, per-channel int8 "
        f"weights, uint8 activations, MinMax over {len(features)} real-speech files"
    )


def write_int8(
    folder: Path,
    card: ModelCard,
    backend: type[OnnxEmbeddingModel],
    model_dir: Path,
    clips: list[FloatArray],
    log: Callable[[str], None],
) -> ModelCard:
    """Quantise ``folder/model.onnx`` into ``folder/model.int8.onnx`` and return ``card`` naming it.

    The copy is kept only when it agrees with fp32 (``MIN_INT8_COSINE``) on the calibration speech;
    otherwise, or if quantisation fails, the int8 copy is logged as unavailable and ``card`` comes back
    without one: the fp32 model alone serves (an opt-in speed-up must never block preparing it).
    """
    speech = calibration_speech(model_dir, clips)
    partial = folder / f".{INT8_FILE}.partial"
    try:
        fp32 = backend(card, (folder / MODEL_FILE).read_bytes(), threads=1)
        features = [fp32.features(s)[None] for s in speech]  # (1, frames, mels) each
        recipe = quantise_static(folder / MODEL_FILE, partial, card.input_name, features)
        int8 = backend(card, partial.read_bytes(), threads=1, int8=True)
        agreement = min(cosine(fp32.embed(s), int8.embed(s)) for s in speech)
        if not agreement >= MIN_INT8_COSINE:  # also catches NaN
            raise ValueError(
                f"cosine int8 vs fp32 {agreement:.4f} < {MIN_INT8_COSINE} on the calibration speech"
            )
    except Exception as exc:  # onnxruntime's quantiser raises many kinds; fp32 must stay usable
        partial.unlink(missing_ok=True)
        log(f"{card.model_id}: int8 copy unavailable (VOXGATE_INT8 cannot be used): {exc}")
        return dataclasses.replace(card, int8_sha256="", int8_recipe="", int8_cosine=0.0)
    os.replace(partial, folder / INT8_FILE)
    log(f"{card.model_id}: wrote {INT8_FILE} (min cosine int8 vs fp32 {agreement:.4f}; {recipe})")
    return dataclasses.replace(
        card, int8_sha256=sha256_file(folder / INT8_FILE), int8_recipe=recipe, int8_cosine=agreement
    )


def add_int8(
    folder: Path,
    card: ModelCard,
    backend: type[OnnxEmbeddingModel],
    model_dir: Path,
    clips: list[FloatArray],
    log: Callable[[str], None],
) -> ModelCard:
    """Give an already prepared (fp32) model its int8 copy, rewriting its card in one rename."""
    updated = write_int8(folder, card, backend, model_dir, clips, log)
    if updated != card:
        partial = folder / f".{MODEL_CARD}.partial"
        updated.write(partial)
        os.replace(partial, folder / MODEL_CARD)
    return updated
