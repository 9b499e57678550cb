"""Alembic environment: runs on the connection voxgate hands over (see store.db.migrate)."""

from __future__ import annotations

from alembic import context

from voxgate.store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("voxgate migrations run through voxgate.store.db.migrate()")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
