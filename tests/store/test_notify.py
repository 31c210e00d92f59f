"""Job wake-ups across processes: PostgreSQL's NOTIFY reaches listeners on commit only, and a listener
that loses its connection comes back; on SQLite both ends do nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from funnels.store import outbox
from funnels.store.notify import WAKE_WITHIN_MS, JobListener, notify_jobs
from funnels.store.state import StateStore
from tests.store.test_outbox import NOW, new_job


class Wakes:
    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    def wait(self, timeout: float) -> bool:
        woken = self.event.wait(timeout)
        self.event.clear()
        return woken


@contextmanager
def listening(state: StateStore) -> Iterator[tuple[JobListener, Wakes]]:
    """A started `JobListener` on the store, counting its wake-ups; stopped afterwards."""
    wakes = Wakes()
    job_listener = JobListener(state, wakes, poll_s=0.1)
    job_listener.start()
    try:
        yield job_listener, wakes
    finally:
        job_listener.stop()


@pytest.fixture
def listener(state: StateStore) -> Iterator[tuple[JobListener, Wakes]]:
    with listening(state) as started:
        yield started


def test_a_committed_notify_wakes_the_listener_and_a_rolled_back_one_does_not(
    state: StateStore, listener: tuple[JobListener, Wakes]
) -> None:
    job_listener, wakes = listener
    if state.dialect == "sqlite":
        assert not job_listener.enabled
        with state.write() as connection:
            notify_jobs(connection)  # nothing to do: serve wakes its delivery process through a pipe
        assert not wakes.wait(0.3)
        return
    assert job_listener.listening.wait(10)
    with pytest.raises(RuntimeError), state.write() as connection:
        notify_jobs(connection)
        raise RuntimeError("rolled back")
    assert not wakes.wait(0.5)
    with state.write() as connection:
        notify_jobs(connection)
        assert not wakes.wait(0.3)  # not before the commit …
    assert wakes.wait(5)  # … but once it is in
    assert wakes.count == 1


def test_a_listener_whose_connection_is_lost_listens_again(postgres_url: str) -> None:
    state = StateStore(postgres_url)
    try:
        with listening(state) as (job_listener, wakes):
            assert job_listener.listening.wait(10)
            with state.write() as connection:
                terminated = connection.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'funnels-listen'"
                    " AND datname = current_database()"
                ).scalars()
                assert list(terminated) == [True]
            for _ in range(100):  # it notices, pauses briefly and listens again
                if job_listener.listening.wait(0.1):
                    with state.write() as connection:
                        notify_jobs(connection)
                    if wakes.wait(0.5):
                        break
            assert wakes.count >= 1
    finally:
        state.close()


def test_scheduling_wakes_the_workers_only_for_a_job_due_soon(postgres_url: str) -> None:
    """A reminder due in three days needs no wake-up of every worker: their polls (every 0.5 s at most)
    find it long before it is due. One due within `WAKE_WITHIN_MS` does."""
    state = StateStore(postgres_url)
    try:
        with listening(state) as (job_listener, wakes):
            assert job_listener.listening.wait(10)
            created = new_job("x").created_ms
            for key, due in [
                ("in-3-days", NOW + 3 * 86_400_000),
                ("just-too-late", created + WAKE_WITHIN_MS + 1),
            ]:
                with state.write() as connection:
                    assert outbox.schedule(connection, [new_job(key, due=due)])
                assert not wakes.wait(0.5), key
            with state.write() as connection:
                outbox.schedule(connection, [new_job("now"), new_job("in-4-days", due=NOW + 4 * 86_400_000)])
            assert wakes.wait(5)
            with state.write() as connection:
                assert outbox.schedule(connection, [new_job("now")]) == {}  # not written again: no wake-up
            assert not wakes.wait(0.5)
            assert wakes.count == 1
    finally:
        state.close()
