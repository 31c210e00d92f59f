"""The state store's Alembic migrations: `env.py` and the revisions in `versions/`, run by
`funnels.store.schema` (configured in code: no alembic.ini at run time)."""
