"""The state store's write transactions: one at a time across threads and processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update

from funnels.store import StoreUnavailable
from funnels.store import state as state_module
from funnels.store.state import Connection, StateFileDamaged, StateStore, api_keys, state_url
from tests.receivers import free_port

HOLDER = """
import sys, time
from pathlib import Path
from sqlalchemy import insert
from funnels.store.state import StateStore, api_keys
store = StateStore(Path(sys.argv[1]))
with store.write() as connection:
    connection.execute(insert(api_keys).values(id="other", secret_hash="x", scopes="admin", name="", created_ms=1))
    print("holding", flush=True)
    time.sleep(1.0)
store.close()
"""


@pytest.mark.process
def test_a_write_waits_for_another_process_and_then_goes_ahead(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = StateStore(path)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        with store.write() as connection:  # blocks on the other process's turn (flock), then writes
            waited_s = time.monotonic() - started
            ids = set(connection.execute(select(api_keys.c.id)).scalars())
        assert holder.wait(10) == 0
    finally:
        store.close()
        assert holder.stdout is not None
        holder.stdout.close()
    assert waited_s > 0.5  # it did wait for the holder's transaction …
    assert ids == {"other"}  # … and then saw what that transaction committed
    assert (tmp_path / "state.sqlite3.write-lock").exists()


def test_writes_reuse_one_connection_and_survive_a_failed_transaction(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.sqlite3")
    try:
        with store.write() as first:
            pass
        try:
            with store.write() as connection:
                connection.exec_driver_sql("INSERT INTO no_such_table VALUES (1)")
        except Exception as error:
            assert "no_such_table" in str(error)
        with store.write() as again:
            assert again is first
            assert again.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        store.close()


def test_a_state_url_names_postgresql_or_is_refused() -> None:
    assert state_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert state_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert state_url(Path("/d/state.sqlite3")) == "sqlite:////d/state.sqlite3"
    with pytest.raises(ValueError, match="must start with postgresql://"):
        state_url("mysql://u@h/db")


def test_a_postgresql_server_that_cannot_be_reached_is_one_clear_error_without_the_password() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(StateFileDamaged) as raised:
        StateStore(f"postgresql://postgres:hunter2@127.0.0.1:{port}/db")
    message = str(raised.value)
    assert message.startswith(
        f"the state database postgresql://postgres:***@127.0.0.1:{port}/db cannot be opened"
    )
    assert "check the URL, the server and its permissions" in message
    assert "hunter2" not in message


def test_a_lost_postgresql_connection_fails_one_write_as_unavailable_and_the_next_one_works(
    postgres_url: str,
) -> None:
    store = StateStore(postgres_url)
    try:
        with (
            pytest.raises(StoreUnavailable, match="the state store cannot write: the database server"),
            store.write() as connection,
        ):
            connection.execute(
                insert(api_keys).values(id="lost", secret_hash="x", scopes="admin", created_ms=1)
            )
            connection.exec_driver_sql("SELECT pg_terminate_backend(pg_backend_pid())")
        with store.write() as connection:
            connection.execute(
                insert(api_keys).values(id="kept", secret_hash="x", scopes="admin", created_ms=1)
            )
        with store.read() as connection:
            assert set(connection.execute(select(api_keys.c.id)).scalars()) == {"kept"}
        store.probe(5)  # /healthz's write
        assert store.write_failure is None
    finally:
        store.close()


def test_a_pooled_postgresql_connection_is_pinged_only_after_sitting_idle(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One killed while idle longer than `PING_IDLE_S` is found dead by the ping and replaced, so the
    write that checks it out works; one in steady use is not pinged (no round trip per transaction)."""
    store, other = StateStore(postgres_url), StateStore(postgres_url)
    pings: list[bool] = []
    ping = store.engine.dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        try:
            pings.append(alive := ping(dbapi_connection))
        except Exception:
            pings.append(False)  # what psycopg raises for a closed connection
            raise
        return alive

    monkeypatch.setattr(store.engine.dialect, "do_ping", counted)
    try:
        with store.read() as connection:
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with store.write() as connection:  # used again at once
            assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() == pid
        assert pings == []
        with other.write() as connection:  # the pooled connection's server process goes away
            connection.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        monkeypatch.setattr(state_module, "PING_IDLE_S", 0.0)  # as if it had sat idle since
        with store.write() as connection:
            connection.execute(
                insert(api_keys).values(id="after-idle", secret_hash="x", scopes="admin", created_ms=1)
            )
            assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() != pid
        assert pings[0] is False and store.write_failure is None  # found dead, then a new one
    finally:
        store.close()
        other.close()


def test_postgresql_writers_do_not_take_turns(postgres_url: str) -> None:
    """Two write transactions open at once on PostgreSQL (SQLite would make the second wait)."""
    store = StateStore(postgres_url)
    try:
        with store.write() as first, store.write() as second:
            assert first is not second
            first.execute(insert(api_keys).values(id="a", secret_hash="x", scopes="admin", created_ms=1))
            second.execute(insert(api_keys).values(id="b", secret_hash="x", scopes="admin", created_ms=1))
        with store.read() as connection:
            assert set(connection.execute(select(api_keys.c.id)).scalars()) == {"a", "b"}
    finally:
        store.close()


def test_run_write_runs_again_the_transaction_postgresql_chose_to_abort_for_a_deadlock(
    postgres_url: str,
) -> None:
    """Two writers lock two rows in opposite orders: PostgreSQL aborts one (40P01); `run_write` runs it
    again, and both writes are in."""
    store = StateStore(postgres_url)
    with store.write() as connection:
        for key in ("a", "b"):
            connection.execute(insert(api_keys).values(id=key, secret_hash="x", scopes="admin", created_ms=0))
    both_locked_one = threading.Barrier(2, timeout=10)
    runs: list[str] = []

    def work(first: str, second: str) -> Callable[[Connection], None]:
        def run(connection: Connection) -> None:
            runs.append(first)
            connection.execute(update(api_keys).where(api_keys.c.id == first).values(name=f"by {first}"))
            if runs.count(first) == 1:  # the first time, make sure both hold a row before going on
                both_locked_one.wait()
            connection.execute(update(api_keys).where(api_keys.c.id == second).values(created_ms=1))

        return run

    try:
        threads = [
            threading.Thread(target=store.run_write, args=(work("a", "b"),)),
            threading.Thread(target=store.run_write, args=(work("b", "a"),)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        with store.read() as connection:
            rows = connection.execute(select(api_keys.c.id, api_keys.c.name, api_keys.c.created_ms)).all()
    finally:
        store.close()
    assert sorted(tuple(row) for row in rows) == [("a", "by a", 1), ("b", "by b", 1)]
    assert len(runs) == 3  # one of them ran twice
