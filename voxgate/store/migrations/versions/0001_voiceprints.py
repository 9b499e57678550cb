"""voiceprints and their per-model embeddings

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "voiceprints",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("external_id", sa.String(256), nullable=False, unique=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("speech_s", sa.Float(), nullable=False),
        sa.Column("source", sa.JSON(), nullable=False),
    )
    op.create_table(
        "voiceprint_embeddings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "voiceprint_id", sa.Integer(), sa.ForeignKey("voiceprints.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("model_id", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("voiceprint_id", "model_id"),
    )


def downgrade() -> None:
    op.drop_table("voiceprint_embeddings")
    op.drop_table("voiceprints")
