"""Wake-ups between processes that share a state store: "a job may be due now", from whoever scheduled it
to every worker.

On PostgreSQL the scheduling transaction says `NOTIFY funnels_jobs`, which the server delivers when (and
only if) that transaction commits, to every session listening on the channel, on any machine; a
`JobListener` is such a session, on a thread of its own, calling back for each notification. On SQLite
all processes are on one machine and `funnels serve` wakes its delivery process through a pipe
(`automation/process.py`), so both are no-ops there. Either way a worker also polls for due jobs, so a
lost wake-up (a listener reconnecting, say) delays a send by at most a poll interval. For the same
reason only jobs due soon wake anyone (`due_soon`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy import Connection, text

from funnels.store.state import StateStore

log = logging.getLogger(__name__)

CHANNEL = "funnels_jobs"
_NOTIFY = text(f"NOTIFY {CHANNEL}")

WORKER_POLL_S = 0.5  # the longest an idle worker waits before it looks for due jobs again (`Worker.poll_s`)
# A job due later than this needs no wake-up: a worker's poll finds it before it is due, and waits for it.
WAKE_WITHIN_MS = int(2 * WORKER_POLL_S * 1000)


def due_soon(due_ms: int, now_ms: int) -> bool:
    """Whether a job scheduled at `now_ms` for `due_ms` should wake the workers (see `WAKE_WITHIN_MS`):
    a reminder due in three days costs no wake-up of every worker, and no `NOTIFY`."""
    return due_ms <= now_ms + WAKE_WITHIN_MS


def notify_jobs(connection: Connection) -> None:
    """Tell every worker, once this transaction commits, that a job may be due now (PostgreSQL only)."""
    if connection.dialect.name == "postgresql":
        connection.execute(_NOTIFY)


class JobListener:
    """Calls `on_wake` for each `notify_jobs` committed by any process on the store (PostgreSQL); on SQLite
    it does nothing. `start()` / `stop()`; reconnects with a growing pause if the connection is lost."""

    def __init__(self, state: StateStore, on_wake: Callable[[], None], *, poll_s: float = 1.0) -> None:
        self.enabled = state.dialect == "postgresql"
        # psycopg's own URL: the store's without SQLAlchemy's driver name (the query, e.g. options, stays).
        self._url = state.url.replace("postgresql+psycopg://", "postgresql://", 1)
        self._on_wake = on_wake
        self._poll_s = poll_s  # how often the thread looks up from waiting, to notice `stop()`
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()  # set while LISTEN is in effect (tests wait on it)

    def start(self) -> None:
        if self.enabled:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="funnels-listen", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        pause_s = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._url, autocommit=True, application_name="funnels-listen"
                ) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    pause_s = 0.1
                    while not self._stop.is_set():
                        for _ in connection.notifies(timeout=self._poll_s):
                            self._on_wake()
            except psycopg.Error as error:
                log.warning(
                    "job wake-ups: listening on %s failed (%s); polling until it is back", CHANNEL, error
                )
            finally:
                self.listening.clear()
            self._stop.wait(pause_s)
            pause_s = min(pause_s * 2, 5.0)
