"""One embedded chDB event store per test process, emptied between tests (issue 16, item 6).

chDB starts one embedded server per process, on one directory, and starting it and creating the schema cost
each test ~0.35 s. So the `services` fixture (tests/conftest.py) and the automation tests' `open_world` take
the process's shared store (`SHARED.acquire`), and after each test `SHARED.reset` returns it to what a new
store holds:

- whatever a test added to the store's database is dropped (the memberships' tables and dictionary of
  `aggregate_by`, which a new store makes on first use; the health check's table; anything else), every
  table is emptied (events, identity links, keys by user, anything a test made), the persons dictionary is
  reloaded from the now empty links, merges are started again;
- the store object forgets what it remembered (`EventStore.forget`: links known, dictionary generations and
  loads, the memberships' loads);
- then it is checked: the same tables, views and dictionaries, each with its creating statement, as when the
  store was new, no rows in any of them, no other databases and the session's settings as they were. A store
  that fails any check (or whose reset raised) is closed and the next test gets a new one in a new directory:
  a test never sees another test's data.

A test that opens an embedded store of its own (a `Services.open` on its data directory, a `ChdbEventStore`,
clickhouse-connect's chDB interface, the CLI in this process) would be refused by chDB while the shared one is
open on another directory: every chDB connection in this process goes through `connecting`
(`install_release_guard`, from tests/conftest.py), which closes the shared store first, so the next test that
needs it reopens it. Only the embedded backend is shared (`FUNNELS_TEST_EVENTS` unset); the clickhouse-connect
pass opens a store per test as before.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import pytest
from chdb.state import sqlitelike

from funnels.store.chdb_events import ChdbEventStore

Fingerprint = dict[str, Any]

_OBJECTS = (
    "SELECT name, engine, create_table_query FROM system.tables WHERE database = currentDatabase() "
    "ORDER BY name"
)
_VIEWS = ("View", "MaterializedView", "LiveView", "WindowView")


def _fingerprint(store: ChdbEventStore) -> Fingerprint:
    """What a test could change in the store besides rows: its objects (each with its statement), the
    databases, the session's settings (all of them, hashed: a setting put back to its default compares
    equal), the SQL functions a test defined."""
    query = store.query
    return {
        "objects": [tuple(row) for row in query(_OBJECTS).rows],
        "databases": [row[0] for row in query("SELECT name FROM system.databases ORDER BY name").rows],
        "settings": query(
            "SELECT cityHash64(groupArray((name, value))) FROM (SELECT name, value FROM system.settings "
            "ORDER BY name)"
        ).rows,
        "functions": query("SELECT count() FROM system.user_defined_functions").rows,
    }


def _holds_rows(store: ChdbEventStore) -> bool:
    """Whether any table or dictionary of the store's database holds a row (the reset's check: the row
    counts tables keep, so it costs no scan)."""
    tables = "SELECT count() FROM system.tables WHERE database = currentDatabase() AND total_rows != 0"
    dictionaries = (
        "SELECT count() FROM system.dictionaries WHERE database = currentDatabase() AND element_count != 0"
    )
    return any(store.query(sql).first() != [0] for sql in (tables, dictionaries))


def stored_rows(store: ChdbEventStore) -> dict[str, int]:
    """Every table, view and dictionary of the store's database with its row count (the isolation test's
    check, and the reset's)."""
    counts: dict[str, int] = {}
    for name, engine in store.query(
        "SELECT name, engine FROM system.tables WHERE database = currentDatabase() ORDER BY name"
    ).rows:
        if engine == "MaterializedView":  # its rows are its target table's (`TO ...`), counted there
            continue
        row = store.query(f"SELECT count() FROM `{name}`").first()
        counts[str(name)] = int(row[0]) if row else -1
    return counts


class SharedEvents:
    """The process's shared embedded event store (None until a test needs it, and after a release)."""

    def __init__(self) -> None:
        self.store: ChdbEventStore | None = None
        self._pristine: Fingerprint = {}
        self.opened = 0  # how many stores this process opened (a reset that fails a check opens another)

    def acquire(self, factory: pytest.TempPathFactory) -> ChdbEventStore:
        """The shared store, opened in a new directory when there is none."""
        if self.store is None:
            store = ChdbEventStore(factory.mktemp("shared-events") / "events")
            self._pristine = _fingerprint(store)
            self.store = store
            self.opened += 1
        return self.store

    def release(self) -> None:
        """Close the shared store (its directory is left behind with its data: a new one is made next)."""
        store, self.store = self.store, None
        if store is not None:
            store.close()

    def reset(self) -> None:
        """Return the shared store to what it was when new (see the module's docstring), or release it."""
        store = self.store
        if store is None:
            return
        try:
            clean = self._empty(store)
        except Exception:
            clean = False
        if not clean:
            self.release()

    def _empty(self, store: ChdbEventStore) -> bool:
        pristine = {name: engine for name, engine, _ in self._pristine["objects"]}
        with store.groups_lock:  # no memberships load meanwhile (none should run: the test is over)
            store.execute("SYSTEM START MERGES events")  # an import stops them for its load
            objects = store.query(_OBJECTS).rows
            added = [(str(name), str(engine)) for name, engine, _ in objects if name not in pristine]
            # Dictionaries first (they read tables), then views (they feed tables), then tables.
            for name, engine in sorted(
                added, key=lambda item: (item[1] != "Dictionary", item[1] not in _VIEWS)
            ):
                kind = "DICTIONARY" if engine == "Dictionary" else "VIEW" if engine in _VIEWS else "TABLE"
                store.execute(f"DROP {kind} IF EXISTS `{name}` SYNC")
            for name, engine in pristine.items():
                if engine != "Dictionary" and engine not in _VIEWS:
                    store.execute(f"TRUNCATE TABLE IF EXISTS `{name}` SYNC")
            for name, engine in pristine.items():
                if engine == "Dictionary":  # loaded from the emptied links: as a new store's first load
                    store.execute(f"SYSTEM RELOAD DICTIONARY `{name}`")
        store.forget()
        return _fingerprint(store) == self._pristine and not _holds_rows(store)


SHARED = SharedEvents()


def _path_of(connection_string: str) -> str:
    path = connection_string.split("?", 1)[0]
    path = path.removeprefix("file:")
    return os.path.realpath(path) if path and path != ":memory:" else path


def connecting(connection_string: str) -> None:
    """Before chDB connects this process to `connection_string`: release the shared store when the
    connection is to another directory (chDB would refuse it while the shared one is open)."""
    store = SHARED.store
    if store is not None and _path_of(connection_string) != os.path.realpath(store.path):
        SHARED.release()


def install_release_guard() -> None:
    """Route every chDB connection this process makes (chDB's sessions, clickhouse-connect's chDB
    interface: both are `chdb.state.sqlitelike.Connection`s) through `connecting` first."""
    original = sqlitelike.Connection.__init__
    if getattr(original, "_releases_shared_events", False):
        return

    @functools.wraps(original)
    def init(self: sqlitelike.Connection, connection_string: str, *args: Any, **kwargs: Any) -> None:
        connecting(connection_string)
        original(self, connection_string, *args, **kwargs)

    init._releases_shared_events = True  # type: ignore[attr-defined]
    sqlitelike.Connection.__init__ = init  # type: ignore[method-assign]
