"""Alembic environment: runs on the connection parleyd hands it (see store.database)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from parleyd.store import tables  # noqa: F401  (registers the tables on the metadata)

target_metadata = SQLModel.metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("parleyd migrations run through parleyd.store.open_database")

context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
