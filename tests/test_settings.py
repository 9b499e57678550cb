"""Every setting is checked when the process starts: a bad value is a refusal to start that names the
variable, never a server that answers 500 later (regression: VOXGATE_STREAM_CHUNK_S=0.2 started, and the
first new HTTP stream got 500)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from voxgate.settings import Settings, describe_errors

BAD = [
    ({"stream_chunk_s": 0.2}, "VOXGATE_STREAM_CHUNK_S"),
    ({"stream_max_speech_s": 2.0}, "VOXGATE_STREAM_MAX_SPEECH_S"),
    ({"models": "ecapa,whisper"}, "VOXGATE_MODELS"),
    ({"profile": "no-such-profile"}, "VOXGATE_PROFILE"),
    ({"vad_threshold": 1.5}, "VOXGATE_VAD_THRESHOLD"),
    ({"max_streams": 0}, "VOXGATE_MAX_STREAMS"),
    ({"onnx_threads": 0}, "VOXGATE_ONNX_THREADS"),
    ({"stream_idle_timeout_s": 0}, "VOXGATE_STREAM_IDLE_TIMEOUT_S"),
    ({"min_sample_rate_hz": 16000, "max_sample_rate_hz": 8000}, "VOXGATE_MAX_SAMPLE_RATE_HZ"),
    ({"log_level": "loud"}, "VOXGATE_LOG_LEVEL"),
    ({"port": 8000, "ws_port": 8000}, "VOXGATE_WS_PORT"),
]


def test_the_defaults_are_valid() -> None:
    settings = Settings()
    assert settings.stream_chunk_s == 3.0 and settings.models is None


@pytest.mark.parametrize(("values", "named"), BAD)
def test_a_bad_setting_is_refused_by_name(values: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(**values)  # type: ignore[arg-type]
    assert named in describe_errors(refused.value)


def test_models_are_normalised() -> None:
    assert Settings(models=" campplus, campplus ,ecapa").models == "campplus,ecapa"


def test_serve_refuses_to_start_with_a_bad_setting(tmp_path: object) -> None:
    env = {**os.environ, "VOXGATE_STREAM_CHUNK_S": "0.2", "VOXGATE_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "voxgate", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "invalid settings" in done.stderr and "VOXGATE_STREAM_CHUNK_S (got '0.2')" in done.stderr
    assert "Traceback" not in done.stderr
