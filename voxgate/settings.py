"""The one settings object. Every value comes from a ``VOXGATE_*`` environment variable (or a ``.env``
file) and is documented in the README's configuration table."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_ALLOW_NETWORKS = 64


def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    """Comma-separated CIDRs (a bare address is a /32 or /128); ValueError naming the first bad one."""
    networks: dict[IpNetwork, None] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            networks[ipaddress.ip_network(part)] = None
        except ValueError as exc:
            raise ValueError(
                f"{part!r} is not a network in CIDR notation (e.g. 10.20.0.0/16): {exc}"
            ) from None
    if len(networks) > MAX_ALLOW_NETWORKS:
        raise ValueError(f"{len(networks)} networks; at most {MAX_ALLOW_NETWORKS}")
    return tuple(networks)


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "voxgate"


def _default_model_dir() -> Path:
    return Path.home() / ".cache" / "voxgate" / "models"


def _default_node_id() -> str:
    """Host name and process id: unique per process on a host, readable in logs and headers."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:60] or "node"
    return f"{host}-{os.getpid()}"


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

    # secrets at rest (webhook signing secrets and SIP passwords are stored encrypted with this key)
    secret_key: SecretStr | None = Field(
        default=None,
        description="Key that encrypts the stored webhook signing secrets and SIP passwords: 32 random bytes "
        "in base64; default: the key file.",
    )
    secret_key_file: Path | None = Field(
        default=None,
        description="File holding that key (owner-only; generated on the first start if missing); default "
        "`secrets.key` in the data directory. Not with VOXGATE_SECRET_KEY.",
    )
    secret_key_previous: SecretStr | None = Field(
        default=None,
        description="The key being rotated out: secrets it encrypted are encrypted again with the current "
        "key at start; remove it afterwards.",
    )

    # server
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    log_json: bool = True
    ws_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="A second port `voxgate serve` serves the same app on (for the WebSocket door, /ws "
        "and /); unset: the WebSocket door is on VOXGATE_PORT only.",
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (comma-separated "
        "addresses, or `*`): the client address in events and the login throttle is then the proxy's "
        "client. Only list proxies you run.",
    )
    tls_certfile: Path | None = Field(
        default=None, description="TLS certificate chain (PEM): `voxgate serve` speaks HTTPS and WSS."
    )
    tls_keyfile: Path | None = Field(default=None, description="The TLS certificate's private key (PEM).")
    ws_ping_interval_s: float = Field(
        default=5.0, gt=0, description="The WebSocket door sends each connection a ping this often."
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the metrics listener: `GET /metrics` in the Prometheus text format, no token, "
        "nothing else on it (0: a free port, printed at start); unset: no metrics listener.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address the metrics listener binds to: loopback by default; an internal address for a "
        "Prometheus on another host (never one the public reaches: the port has no token).",
    )

    # a cluster (docs/scale-out.md, "Shared live state")
    redis_url: str = Field(
        default="",
        description="Redis URL (`redis://host:6379/0`) of the shared live state: stream registry, "
        "maintenance signals, login throttle, node heartbeats; empty: in-process state (one process).",
    )
    node_id: str = Field(
        default_factory=_default_node_id,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="This process's name in the cluster (stream owner, `X-Voxgate-Node`); default host-pid.",
    )
    node_url: str = Field(
        default="",
        description="Base URL other nodes reach this process at (`http://10.0.0.5:8000`), to forward a "
        "stream's data, verify and enroll to its owner; empty: derived from the listening socket. With "
        "`--workers`, only its host counts: each worker listens on a free port of its own there.",
    )
    node_ttl_s: float = Field(
        default=3.0,
        ge=1.0,
        le=60.0,
        description="A node whose heartbeat (every third of this) is older than this is dead: its streams end.",
    )
    workers: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Processes `voxgate serve` runs behind one port; default one per core with "
        "VOXGATE_REDIS_URL, 1 without (more than 1 needs it).",
    )

    # audio limits
    max_audio_bytes: int = Field(
        default=200 * 1024 * 1024, ge=1024, description="Largest recording accepted, bytes."
    )
    max_audio_duration_s: float = Field(
        default=3600.0,
        gt=0,
        le=24 * 3600,
        description="Longest recording accepted, and the most all the recordings of one enrollment may last "
        "together, seconds (checked from the header before decoding where the format declares it).",
    )
    min_sample_rate_hz: int = Field(default=4000, ge=1000)
    max_sample_rate_hz: int = Field(default=192000, le=768000)
    decode_timeout_s: float = Field(
        default=120.0, gt=0, description="A decode that takes longer is abandoned."
    )

    # biometrics
    models: str | None = Field(
        default=None,
        description="Embedding models to load, comma-separated (`campplus` is the fastest live engine, with "
        "`VOXGATE_PROFILE=telephone-campplus`); default: every model the shipped profiles use.",
    )
    profile: str = Field(
        default="auto",
        description="Calibration profile: `auto` (telephone for audio at ≤ 8 kHz, else wideband), a shipped "
        "profile name, or a path to a profile JSON file.",
    )
    min_enroll_speech_s: float = Field(
        default=20.0, ge=0, le=3600, description="Net speech needed to enroll from recordings."
    )
    min_verify_speech_s: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description="Net speech a live stream needs for a verdict. Short speech is scored with a duration-"
        "aware profile, so `not_sure` is the usual answer where the evidence is thin.",
    )
    min_utterance_speech_s: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description="Net speech each recording of a passphrase enrollment (`passphrase=true`) needs.",
    )
    passphrase_utterances: int = Field(
        default=3,
        ge=1,
        le=5,
        description="Recordings a passphrase enrollment needs at least (at most 5): the same words, said "
        "each time by the customer.",
    )
    min_score_speech_s: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description="Net speech a file needs in `voxgate score/evaluate/calibrate`; a shorter one is refused "
        "(`insufficient_speech`) and counted as a rejection in the figures.",
    )
    max_embed_chunk_s: float = Field(
        default=60.0,
        ge=1,
        le=600,
        description="Speech longer than this is embedded in chunks and pooled (bounds memory).",
    )
    vad_threshold: float = Field(default=0.5, gt=0, lt=1, description="Silero speech probability threshold.")
    onnx_threads: int = Field(
        default=1, ge=1, le=256, description="onnxruntime intra-op threads per session."
    )
    int8: bool = Field(
        default=False,
        description="Serve the statically quantised int8 copies of the speaker models (`voxgate models "
        "prepare` writes them): ECAPA about 3.7x, CAM++ about 1.7x faster; accuracy in docs/accuracy.md.",
    )

    # live streams
    max_streams: int = Field(default=100, ge=1, description="Concurrent live streams; more get 503.")
    stream_idle_timeout_s: float = Field(
        default=10.0, gt=0, description="A stream without audio this long closes."
    )
    offline_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="How much lower the OS priority of the thread that decodes and embeds recordings "
        "(imports, one at a time) is than the live engine's (Linux nice; 0: the same). Measured: +10 keeps "
        "live verify p99 at ~23 ms during 20 concurrent imports on one core, where 0 let it reach 100-300 ms.",
    )
    stream_first_audio_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="An HTTP or WebSocket stream that got no audio at all this long after it opened closes "
        "(reason `no_audio`), so empty opens cannot hold the stream slots; at most the idle timeout "
        "matters. SIP calls are bounded by VOXGATE_RTP_TIMEOUT_S instead.",
    )
    stream_chunk_s: float = Field(
        default=3.0,
        ge=0.5,
        le=60,
        description="Net speech of a live stream embedded at once, at the caller's next pause (the "
        "voiceprint grows in steps).",
    )
    stream_settle_until_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="While a stream's voiceprint holds less net speech than this, a verify also embeds the "
        "speech after which the caller paused (the tail shorter than a chunk); beyond it the voiceprint "
        "grows by chunks only (at most two chunks behind the live audio), which saves CPU on long calls. "
        "An enroll always takes everything.",
    )
    stream_max_speech_s: float | None = Field(
        default=60.0,
        gt=0,
        description="Net speech a live stream's voiceprint grows to; later audio is counted, not analysed "
        "(saves CPU on long calls). Empty for no cap.",
    )
    cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        description="Tokens, voiceprints and the active profile are cached this long for verify polls; on "
        "several nodes a change made on another node is seen within this time (0: no cache).",
    )
    stream_max_backlog_s: float = Field(
        default=5.0,
        gt=0,
        description="Audio a stream may have waiting for the inference engine before its sender is slowed.",
    )
    max_stream_request_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Largest body of one POST /api/v2/stream/HTTP/data request.",
    )

    # webhooks (POST /api/v2/subscription)
    webhook_interval_s: float = Field(
        default=1.0, gt=0, description="Period of the enroll and verify callbacks of a live stream."
    )
    webhook_timeout_s: float = Field(
        default=5.0, gt=0, description="Deadline of one callback attempt (connect, send, response status)."
    )
    webhook_retries: int = Field(
        default=3, ge=0, le=10, description="Further attempts after a network error, a timeout, 5xx or 429."
    )
    webhook_backoff_s: float = Field(
        default=1.0,
        ge=0,
        description="Wait before the first retry; it doubles with each retry (at most 60 s).",
    )
    webhook_queue_size: int = Field(
        default=1000, ge=1, description="Callbacks waiting to be sent; when full, the oldest is dropped."
    )
    webhook_workers: int = Field(default=8, ge=1, le=256, description="Callbacks sent at the same time.")
    webhook_allow_networks: str = Field(
        default="",
        max_length=4096,
        description="Networks callbacks may go to although they are not public (private, loopback, "
        "link-local...), comma-separated CIDRs, e.g. `10.20.0.0/16,fd00:1::/64`; empty: public addresses only.",
    )

    # voice bots (the VoiceAI Connect speaker-verification events)
    bot_speaker_prefix: str = Field(
        default="",
        max_length=128,
        description="speakerVerificationSpeakerPrefix when neither the stream nor the bot sets one: prefixed "
        "to every speaker id, so one server keeps distinct customers' speakers apart.",
    )
    bot_config_sets: Path | None = Field(
        default=None,
        description="JSON file of named configuration sets (speakerVerificationConfigSet): type, utterance "
        "limits, minimum speech, calibration profile, end-of-speech silence, timeout; unset: the two built-in "
        "sets `text-dependent` and `text-independent`.",
    )
    bot_end_of_speech_s: float = Field(
        default=0.8,
        ge=0,
        le=10,
        description="Silence after speech that ends a bot utterance (voxgate's own end-of-speech detection); "
        "0: only the bot's speakerVerificationEndOfUtterance messages end one.",
    )
    bot_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="An enroll or verify operation not complete this long after it started fails.",
    )

    # telephony (PBX instances themselves are stored, see /api/v2/pbx/)
    sip_bind_host: str = Field(
        default="0.0.0.0", description="Address the SIP and RTP sockets of PBX instances bind to."
    )
    sip_public_host: str | None = Field(
        default=None,
        description="Address a PBX reaches voxgate at (Via, Contact, SDP); default: the local address of "
        "the route toward the PBX.",
    )
    rtp_timeout_s: float = Field(
        default=30.0, gt=0, description="A SIP call without RTP this long is hung up."
    )

    # account and logs
    admin_user: str = Field(default="admin", min_length=1, max_length=150)
    admin_password: SecretStr | None = Field(
        default=None,
        description="Password of the API account on first start; generated and shown once if unset.",
    )
    token_ttl_s: int = Field(default=7 * 24 * 3600, ge=60, description="API token lifetime, seconds.")
    event_retention_days: int = Field(default=90, ge=1, description="Events older than this are purged.")
    max_snapshot_bytes: int = Field(
        default=1 << 30,
        ge=1024,
        description="Largest snapshot or backup accepted, bytes (compressed and inflated).",
    )
    max_profile_bytes: int = Field(
        default=64 << 20, ge=1024, description="Largest calibration profile upload, bytes."
    )
    max_json_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        description="Largest body of every other request (JSON), bytes; counted before it is parsed.",
    )

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from voxgate.biometrics.models import MODEL_IDS

        chosen = [m.strip() for m in value.split(",") if m.strip()]
        unknown = [m for m in chosen if m not in MODEL_IDS]
        if not chosen or unknown:
            raise ValueError(f"unknown models {unknown or value!r}; known: {', '.join(MODEL_IDS)}")
        return ",".join(dict.fromkeys(chosen))

    @field_validator("webhook_allow_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        return ",".join(str(n) for n in parse_networks(value))

    @field_validator("profile")
    @classmethod
    def _readable_profile(cls, value: str) -> str:
        from voxgate.biometrics.profile import resolve_profile
        from voxgate.errors import ProfileError

        try:
            resolve_profile(value)
        except ProfileError as exc:
            raise ValueError(exc.message) from exc
        return value

    @field_validator("secret_key", "secret_key_previous")
    @classmethod
    def _valid_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        from voxgate.store.crypto import parse_key

        parse_key(value.get_secret_value(), "the key")  # ValueError names what a key looks like
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.secret_key is not None and self.secret_key_file is not None:
            raise ValueError("set VOXGATE_SECRET_KEY or VOXGATE_SECRET_KEY_FILE, not both")
        if (
            self.secret_key is not None
            and self.secret_key_previous is not None
            and self.secret_key.get_secret_value().strip()
            == self.secret_key_previous.get_secret_value().strip()
        ):
            raise ValueError("VOXGATE_SECRET_KEY_PREVIOUS must differ from VOXGATE_SECRET_KEY")
        if self.max_sample_rate_hz < self.min_sample_rate_hz:
            raise ValueError("VOXGATE_MAX_SAMPLE_RATE_HZ must not be below VOXGATE_MIN_SAMPLE_RATE_HZ")
        if self.stream_max_speech_s is not None and self.stream_max_speech_s < self.stream_chunk_s:
            raise ValueError(
                f"VOXGATE_STREAM_MAX_SPEECH_S ({self.stream_max_speech_s:g} s) must be at least "
                f"VOXGATE_STREAM_CHUNK_S ({self.stream_chunk_s:g} s)"
            )
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("VOXGATE_TLS_CERTFILE and VOXGATE_TLS_KEYFILE go together (or neither)")
        for path in (self.tls_certfile, self.tls_keyfile):
            if path is not None and not path.is_file():
                raise ValueError(f"the TLS file {path} does not exist")
        if self.ws_port is not None and self.ws_port == self.port:
            raise ValueError("VOXGATE_WS_PORT must differ from VOXGATE_PORT (or be unset)")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("VOXGATE_REDIS_URL must start with redis://, rediss:// or unix:// (or be empty)")
        if self.node_url and not re.fullmatch(r"https?://[^/\s]+(:\d+)?/?", self.node_url):
            raise ValueError("VOXGATE_NODE_URL must be a base URL like http://10.0.0.5:8100 (or be empty)")
        if (self.workers or 1) > 1 and not self.redis_url:
            raise ValueError(
                "VOXGATE_WORKERS above 1 needs VOXGATE_REDIS_URL: the workers share live state through Redis"
            )
        if self.metrics_port and self.metrics_port in (self.port, self.ws_port):
            raise ValueError("VOXGATE_METRICS_PORT must differ from VOXGATE_PORT and VOXGATE_WS_PORT")
        if self.bot_config_sets is not None:
            from voxgate.service.bots.config import BadParameter, load_sets

            try:
                load_sets(self)
            except BadParameter as exc:
                raise ValueError(exc.message) from None
        return self

    @property
    def resolved_secret_key_file(self) -> Path:
        return self.secret_key_file or self.data_dir / "secrets.key"

    @property
    def webhook_allowed_networks(self) -> tuple[IpNetwork, ...]:
        """``webhook_allow_networks`` parsed."""
        return parse_networks(self.webhook_allow_networks)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'voxgate.db'}"


SECRET_TYPES = (SecretStr, SecretStr | None)  # settings whose given value is never echoed


def describe_errors(exc: ValidationError) -> str:
    """A refusal to start that names each bad ``VOXGATE_*`` variable and why, one per line."""
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if not field:  # a rule across settings: the message names them
            lines.append(f"  {message}")
            continue
        given = error.get("input")
        secret = field in Settings.model_fields and Settings.model_fields[field].annotation in SECRET_TYPES
        shown = "" if isinstance(given, dict) or secret else f" (got {given!r})"
        lines.append(f"  VOXGATE_{field.upper()}{shown}: {message}")
    return "invalid settings:\n" + "\n".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use (never at import time)."""
    return Settings()
