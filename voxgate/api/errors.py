"""The one place that maps domain exceptions to HTTP status codes and a JSON ``detail``.

Nothing a client can send may become a 500: every error voxgate raises on purpose has a status here,
and request validation errors keep FastAPI's 422 shape.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from voxgate import errors, streams
from voxgate.api.websocket import protocol
from voxgate.evaluation import datasets, trials
from voxgate.service import bots, calibration, cluster, shared, telephony, webhooks
from voxgate.store import backup, pbx, snapshots, subscriptions
from voxgate.store import profiles as store_profiles
from voxgate.telephony import agent, calls, digest, sdp
from voxgate.telephony.sip import message

log = logging.getLogger(__name__)


class Detail(BaseModel):
    """The body of every error response."""

    detail: str = Field(description="What went wrong, for a human.", examples=["invalid or expired token"])


def error_response(description: str, example: str) -> dict[str, Any]:
    """An OpenAPI ``responses`` entry: the ``{"detail": ...}`` error shape with an example."""
    return {
        "model": Detail,
        "description": description,
        "content": {"application/json": {"example": {"detail": example}}},
    }


class ApiError(errors.VoxgateError):
    """An error that only makes sense at the HTTP edge (auth, request shape, body size, rate)."""

    status_code = 400

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers or {}


class BadRequest(ApiError):
    status_code = 400


class Unauthorized(ApiError):
    status_code = 401


class Forbidden(ApiError):
    """The caller may not do this from where it is (e.g. a password reset from another machine)."""

    status_code = 403


class PayloadTooLarge(ApiError):
    status_code = 413


class TooManyRequests(ApiError):
    status_code = 429


# Every domain error voxgate raises, and its status. A class not listed takes its nearest listed base's
# status; a test walks every subclass of VoxgateError and fails on one that is not listed itself.
STATUS: dict[type[errors.VoxgateError], int] = {
    errors.VoxgateError: 400,
    # audio
    errors.AudioError: 400,
    errors.EmptyAudio: 400,
    errors.CorruptAudio: 400,
    errors.MultiChannelAudio: 400,
    errors.BadSampleRate: 400,
    errors.UnsupportedAudio: 415,
    errors.AudioTooLarge: 413,
    errors.AudioTooLong: 413,
    errors.InsufficientSpeech: 400,
    # voiceprints
    errors.VoiceprintError: 400,
    errors.VoiceprintNotFound: 404,
    errors.VoiceprintExists: 409,
    errors.ModelMismatch: 409,
    # models and calibration profiles
    errors.ModelError: 503,
    errors.ModelNotPrepared: 503,
    errors.ProfileError: 400,
    store_profiles.ProfileNotFound: 404,
    store_profiles.ProfileExists: 409,
    store_profiles.ProfileInUse: 409,
    # the running service
    errors.ServiceError: 503,
    errors.NotRunning: 503,
    errors.MaintenanceMode: 423,
    errors.NotInMaintenance: 409,
    cluster.OwnerUnreachable: 502,
    shared.SharedStateUnavailable: 503,
    # live streams
    streams.StreamError: 400,
    streams.StreamNotFound: 404,
    streams.StreamClosed: 404,
    streams.StreamExists: 409,
    streams.StreamCapacity: 503,
    # snapshots, backups, subscriptions
    snapshots.SnapshotError: 400,
    snapshots.DocumentTooLarge: 413,
    backup.BackupError: 400,
    subscriptions.SubscriptionExists: 409,
    subscriptions.SubscriptionNotFound: 404,
    webhooks.TargetNotAllowed: 400,
    # voice bots
    bots.ActivityError: 400,
    bots.BadParameter: 400,
    # telephony
    pbx.PbxNotFound: 404,
    telephony.PbxStartFailed: 400,
    calls.NoRtpPort: 503,
    sdp.SdpError: 400,
    digest.DigestError: 400,
    message.SipParseError: 400,
    agent.SipError: 502,
    agent.TransactionTimeout: 504,
    agent.RegistrationFailed: 502,
    # the WebSocket protocol (answered on the socket, listed for completeness)
    protocol.ProtocolError: 400,
    # evaluation (CLI)
    datasets.DatasetError: 400,
    calibration.CalibrationJobNotFound: 404,
    trials.TrialsError: 400,
}


def status_for(exc: errors.VoxgateError) -> int:
    if isinstance(exc, ApiError):
        return exc.status_code
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


NO_ROUTE = "(no route)"


async def _record_error(request: Request, status: int, detail: str) -> None:
    """Every refused request is an event too (auth failures included), so operators can see them; folded
    under load: at most one ``error`` event per (status, method, route template, client address) per
    second, its ``count`` saying how many refusals it stands for (``voxgate.service.folding.FoldedEvents``). A flood of 404s
    costs one event a second, not one transaction per request, and every refusal is still counted."""
    from voxgate.store import events

    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        return
    route = getattr(request.scope.get("route"), "path", None) or NO_ROUTE
    client = request.client.host if request.client is not None else None
    path, method = request.url.path, request.method
    try:
        refusals = runtime.refusals
        if refusals is not None:
            key = (status, method, route, client)
            refusals.record(
                key, str(status), method=method, path=path, route=route, client=client, detail=detail
            )
        else:  # the runtime is starting or stopping
            await events.record(
                runtime.store.sessions,
                events.ERROR,
                str(status),
                method=method,
                path=path,
                route=route,
                client=client,
                detail=detail,
                count=1,
            )
    except Exception:  # an unwritable event log must not turn a 4xx into a 500
        log.exception("could not record an error event")


async def _voxgate_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.VoxgateError)
    status = status_for(exc)
    if status >= 500:
        log.error("request failed: %s", exc, extra={"path": request.url.path})
    await _record_error(request, status, exc.message)
    headers = exc.headers if isinstance(exc, ApiError) else None
    return JSONResponse({"detail": exc.message}, status_code=status, headers=headers)


def _json_safe(value: Any) -> Any:
    """Validation errors echo the client's input; NaN, infinities and odd objects must not break JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    await _record_error(request, 422, "request validation failed")
    return JSONResponse(
        {"detail": _json_safe(jsonable_encoder(exc.errors(), custom_encoder={float: _json_safe}))}, 422
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.VoxgateError, _voxgate_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
