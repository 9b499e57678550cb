"""Voiceprint repository: a voiceprint row and its embeddings are written in one transaction, whole."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from voxgate.biometrics.voiceprint import Embedding, Voiceprint
from voxgate.errors import VoiceprintError, VoiceprintExists, VoiceprintNotFound
from voxgate.store.cache import TtlCache
from voxgate.store.db import unstorable
from voxgate.store.tables import EmbeddingRow, VoiceprintRow

MAX_EXTERNAL_ID = 256


@dataclass(frozen=True)
class StoredVoiceprint:
    external_id: str
    created: datetime
    voiceprint: Voiceprint
    source: dict[str, Any]


def check_external_id(external_id: str) -> str:
    if not external_id or len(external_id) > MAX_EXTERNAL_ID:
        raise ValueError(f"external_id must be 1 to {MAX_EXTERNAL_ID} characters long")
    if "\x00" in external_id:  # PostgreSQL cannot keep one; snapshots and backups refuse it on either store
        raise VoiceprintError("external_id must not contain NUL characters")
    return external_id


def _to_stored(row: VoiceprintRow) -> StoredVoiceprint:
    embeddings = {
        e.model_id: Embedding.from_bytes(e.model_id, e.model_version, e.vector) for e in row.embeddings
    }
    created = row.created if row.created.tzinfo else row.created.replace(tzinfo=UTC)
    return StoredVoiceprint(row.external_id, created, Voiceprint(embeddings, row.speech_s), dict(row.source))


async def add(
    sessions: async_sessionmaker[AsyncSession],
    external_id: str,
    voiceprint: Voiceprint,
    source: dict[str, Any],
    *,
    replace: bool = False,
) -> StoredVoiceprint:
    check_external_id(external_id)
    try:
        return await _add(sessions, external_id, voiceprint, source, replace=replace)
    finally:
        forget_cached()


async def _add(
    sessions: async_sessionmaker[AsyncSession],
    external_id: str,
    voiceprint: Voiceprint,
    source: dict[str, Any],
    *,
    replace: bool,
) -> StoredVoiceprint:
    async with sessions() as session, session.begin():
        existing = await session.scalar(select(VoiceprintRow).where(VoiceprintRow.external_id == external_id))
        if existing is not None:
            if not replace:
                raise VoiceprintExists(f"a voiceprint for external_id {external_id!r} already exists")
            await session.delete(existing)
            await session.flush()
        row = VoiceprintRow(
            external_id=external_id,
            created=datetime.now(UTC),
            speech_s=voiceprint.speech_s,
            source=source,
            embeddings=[
                EmbeddingRow(
                    model_id=e.model_id,
                    model_version=e.model_version,
                    dimension=e.dimension,
                    vector=e.to_bytes(),
                )
                for e in voiceprint.embeddings.values()
            ],
        )
        session.add(row)
        try:
            await session.flush()
        except IntegrityError as exc:  # a concurrent writer won the race
            raise VoiceprintExists(f"a voiceprint for external_id {external_id!r} already exists") from exc
        return _to_stored(row)


_cache: TtlCache[tuple[int, str], StoredVoiceprint] = TtlCache()


def forget_cached() -> None:
    """Drop cached voiceprints (after any write: enroll, delete, snapshot import, restore)."""
    _cache.clear()


async def get(sessions: async_sessionmaker[AsyncSession], external_id: str) -> StoredVoiceprint:
    """The stored voiceprint (cached briefly: verify polls read the same one twice a second)."""
    key = (id(sessions), external_id)
    cached = _cache.get(key)
    if cached is not None:
        return cached
    async with sessions() as session:
        row = None
        if not unstorable(session, external_id):
            row = await session.scalar(select(VoiceprintRow).where(VoiceprintRow.external_id == external_id))
        if row is None:
            raise VoiceprintNotFound(f"no voiceprint for external_id {external_id!r}")
        stored = _to_stored(row)
    _cache.put(key, stored)
    return stored


async def delete(sessions: async_sessionmaker[AsyncSession], external_id: str) -> None:
    try:
        async with sessions() as session, session.begin():
            row = None
            if not unstorable(session, external_id):
                row = await session.scalar(
                    select(VoiceprintRow).where(VoiceprintRow.external_id == external_id)
                )
            if row is None:
                raise VoiceprintNotFound(f"no voiceprint for external_id {external_id!r}")
            await session.delete(row)
    finally:
        forget_cached()


async def count(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(VoiceprintRow)) or 0)


@dataclass(frozen=True)
class VoiceprintSummary:
    """A voiceprint's row without its vectors: what a listing shows."""

    external_id: str
    created: datetime
    speech_s: float
    source: dict[str, Any]


async def search(
    sessions: async_sessionmaker[AsyncSession], prefix: str = "", limit: int = 50
) -> tuple[list[VoiceprintSummary], int]:
    """Voiceprints whose external_id starts with ``prefix`` (``%`` and ``_`` are plain characters),
    newest first, at most ``limit``; and how many match in all. No vector is read."""
    match = VoiceprintRow.external_id.startswith(prefix, autoescape=True)
    async with sessions() as session:
        if unstorable(session, prefix):
            return [], 0
        total = int(await session.scalar(select(func.count()).select_from(VoiceprintRow).where(match)) or 0)
        rows = await session.execute(
            select(
                VoiceprintRow.external_id, VoiceprintRow.created, VoiceprintRow.speech_s, VoiceprintRow.source
            )
            .where(match)
            .order_by(VoiceprintRow.created.desc(), VoiceprintRow.id.desc())
            .limit(limit)
        )
        found = [
            VoiceprintSummary(
                external_id,
                created if created.tzinfo else created.replace(tzinfo=UTC),
                speech_s,
                dict(source),
            )
            for external_id, created, speech_s, source in rows
        ]
    return found, total


async def with_prefix(
    sessions: async_sessionmaker[AsyncSession], prefix: str, limit: int = 1000
) -> list[StoredVoiceprint]:
    """The voiceprints whose external_id starts with ``prefix`` (a voice bot's speakers), by external_id."""
    async with sessions() as session:
        if unstorable(session, prefix):
            return []
        rows = await session.scalars(
            select(VoiceprintRow)
            .where(VoiceprintRow.external_id.startswith(prefix, autoescape=True))
            .order_by(VoiceprintRow.external_id)
            .limit(limit)
        )
        return [_to_stored(row) for row in rows]
