"""The state store's write transactions: one at a time across threads and processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from funnels.store.state import StateStore, api_keys

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
