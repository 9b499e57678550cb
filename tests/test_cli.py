"""The ``voxgate`` command end to end on real speech, in process, with a throw-away data directory."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voxgate.cli import EXIT_ERROR, EXIT_INSUFFICIENT_SPEECH, main
from voxgate.settings import get_settings

LIBRI = "librispeech_test_other"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> Iterator[None]:
    monkeypatch.setenv("VOXGATE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VOXGATE_MODEL_DIR", str(model_dir))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _files(speech_dir: Path, speaker: str) -> list[Path]:
    """A speaker's recordings, longest first."""
    return sorted((speech_dir / LIBRI / speaker).glob("*.flac"), key=lambda p: -sf.info(p).duration)


def test_enroll_then_verify_same_and_other_speaker(
    speech_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _files(speech_dir, "3080")
    b = _files(speech_dir, "2609")
    assert main(["enroll", "--id", "cust-3080", "--min-speech", "5", str(a[0]), str(a[1])]) == 0
    out = capsys.readouterr().out
    assert "net speech" in out and "enrolled cust-3080" in out

    assert main(["verify", "--id", "cust-3080", str(a[2])]) == 0
    same = capsys.readouterr().out
    assert "verdict: verified" in same, same
    assert main(["verify", "--id", "cust-3080", str(b[0])]) == 0
    other = capsys.readouterr().out
    assert "verdict: not_verified" in other, other
    llr_same = float(same.split("score: ")[1].split()[0])
    llr_other = float(other.split("score: ")[1].split()[0])
    assert llr_same > llr_other + 5

    assert main(["enroll", "--id", "cust-3080", "--min-speech", "5", str(a[0])]) == EXIT_ERROR
    assert "already exists" in capsys.readouterr().err


def test_default_minimum_speech_and_bad_input(
    speech_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = min((speech_dir / LIBRI / "1688").glob("*.flac"), key=lambda p: sf.info(p).duration)
    assert main(["enroll", "--id", "x", str(short)]) == EXIT_INSUFFICIENT_SPEECH
    assert "not enough speech" in capsys.readouterr().err

    samples, rate = sf.read(_files(speech_dir, "3080")[0], dtype="float32")
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([samples, np.zeros_like(samples)], axis=1), rate)
    assert main(["enroll", "--id", "x", "--min-speech", "3", str(stereo)]) == EXIT_ERROR
    assert "channel" in capsys.readouterr().err
    assert main(["enroll", "--id", "x", "--min-speech", "3", "--channel", "0", str(stereo)]) == 0
    capsys.readouterr()

    assert main(["verify", "--id", "nobody", str(stereo)]) == EXIT_ERROR
    assert "no voiceprint" in capsys.readouterr().err
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF" + bytes(range(256)) * 4)
    assert main(["verify", "--id", "x", str(garbage)]) == EXIT_ERROR
    assert "voxgate:" in capsys.readouterr().err


def _trials(tmp_path: Path, speech_dir: Path) -> Path:
    a, b = _files(speech_dir, "3080"), _files(speech_dir, "2609")
    root = speech_dir / LIBRI
    rel = [str(p.relative_to(root)) for p in (*a[:3], *b[:3])]
    rows = [
        (f"{rel[0]}|{rel[1]}", rel[2], 1, "x"),
        (rel[0], rel[3], 0, "y"),
        (rel[3], rel[4], 1, "z"),
        (rel[4], rel[1], 0, "w"),
    ]
    path = tmp_path / "trials.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["enroll", "test", "target", "note"])
        writer.writerows(rows)
    return path


def test_score_writes_csv_in_trial_order(
    speech_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trials = _trials(tmp_path, speech_dir)
    assert main(["score", "--trials", str(trials), "--root", str(speech_dir / LIBRI)]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert list(rows[0]) == ["enroll", "test", "score", "llr", "verdict"]
    with trials.open() as handle:
        expected = list(csv.DictReader(handle))
    assert [(r["enroll"], r["test"]) for r in rows] == [(e["enroll"], e["test"]) for e in expected]
    llrs = [float(r["llr"]) for r in rows]
    assert min(llrs[0], llrs[2]) > max(llrs[1], llrs[3])
    assert "embedding" in captured.err, "a progress bar goes to stderr"


def test_evaluate_writes_report(speech_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trials = _trials(tmp_path, speech_dir)
    out = tmp_path / "report"
    code = main(
        [
            "evaluate",
            "--trials",
            str(trials),
            "--root",
            str(speech_dir / LIBRI),
            "--out",
            str(out),
            "--model",
            "ecapa",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "EER: 0.00 %" in printed and "minDCF" in printed and "Cllr" in printed
    for name in ("scores.csv", "det.png", "histogram.png", "report.md"):
        assert (out / name).stat().st_size > 0, name


def test_calibrate_fits_a_profile(
    speech_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = tmp_path / "dataset"
    for speaker in ("3080", "2609", "1998", "367"):
        (dataset / speaker).mkdir(parents=True)
        for path in _files(speech_dir, speaker)[:3]:
            (dataset / speaker / path.name).symlink_to(path)
    out = tmp_path / "profile.json"
    code = main(
        [
            "calibrate",
            str(dataset),
            "--out",
            str(out),
            "--model",
            "ecapa",
            "--normalisation",
            "none",
            "--report",
            str(tmp_path / "r"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    from voxgate.biometrics.profile import CalibrationProfile

    profile = CalibrationProfile.load(out)
    assert profile.model_id == "ecapa" and profile.channel.value == "wideband"
    # duration-aware by default: every pair of whole recordings (4 speakers x 3 same-speaker pairs), plus
    # the test sides cut to 2, 4.5, 8 and 20 s of net speech where a recording has that much
    assert profile.quality is not None and "cut to" in profile.fitted_on["trials"]
    assert profile.fitted_on["sets"][0]["target_trials"] > 4 * 3
    assert (tmp_path / "r" / "report.md").exists()
    assert (
        main(
            [
                "verify",
                "--id",
                "nobody",
                "--profile",
                str(out),
                str(dataset / "367" / _files(speech_dir, "367")[0].name),
            ]
        )
        == EXIT_ERROR
    )


def test_bad_trials_file(tmp_path: Path, speech_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["score", "--trials", str(bad), "--root", str(speech_dir)]) == EXIT_ERROR
    assert "missing column" in capsys.readouterr().err


def test_models_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "ecapa" in out and "campplus" in out and "192" in out
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    for model_id in ("ecapa", "campplus"):  # prepared with their int8 copies (VOXGATE_INT8)
        assert "cosine 0.9" in rows[model_id], rows[model_id]
