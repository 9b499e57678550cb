"""events.id is 64-bit on PostgreSQL too

SQLite's INTEGER PRIMARY KEY is already 64-bit: nothing changes there. On PostgreSQL the column was
``integer`` (SERIAL): the event log takes one row per verify poll, so a busy cluster would run its sequence
past 2^31 within weeks (deleting old events does not give numbers back). The column and its sequence
become ``bigint``.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _resize(kind: type[sa.Integer]) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    old = sa.Integer() if kind is sa.BigInteger else sa.BigInteger()
    op.alter_column("events", "id", type_=kind(), existing_type=old, existing_nullable=False)
    op.execute(f"ALTER SEQUENCE IF EXISTS events_id_seq AS {'bigint' if kind is sa.BigInteger else 'integer'}")


def upgrade() -> None:
    _resize(sa.BigInteger)


def downgrade() -> None:
    _resize(sa.Integer)
