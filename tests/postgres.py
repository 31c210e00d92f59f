"""The real PostgreSQL these machines run at 127.0.0.1:5432 (trust auth, user `postgres`), for the state
store's tests on its second dialect.

How it works: a test session creates its own database (`funnels_test_<random>`) and drops it at the end, so
parallel runs never meet; each test that asks for a store gets its own schema in it (the URL's
`search_path`), so tests never see each other's rows. Set `FUNNELS_TEST_POSTGRES` to another server's URL
(the database in it is where sessions create theirs from). Without a reachable server these tests fail:
they are never skipped.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

# `pytestmark = BOTH` runs a module's tests on SQLite and on PostgreSQL (through the `services` fixture).
BOTH = pytest.mark.parametrize("state_backend", ["sqlite", "postgresql"], indirect=True)

ADMIN_URL = os.environ.get("FUNNELS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _server_url(database: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """The URL of a database made for this test session (dropped, with its connections, at the end)."""
    name = f"funnels_test_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _server_url(name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def schema_url(database_url: str) -> str:
    """A URL of a new, empty schema in the session's database: a state store of its own."""
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    return f"{database_url}?options={quote(f'-csearch_path={schema}')}"


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """A state-store URL of its own for one test (a fresh schema in the session's database)."""
    return schema_url(postgres_database)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a state store lives, once per dialect: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        return tmp_path / "state.sqlite3"
    url: str = request.getfixturevalue("postgres_url")
    return url
