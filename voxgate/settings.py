"""The one settings object. Every value comes from a ``VOXGATE_*`` environment variable (or a ``.env``
file) and is documented in the README's configuration table."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "voxgate"


def _default_model_dir() -> Path:
    return Path.home() / ".cache" / "voxgate" / "models"


class Settings(BaseSettings):
    """Configuration of a voxgate process; build with :func:`get_settings` (or directly in tests)."""

    model_config = SettingsConfigDict(env_prefix="VOXGATE_", env_file=".env", extra="ignore")

    # where things live
    data_dir: Path = Field(default_factory=_default_data_dir, description="Data directory (store, backups).")
    model_dir: Path = Field(
        default_factory=_default_model_dir, description="Exported ONNX models (`voxgate models prepare`)."
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy async URL; default SQLite file `voxgate.db` in the data directory.",
    )

    # server
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    log_json: bool = True

    # audio limits
    max_audio_bytes: int = Field(default=200 * 1024 * 1024, description="Largest recording accepted, bytes.")
    max_audio_duration_s: float = Field(
        default=4 * 3600.0, description="Longest recording accepted, seconds."
    )
    min_sample_rate_hz: int = 4000
    max_sample_rate_hz: int = 192000
    decode_timeout_s: float = Field(default=120.0, description="A decode that takes longer is abandoned.")

    # biometrics
    model: str = Field(
        default="ecapa", description="Embedding model used when the profile does not name one."
    )
    profile: str = Field(
        default="auto",
        description="Calibration profile: `auto` (telephone for audio at ≤ 8 kHz, else wideband), a shipped "
        "profile name, or a path to a profile JSON file.",
    )
    min_enroll_speech_s: float = Field(
        default=20.0, description="Net speech needed to enroll from recordings."
    )
    min_verify_speech_s: float = Field(default=3.0, description="Net speech needed to verify.")
    min_score_speech_s: float = Field(
        default=1.0, description="Net speech a file needs in `voxgate score/evaluate/calibrate`."
    )
    max_embed_chunk_s: float = Field(
        default=60.0, description="Speech longer than this is embedded in chunks and pooled (bounds memory)."
    )
    vad_threshold: float = 0.5
    onnx_threads: int = Field(default=1, description="onnxruntime intra-op threads per session.")

    # account (used from the API issue on)
    admin_user: str = "admin"
    admin_password: SecretStr | None = None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'voxgate.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use (never at import time)."""
    return Settings()
