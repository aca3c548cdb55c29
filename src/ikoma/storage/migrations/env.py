"""Alembic environment: runs on the connection `ikoma.storage.migrate` hands over."""

from __future__ import annotations

from alembic import context

from ikoma.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `ikoma db migrate` (ikoma.storage.migrate), not bare alembic")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    on_version_apply=context.config.attributes.get("on_version_apply"),
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
