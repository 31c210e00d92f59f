"""The state store's write transactions: one at a time across threads and processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from funnels.store.state import StateStore, action_jobs, api_keys

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


def test_a_state_store_from_before_delivery_guarantees_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    StateStore(path).close()
    with sqlite3.connect(path) as old:  # the release before: action_jobs without the two columns
        old.execute("ALTER TABLE action_jobs DROP COLUMN lease_owner")
        old.execute("ALTER TABLE action_jobs DROP COLUMN send_started_ms")
        old.execute(
            "INSERT INTO action_jobs (key, funnel_id, step_index, action_index, action_type, model,"
            " instance_id, spec_id, event_id, event, event_properties, event_ts_ms, status, due_ms,"
            " next_ms, attempts, created_ms, updated_ms)"
            " VALUES ('k1', 'f', 0, 0, 'slack', 'customer', 1, 's', 'e1', 'hello', '{}', 1, 'scheduled',"
            " 5, 5, 0, 1, 1)"
        )
    old.close()

    store = StateStore(path)
    try:
        with store.read() as connection:
            (job,) = connection.execute(select(action_jobs)).all()
        assert (job.key, job.status, job.next_ms, job.lease_owner, job.send_started_ms) == (
            "k1",
            "scheduled",
            5,
            None,
            None,
        )
    finally:
        store.close()
    StateStore(path).close()  # opening an upgraded store again changes nothing
    with sqlite3.connect(path) as check:
        columns = [row[1] for row in check.execute("PRAGMA table_info(action_jobs)")]
    check.close()
    assert columns[-2:] == ["lease_owner", "send_started_ms"]
