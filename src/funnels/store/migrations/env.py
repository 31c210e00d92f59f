"""Alembic's environment for the state store: migrations run on the connection `funnels.store.schema`
hands over in `config.attributes["connection"]`, inside its transaction (under the store's write lock).

`render_as_batch` lets a revision alter a column on SQLite (which has no ALTER COLUMN) by copying the
table; adding a column stays a plain `ALTER TABLE … ADD COLUMN`. Offline mode (`sql=True`, with
`config.attributes["dialect"]`) prints the SQL a dialect would run: the tests check the PostgreSQL one.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

config = context.config
if context.is_offline_mode():
    context.configure(dialect_name=config.attributes["dialect"], literal_binds=True, render_as_batch=True)
else:
    connection = config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("the state store's migrations run through funnels.store.schema, on its connection")
    context.configure(
        connection=connection, target_metadata=config.attributes.get("metadata"), render_as_batch=True
    )
with context.begin_transaction():
    context.run_migrations()
