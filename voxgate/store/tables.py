"""Table definitions. Portable SQL only: the same schema runs on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class VoiceprintRow(Base):
    __tablename__ = "voiceprints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(256), unique=True, nullable=False)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    speech_s: Mapped[float] = mapped_column(Float, nullable=False)
    source: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    embeddings: Mapped[list[EmbeddingRow]] = relationship(
        back_populates="voiceprint", cascade="all, delete-orphan", lazy="selectin"
    )


class EmbeddingRow(Base):
    __tablename__ = "voiceprint_embeddings"
    __table_args__ = (UniqueConstraint("voiceprint_id", "model_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    voiceprint_id: Mapped[int] = mapped_column(
        ForeignKey("voiceprints.id", ondelete="CASCADE"), nullable=False
    )
    model_id: Mapped[str] = mapped_column(String(64), nullable=False)
    model_version: Mapped[str] = mapped_column(String(128), nullable=False)
    dimension: Mapped[int] = mapped_column(Integer, nullable=False)
    vector: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)  # little-endian float32
    voiceprint: Mapped[VoiceprintRow] = relationship(back_populates="embeddings")


class UserRow(Base):
    """The one API account (Voice Verify has exactly one); a table so a second could follow."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True, nullable=False)
    password_hash: Mapped[str] = mapped_column(String(256), nullable=False)
    password_changed: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class TokenRow(Base):
    """API tokens, stored as sha256 of the token (the token itself is shown once, at login)."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    expires: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class EventRow(Base):
    """The event log: every action and error, and the source of billing aggregates."""

    __tablename__ = "events"

    # 64-bit on both stores (one row per verify poll); SQLite's INTEGER PRIMARY KEY already is (migration 0005)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)
    type: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    stream_uuid: Mapped[str | None] = mapped_column(String(64), index=True)
    external_id: Mapped[str | None] = mapped_column(String(256), index=True)
    outcome: Mapped[str] = mapped_column(String(64), nullable=False)
    duration_s: Mapped[float | None] = mapped_column(Float)  # stream length, on stream_stop events
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)


class ProfileRow(Base):
    """Calibration profiles (ASPs) uploaded or shipped; the active one is a setting."""

    __tablename__ = "profiles"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), nullable=False)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    document: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    shipped: Mapped[bool] = mapped_column(default=False, nullable=False)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class SettingRow(Base):
    """Runtime settings that survive restarts and travel in backups (e.g. the active profile)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)


class SubscriptionRow(Base):
    """Webhook subscriptions (streams, enroll, verify)."""

    __tablename__ = "subscriptions"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(16), nullable=False)
    key: Mapped[str] = mapped_column(String(256), nullable=False, index=True)  # source_uuid or stream uuid
    external_id: Mapped[str | None] = mapped_column(String(256))
    url: Mapped[str] = mapped_column(String(2048), nullable=False)
    secret: Mapped[str] = mapped_column(String(1024), nullable=False)  # encrypted (voxgate.store.crypto)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class PbxRow(Base):
    """PBX instances voxgate registers to as a SIP endpoint; the SIP password is kept to register with
    (never returned by the API). ``started``: registered when the server starts."""

    __tablename__ = "pbx"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), nullable=False)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)  # everything but the password
    password: Mapped[str] = mapped_column(String(2048), nullable=False)  # encrypted (voxgate.store.crypto)
    started: Mapped[bool] = mapped_column(default=False, nullable=False)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
