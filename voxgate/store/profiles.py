"""Calibration profiles (ASPs) in the store, and which one is active.

A stored profile is the canonical document of a :class:`CalibrationProfile` (its content hash checked on
the way in), a uuid, a name and whether it ships with voxgate. At most one profile is *active* (the
``active_profile`` setting holds its uuid): it then scores every verification, whatever the channel.
With none active, scoring is automatic: ``default_spec`` (``auto``: the shipped telephone profile for
audio at ≤ 8 kHz, the wideband one above).

The shipped profiles are inserted on every start (those missing, by content hash) so a fresh store lists
them. They cannot be deleted (the next start would bring them back); the active profile cannot either.
"""

from __future__ import annotations

import json
import uuid as uuid_module
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from voxgate.biometrics.profile import (
    CalibrationProfile,
    Channel,
    refuse_constant,
    resolve_profile,
    shipped_profile,
    shipped_profiles,
)
from voxgate.errors import ModelMismatch, ProfileError
from voxgate.store import settings_kv
from voxgate.store.cache import TtlCache
from voxgate.store.db import unstorable
from voxgate.store.snapshots import ModelSpec
from voxgate.store.tables import ProfileRow, SettingRow

_PARSED_CACHE = 16  # parsed stored profiles kept in memory, by content hash
MAX_NAME = 256  # the width of profiles.name


class ProfileNotFound(ProfileError):
    """No stored profile with that uuid (or no shipped profile with that name)."""


class ProfileExists(ProfileError):
    """A profile with the same content hash is already stored."""


class ProfileInUse(ProfileError):
    """The profile is active or shipped and cannot be deleted."""


@dataclass(frozen=True)
class ProfileInfo:
    uuid: str
    name: str
    channel: str
    model: str  # e.g. "ecapa+campplus"
    content_hash: str
    created: str  # when the profile was fitted (from its document)
    stored: datetime  # when it entered this store
    shipped: bool
    active: bool


def _info(row: ProfileRow, active_uuid: str | None) -> ProfileInfo:
    document = row.document
    stored = row.created if row.created.tzinfo else row.created.replace(tzinfo=UTC)
    return ProfileInfo(
        uuid=row.uuid,
        name=row.name,
        channel=str(document.get("channel", "")),
        model=str(document.get("model", "")),
        content_hash=row.content_hash,
        created=str(document.get("created", "")),
        stored=stored,
        shipped=bool(row.shipped),
        active=row.uuid == active_uuid,
    )


def check_fits(profile: CalibrationProfile, expected: Mapping[str, ModelSpec]) -> None:
    """A profile scores with models (and versions, dimensions) the engine runs; ModelMismatch otherwise."""
    engine = ", ".join(f"{m.model_id} ({m.version})" for m in expected.values())
    for term in profile.terms:
        spec = expected.get(term.model_id)
        if spec is None:
            raise ModelMismatch(
                f"profile {profile.name!r} scores with {term.model_id!r}, which the engine does not run "
                f"(it runs {engine})"
            )
        if term.model_version != spec.version:
            raise ModelMismatch(
                f"profile {profile.name!r} was fitted on {term.model_id} {term.model_version}, the engine "
                f"runs {spec.version}"
            )
        if term.cohort is not None and term.cohort.shape[1] != spec.dimension:
            raise ModelMismatch(
                f"profile {profile.name!r}: its {term.model_id} cohort has {term.cohort.shape[1]} "
                f"dimensions, the engine's embeddings have {spec.dimension}"
            )


def parse_upload(data: bytes) -> CalibrationProfile:
    """An uploaded profile document: valid, carrying its content hash, and matching it."""
    try:
        document = json.loads(data, parse_constant=refuse_constant)
    except RecursionError as exc:
        raise ProfileError("calibration profile nests too deeply to be a profile") from exc
    except UnicodeDecodeError as exc:
        raise ProfileError(
            "calibration profile is not UTF-8 JSON text (a profile is the JSON file `voxgate calibrate` writes)"
        ) from exc
    except json.JSONDecodeError as exc:
        raise ProfileError(f"calibration profile is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ProfileError("calibration profile must be a JSON object")
    if "hash" not in document:
        raise ProfileError(
            "calibration profile carries no content hash: upload the file `voxgate calibrate` wrote, unedited"
        )
    try:
        return CalibrationProfile.from_dict(document)
    except (OverflowError, RecursionError) as exc:  # a number too large for a float, absurd nesting
        raise ProfileError(f"malformed calibration profile: {exc}") from exc


async def _active_uuid(session: AsyncSession) -> str | None:
    value = await settings_kv.get_in(session, settings_kv.ACTIVE_PROFILE)
    return value if isinstance(value, str) else None


async def _row(session: AsyncSession, uuid: str) -> ProfileRow:
    row = None if unstorable(session, uuid) else await session.get(ProfileRow, uuid)
    if row is None:
        raise ProfileNotFound(f"no calibration profile {uuid!r}")
    return row


async def list_profiles(sessions: async_sessionmaker[AsyncSession]) -> list[ProfileInfo]:
    """Every stored profile: shipped ones first, then by name and time stored."""
    async with sessions() as session:
        active = await _active_uuid(session)
        rows = await session.scalars(
            select(ProfileRow).order_by(ProfileRow.shipped.desc(), ProfileRow.name, ProfileRow.created)
        )
        return [_info(row, active) for row in rows]


async def get_profile(
    sessions: async_sessionmaker[AsyncSession], uuid: str
) -> tuple[ProfileInfo, dict[str, Any]]:
    """A stored profile's summary and its full document."""
    async with sessions() as session:
        row = await _row(session, uuid)
        return _info(row, await _active_uuid(session)), dict(row.document)


def report_key(uuid: str) -> str:
    """The setting that holds a profile's fit report (a profile fitted by the server; travels in backups)."""
    return f"profile_report:{uuid}"


async def set_report(sessions: async_sessionmaker[AsyncSession], uuid: str, report: dict[str, Any]) -> None:
    """Keep how a profile scored the recordings it was fitted on, beside it."""
    await settings_kv.set(sessions, report_key(uuid), report)


async def get_report(sessions: async_sessionmaker[AsyncSession], uuid: str) -> dict[str, Any] | None:
    value = await settings_kv.get(sessions, report_key(uuid))
    return value if isinstance(value, dict) else None


async def get_active(sessions: async_sessionmaker[AsyncSession]) -> ProfileInfo | None:
    """The active stored profile, or None when scoring is automatic."""
    async with sessions() as session:
        active = await _active_uuid(session)
        row = None if active is None else await session.get(ProfileRow, active)
        return None if row is None else _info(row, active)


def _new_row(profile: CalibrationProfile, name: str, shipped: bool) -> ProfileRow:
    return ProfileRow(
        uuid=str(uuid_module.uuid4()),
        name=name,
        content_hash=profile.content_hash,
        document=profile.to_dict(),
        shipped=shipped,
        created=datetime.now(UTC),
    )


async def add_profile(
    sessions: async_sessionmaker[AsyncSession],
    profile: CalibrationProfile,
    *,
    name: str | None = None,
    shipped: bool = False,
) -> ProfileInfo:
    """Store a checked profile; ProfileExists if one with the same content hash is stored."""
    content_hash = profile.content_hash
    name = name or profile.name
    if len(name) > MAX_NAME or "\x00" in name:  # what the column (and so a backup) holds, on either store
        raise ProfileError(f"a calibration profile's name must be at most {MAX_NAME} characters, without NUL")
    try:
        async with sessions() as session, session.begin():
            existing = await session.scalar(
                select(ProfileRow.uuid).where(ProfileRow.content_hash == content_hash)
            )
            if existing is not None:
                raise ProfileExists(
                    f"this calibration profile is already stored as {existing} (same content hash)"
                )
            row = _new_row(profile, name, shipped)
            session.add(row)
            await session.flush()
            return _info(row, await _active_uuid(session))
    except IntegrityError as exc:  # stored concurrently
        raise ProfileExists("this calibration profile is already stored (same content hash)") from exc


async def delete_profile(sessions: async_sessionmaker[AsyncSession], uuid: str) -> ProfileInfo:
    """Remove a stored profile; the active one and shipped ones are refused with ProfileInUse."""
    async with sessions() as session, session.begin():
        row = await _row(session, uuid)
        active = await _active_uuid(session)
        if row.uuid == active:
            raise ProfileInUse(
                f"calibration profile {uuid} is active: activate another one, or unset it "
                f'(POST /api/v2/maintenance/asp/{uuid}/active with {{"active": false}}), first'
            )
        if row.shipped:
            raise ProfileInUse(
                f"calibration profile {uuid} ({row.name}) ships with voxgate and cannot be deleted"
            )
        info = _info(row, active)
        await session.delete(row)
        report = await session.get(SettingRow, report_key(row.uuid))
        if report is not None:
            await session.delete(report)
        return info


async def set_active(
    sessions: async_sessionmaker[AsyncSession], uuid: str, active: bool, expected: Mapping[str, ModelSpec]
) -> ProfileInfo | None:
    try:
        return await _set_active(sessions, uuid, active, expected)
    finally:
        forget_cached()


async def _set_active(
    sessions: async_sessionmaker[AsyncSession], uuid: str, active: bool, expected: Mapping[str, ModelSpec]
) -> ProfileInfo | None:
    """Make ``uuid`` the active profile (checked against the engine's models), or, with ``active`` false,
    unset it if it is the active one (scoring goes back to automatic). Returns the active profile."""
    async with sessions() as session, session.begin():
        row = await _row(session, uuid)
        current = await _active_uuid(session)
        if active:
            check_fits(CalibrationProfile.from_dict(row.document), expected)
            await settings_kv.set_in(session, settings_kv.ACTIVE_PROFILE, row.uuid)
            return _info(row, row.uuid)
        if current == row.uuid:
            await settings_kv.set_in(session, settings_kv.ACTIVE_PROFILE, None)
            return None
        current_row = None if current is None else await session.get(ProfileRow, current)
        return None if current_row is None else _info(current_row, current)


async def ensure_shipped_in(session: AsyncSession) -> int:
    """Insert the shipped profiles the store lacks (by content hash), in the caller's transaction."""
    stored = set(await session.scalars(select(ProfileRow.content_hash)))
    added = 0
    for name in shipped_profiles():
        profile = shipped_profile(name)
        if profile.content_hash not in stored:
            session.add(_new_row(profile, name, shipped=True))
            stored.add(profile.content_hash)
            added += 1
    await session.flush()
    return added


async def ensure_shipped(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Make the shipped profiles present in the store (idempotent); the number inserted."""
    try:
        async with sessions() as session, session.begin():
            return await ensure_shipped_in(session)
    except IntegrityError:  # another process inserted them at the same moment
        return 0


async def load_shipped(
    sessions: async_sessionmaker[AsyncSession], name: str, expected: Mapping[str, ModelSpec]
) -> ProfileInfo:
    """Store the shipped profile ``name`` if it is not stored yet, and make it the active one."""
    if name not in shipped_profiles():
        raise ProfileNotFound(
            f"no shipped calibration profile {name!r}; shipped: {', '.join(shipped_profiles())}"
        )
    profile = shipped_profile(name)
    check_fits(profile, expected)
    try:
        async with sessions() as session, session.begin():
            row = await session.scalar(
                select(ProfileRow).where(ProfileRow.content_hash == profile.content_hash)
            )
            if row is None:
                row = _new_row(profile, name, shipped=True)
                session.add(row)
                await session.flush()
            await settings_kv.set_in(session, settings_kv.ACTIVE_PROFILE, row.uuid)
            return _info(row, row.uuid)
    finally:
        forget_cached()


# -- scoring --------------------------------------------------------------------------------------------

_parsed: dict[str, CalibrationProfile] = {}  # by content hash: content-addressed, so never stale
_active: TtlCache[tuple[int, int, str], CalibrationProfile] = TtlCache()  # what scores each channel now


def forget_cached() -> None:
    """Drop the cached answer of :func:`active_profile` (after activating a profile or a restore)."""
    _active.clear()


@lru_cache(maxsize=64)
def _packaged(spec: str, sample_rate_hz: int) -> CalibrationProfile:
    return resolve_profile(spec, sample_rate_hz)


@lru_cache(maxsize=1)
def _shipped_names() -> frozenset[str]:
    return frozenset(shipped_profiles())


def _default(spec: str, sample_rate_hz: int) -> CalibrationProfile:
    # shipped profiles are package data and never change in a process; a path may, so it is read each time
    if spec == "auto" or spec in {c.value for c in Channel} or spec in _shipped_names():
        return _packaged(spec, sample_rate_hz)
    return resolve_profile(spec, sample_rate_hz)


async def active_profile(
    sessions: async_sessionmaker[AsyncSession], sample_rate_hz: int, default_spec: str = "auto"
) -> CalibrationProfile:
    """The profile that scores audio of this native rate: the active profile if one is set, otherwise
    ``default_spec`` (``auto``: the shipped telephone profile at ≤ 8 kHz, wideband above).

    Cached for ``VOXGATE_CACHE_TTL_S`` (verify polls ask twice a second per stream); a stored profile is
    parsed once per process (cached by hash).
    """
    key = (id(sessions), sample_rate_hz, default_spec)
    cached = _active.get(key)
    if cached is None:
        cached = await _active_profile(sessions, sample_rate_hz, default_spec)
        _active.put(key, cached)
    return cached


async def _active_profile(
    sessions: async_sessionmaker[AsyncSession], sample_rate_hz: int, default_spec: str
) -> CalibrationProfile:
    async with sessions() as session:
        active = await _active_uuid(session)
        if active is not None:
            content_hash = await session.scalar(
                select(ProfileRow.content_hash).where(ProfileRow.uuid == active)
            )
            if content_hash is not None:
                profile = _parsed.get(content_hash)
                if profile is None:
                    document = await session.scalar(
                        select(ProfileRow.document).where(ProfileRow.uuid == active)
                    )
                    profile = CalibrationProfile.from_dict(document or {})
                    if len(_parsed) >= _PARSED_CACHE:
                        _parsed.clear()
                    _parsed[content_hash] = profile
                return profile
    return _default(default_spec, sample_rate_hz)
