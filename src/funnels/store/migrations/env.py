"""Alembic's environment for the state store: migrations run on the connection `funnels.store.schema`
hands over in `config.attributes["connection"]`, inside its transaction (under the store's write lock).

`render_as_batch` lets a revision alter a column on SQLite (which has no ALTER COLUMN) by copying the
table; adding a column stays a plain `ALTER TABLE … ADD COLUMN`. Offline (SQL script) mode is not used.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("the state store's migrations run through funnels.store.schema, on its connection")
context.configure(
    connection=connection,
    target_metadata=context.config.attributes.get("metadata"),
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
