"""Table definitions. Portable SQL only: the same schema runs on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
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
