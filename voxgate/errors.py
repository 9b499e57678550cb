"""The domain exceptions of voxgate.

Raised in the engine, translated to HTTP status codes only at the edge (``api/``) and to exit
codes in the CLI. Every exception carries a message that names the problem for the caller.

    VoxgateError
    ├── AudioError                  the audio cannot be used
    │   ├── EmptyAudio              no bytes, or zero samples after decoding
    │   ├── CorruptAudio            truncated or undecodable data
    │   ├── UnsupportedAudio        a container or codec we cannot decode
    │   ├── BadSampleRate           an absurd sample rate (outside the configured range)
    │   ├── AudioTooLarge           more bytes than the configured limit
    │   ├── AudioTooLong            longer than the configured duration limit
    │   └── MultiChannelAudio       more than one channel where one speaker is expected
    ├── InsufficientSpeech          less net speech than the operation needs
    ├── VoiceprintError
    │   ├── VoiceprintNotFound      no voiceprint for that external_id
    │   ├── VoiceprintExists        one already exists
    │   └── ModelMismatch           voiceprints of different models (or versions) compared
    ├── ModelError
    │   └── ModelNotPrepared        the model folder is missing or fails its contract
    ├── ProfileError                a calibration profile that is malformed or does not fit
    └── ServiceError                the running service cannot take the request now
        ├── NotRunning              a part of the runtime is starting or stopping
        ├── MaintenanceMode         maintenance mode is on
        └── NotInMaintenance        a restore waits for maintenance mode

Other modules add their own subclasses next to the code that raises them (streams, store, telephony,
evaluation); ``voxgate.api.errors.STATUS`` maps every one of them, and a test walks that table.
"""

from __future__ import annotations


class VoxgateError(Exception):
    """Base of every error voxgate raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class AudioError(VoxgateError):
    """The audio cannot be used."""


class EmptyAudio(AudioError):
    """No bytes, or no samples after decoding."""


class CorruptAudio(AudioError):
    """Truncated or otherwise undecodable data."""


class UnsupportedAudio(AudioError):
    """A container or codec that cannot be decoded."""


class BadSampleRate(AudioError):
    """A sample rate outside the range voxgate accepts."""


class AudioTooLarge(AudioError):
    """More bytes than the configured size limit."""


class AudioTooLong(AudioError):
    """More seconds of audio than the configured duration limit."""


class MultiChannelAudio(AudioError):
    """Several channels where one speaker per recording is expected."""


class InsufficientSpeech(VoxgateError):
    """Less net speech than the operation needs; never answered with a score."""

    def __init__(self, speech_s: float, required_s: float, what: str = "this operation") -> None:
        super().__init__(
            f"not enough speech: {speech_s:.2f} s of net speech, {what} needs at least {required_s:.2f} s"
        )
        self.speech_s = speech_s
        self.required_s = required_s


class VoiceprintError(VoxgateError):
    """A problem with a voiceprint."""


class VoiceprintNotFound(VoiceprintError):
    """No voiceprint exists for that external_id."""


class VoiceprintExists(VoiceprintError):
    """A voiceprint already exists for that external_id."""


class ModelMismatch(VoiceprintError):
    """Voiceprints (or a voiceprint and a profile) of different models cannot be compared."""


class ModelError(VoxgateError):
    """A problem with an embedding or VAD model."""


class ModelNotPrepared(ModelError):
    """The model folder is missing or does not satisfy its contract."""


class ProfileError(VoxgateError):
    """A calibration profile that is malformed or does not fit the models in use."""


class ServiceError(VoxgateError):
    """The running service cannot take this request now (not an error of the request itself)."""


class NotRunning(ServiceError):
    """A part of the runtime is not running: the server is starting or stopping."""


class MaintenanceMode(ServiceError):
    """Maintenance mode is on: new streams, enroll, verify and import are refused."""


class NotInMaintenance(ServiceError):
    """The operation replaces the store (a restore), so it waits for maintenance mode."""
