"""Room for encrypted secrets: subscriptions.secret and pbx.password hold ``enc:v1:...`` values

The values themselves are encrypted at start by the runtime (voxgate.service.keys), not here: the key is
not the migration's to know (it comes from VOXGATE_SECRET_KEY or the key file), and the same step
re-encrypts with a new key at every rotation.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WIDTHS = {("subscriptions", "secret"): (128, 1024), ("pbx", "password"): (256, 2048)}


def _resize(grow: bool) -> None:
    for (table, column), (old, new) in WIDTHS.items():
        before, after = (old, new) if grow else (new, old)
        with op.batch_alter_table(table) as batch:  # SQLite: the table is copied
            batch.alter_column(
                column, type_=sa.String(after), existing_type=sa.String(before), existing_nullable=False
            )


def upgrade() -> None:
    _resize(grow=True)


def downgrade() -> None:
    _resize(grow=False)
