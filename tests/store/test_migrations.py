"""The state store's migrations: the head revision's schema is `metadata`'s, revision 0001 is what the last
release before migrations wrote, and data directories of every kind open at the head (stamped when they
predate migrations, migrated once when two processes open them at once, refused when a newer release wrote
them)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, select, update

from funnels.auth import verify_key
from funnels.clock import ManualClock
from funnels.services import Services
from funnels.store import schema
from funnels.store.schema import Migration, SchemaTooNew, SchemaUnrecognised
from funnels.store.state import StateStore, action_jobs, action_specs, instance_ids, metadata, state_url
from tests.postgres import BOTH, schema_url
from tests.receivers import NETWORK, HttpReceiver

FIXTURES = Path(__file__).with_name("fixtures")
OLD_STATE = FIXTURES / "state-0af07ab.sqlite3"  # written by the release at 0af07ab (see its script)
OLD = json.loads((FIXTURES / "state-0af07ab.json").read_text())
START_MS = 1_775_001_600_000  # the fixture's clock
DAY_MS = 86_400_000


def old_data_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir(parents=True)
    shutil.copyfile(OLD_STATE, data_dir / "state.sqlite3")
    return data_dir


def differences(store: StateStore) -> list[Any]:
    """What autogenerate would write to bring the database to `metadata`: nothing, when they agree."""
    with store.read() as connection:
        return compare_metadata(MigrationContext.configure(connection), metadata)  # type: ignore[no-any-return]


def schema_of(path: Path) -> dict[str, str]:
    """Every table's and index's SQL, whitespace normalised (SQLite's own and Alembic's left out)."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    db.close()
    return {
        name: " ".join(sql.split())
        for name, sql in rows
        if name not in ("alembic_version", "sqlite_sequence")
    }


def scripted_store(target: Path | str) -> StateStore:
    """A new store brought to the head by running every revision's script (a new store is not: `upgrade`)."""
    store = StateStore(target, migrate=False)
    with store.write() as connection:
        migration = schema.upgrade(connection, store.where, metadata, run_scripts=True)
    store.revision = migration.after
    return store


def test_the_head_revision_creates_exactly_the_tables_in_metadata(state_target: Path | str) -> None:
    store = scripted_store(state_target)
    try:
        assert store.revision == schema.HEAD == schema.scripts().get_current_head() == "0007"
        assert differences(store) == []
    finally:
        store.close()


def catalog(store: StateStore) -> dict[str, Any]:
    """The schema as the database itself describes it, including what autogenerate does not compare (column
    order, defaults, partial indexes' conditions, constraint names): SQLite's stored SQL, PostgreSQL's
    catalog, with the schema's name left out."""
    with store.read() as connection:
        if store.dialect == "sqlite":
            rows = connection.exec_driver_sql(
                "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL"
            )
            return {f"{kind} {name}": " ".join(sql.split()) for kind, name, sql in rows}
        schema_name = connection.exec_driver_sql("SELECT current_schema()").scalar()
        queries = {
            "columns": "SELECT table_name, ordinal_position, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = current_schema()",
            "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()",
            "constraints": "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE connamespace = current_schema()::regnamespace",
        }
        return {
            name: sorted(tuple(str(value).replace(f"{schema_name}.", "") for value in row) for row in rows)
            for name, sql in queries.items()
            for rows in [connection.exec_driver_sql(sql)]
        }


@BOTH
def test_a_new_store_gets_exactly_the_schema_the_scripts_build(
    state_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A new store takes `metadata`'s tables at once and is stamped at the head: the same database, to the
    catalog, as running every revision's script."""
    if state_backend == "sqlite":
        targets: list[Path | str] = [tmp_path / "scripted.sqlite3", tmp_path / "new.sqlite3"]
    else:
        targets = [
            request.getfixturevalue("postgres_url"),
            schema_url(request.getfixturevalue("postgres_database")),
        ]
    scripted, new = scripted_store(targets[0]), StateStore(targets[1])
    try:
        assert new.revision == scripted.revision == schema.HEAD
        described = catalog(new)
        assert described == catalog(scripted)
        assert "action_jobs" in str(described) and "subscriptions" in str(described)  # it saw the tables
    finally:
        scripted.close()
        new.close()


def test_revision_0001_creates_exactly_what_the_release_before_migrations_created(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(schema.SCRIPTS))
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    engine.dispose()
    old = schema_of(OLD_STATE)
    assert len(old) == 21  # 11 tables, 10 indexes
    assert schema_of(path) == old


def test_a_data_directory_of_the_release_before_migrations_upgrades_in_place(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    data_dir = old_data_dir(tmp_path)
    config_path = tmp_path / "funnels.json"
    config_path.write_text(json.dumps({"models": [{"name": "customer"}], "network": NETWORK, "funnels": []}))
    clock = ManualClock(START_MS)
    svc = Services.open(data_dir, clock, config_path=config_path)
    try:
        assert svc.state.revision == schema.HEAD
        assert differences(svc.state) == []
        key = verify_key(svc.state, OLD["key"])
        assert key is not None and key.scopes == {"admin", "events:write"}
        with svc.state.read() as connection:
            jobs = connection.execute(
                select(action_jobs.c.key, action_jobs.c.status, action_jobs.c.due_ms).order_by(
                    action_jobs.c.id
                )
            ).all()
        assert [job._asdict() for job in jobs] == OLD["jobs"]
        with svc.state.read() as connection:  # 0003 numbered the ids in the order the old release wrote them
            ids = connection.execute(
                select(instance_ids.c.id_text, instance_ids.c.position).order_by(instance_ids.c.id_text)
            ).all()
        assert [tuple(row) for row in ids] == [("c1", 0), ("c1@example.com", 1)]

        # The old specs name a URL the fixture could not know: point them at this test's receiver.
        with svc.state.write() as connection:
            for spec_id, spec in connection.execute(select(action_specs.c.id, action_specs.c.spec)).all():
                moved = spec.replace("http://127.0.0.1:9/replaced-by-the-test", http_receiver.url)
                connection.execute(
                    update(action_specs).where(action_specs.c.id == spec_id).values(spec=moved)
                )
        assert svc.worker.run_until_idle() == 1  # the one due at once …
        clock.advance(3 * DAY_MS)
        assert svc.worker.run_until_idle() == 1  # … and the delayed one, 3 days later
        requests = http_receiver.wait_for(2)
        assert [(request.path, request.json) for request in requests] == [
            ("/now", {"id": "c1"}),
            ("/later", {"id": "c1"}),
        ]
        assert [request.headers["idempotency-key"] for request in requests] == [
            job["key"] for job in OLD["jobs"]
        ]
        with svc.state.read() as connection:
            statuses = connection.execute(select(action_jobs.c.status).order_by(action_jobs.c.id)).scalars()
            assert list(statuses) == ["sent", "sent"]
    finally:
        svc.close()


def test_each_kind_of_data_directory_is_recognised_and_brought_to_the_head(tmp_path: Path) -> None:
    def migrate(path: Path) -> Migration:
        store = StateStore(path, migrate=False)
        try:
            return store.migrate()
        finally:
            store.close()

    # The release before migrations: stamped 0001, then every later revision runs.
    assert migrate(old_data_dir(tmp_path / "old") / "state.sqlite3") == Migration(None, "0001", schema.HEAD)
    # The code between that release and migrations (`create_all` and the ad-hoc upgrade wrote 0002's
    # schema with no alembic_version): stamped 0002 as it is.
    session = tmp_path / "session.sqlite3"
    engine = create_engine(f"sqlite:///{session}")
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(schema.SCRIPTS))
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
        connection.exec_driver_sql("DROP TABLE alembic_version")
    engine.dispose()
    assert migrate(session) == Migration(None, "0002", schema.HEAD)
    # A new file: every revision run; then again, nothing to do.
    assert migrate(tmp_path / "new.sqlite3") == Migration(None, None, schema.HEAD)
    assert migrate(tmp_path / "new.sqlite3") == Migration(schema.HEAD, None, schema.HEAD)
    for path in (session, tmp_path / "new.sqlite3", tmp_path / "old" / "data" / "state.sqlite3"):
        store = StateStore(path)
        try:
            assert differences(store) == []
        finally:
            store.close()


def test_a_schema_that_matches_no_revision_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with sqlite3.connect(path) as db:  # some of the tables, no alembic_version
        db.execute("CREATE TABLE api_keys (id TEXT PRIMARY KEY)")
    db.close()
    with pytest.raises(SchemaUnrecognised, match="tables missing: action_attempts, action_jobs"):
        StateStore(path)


def test_a_schema_newer_than_the_code_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    StateStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = '9a9a'")
    db.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNew, match="at schema revision 9a9a, which this version of funnels does not"):
        StateStore(path)
    with pytest.raises(SchemaTooNew):
        StateStore(path, migrate=False)
    assert path.read_bytes() == before


OPENER = """
import sys
import threading
from pathlib import Path
from funnels.store.state import StateStore
store = StateStore(Path(sys.argv[1]), migrate=False)
print("ready", flush=True)
migration = store.migrate()
print(migration.before, migration.stamped, migration.after, flush=True)
store.close()
"""


@pytest.mark.process
def test_two_processes_opening_an_old_data_directory_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = old_data_dir(tmp_path) / "state.sqlite3"
    # Hold the store's write lock while both start, so both find the old schema and then wait for the turn.
    lock = os.open(path.with_name(path.name + ".write-lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    openers = [
        subprocess.Popen([sys.executable, "-c", OPENER, str(path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for opener in openers:
            assert opener.stdout is not None and opener.stdout.readline().strip() == "ready"
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(lock)
    results = []
    for opener in openers:
        assert opener.wait(30) == 0
        assert opener.stdout is not None
        results.append(opener.stdout.read().strip())
        opener.stdout.close()
    assert sorted(results) == [
        f"{schema.HEAD} None {schema.HEAD}",
        f"None 0001 {schema.HEAD}",
    ]  # one stamped and upgraded, one found it done
    store = StateStore(path)
    try:
        assert differences(store) == []
    finally:
        store.close()


def test_postgresql_nodes_starting_together_migrate_once(postgres_url: str) -> None:
    """Two stores opening one new PostgreSQL schema at once: one runs the migrations, the other waits for
    it (an advisory lock) and finds the schema at the head."""
    first = StateStore(postgres_url, migrate=False)
    second = StateStore(postgres_url, migrate=False)
    results: list[Migration] = []
    try:
        threads = [threading.Thread(target=lambda s=s: results.append(s.migrate())) for s in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted((m.before or "", m.after) for m in results) == [
            ("", schema.HEAD),
            (schema.HEAD, schema.HEAD),
        ]
        assert differences(first) == []
    finally:
        first.close()
        second.close()


def test_a_postgresql_schema_newer_than_the_code_is_refused(postgres_url: str) -> None:
    StateStore(postgres_url).close()
    engine = create_engine(state_url(postgres_url))
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9a9a'")
    engine.dispose()
    with pytest.raises(SchemaTooNew, match="at schema revision 9a9a"):
        StateStore(postgres_url)
