"""Analytics queries on the embedded store (`ChdbEventStore`, `EventStore.limited`): they run at once, beside
inserts and the health probe (no lock held for a query's length), stop at their time limit with
`QueryTimeout`, and `cancel` kills them (`QueryCancelled`, gone from `system.processes`). Real chDB, on events
enough for a funnel that runs a while (tests/slow_funnels.py); every wait is for a state in
`system.processes`, never for time to pass."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import parse_funnel_query
from funnels.events import Event
from funnels.store.chdb_events import ChdbEventStore
from funnels.store.events import QueryBudget, QueryCancelled, QueryTimeout
from tests.processes import wait_until
from tests.slow_funnels import PARAMS, START_MS, add_events

pytestmark = pytest.mark.slow  # a few million events each

USERS = 200_000  # 2M events: the funnel runs about a second here


def running(store: ChdbEventStore, budget: QueryBudget) -> int:
    """How many of the budget's queries `system.processes` lists (read on the store's own session)."""
    return store.running(budget)


class Run(threading.Thread):
    """The funnel under `budget` on a thread of its own: its answer or its error."""

    def __init__(self, store: ChdbEventStore, budget: QueryBudget) -> None:
        super().__init__(daemon=True)
        self.store, self.budget = store, budget
        self.answer: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.store.limited(self.budget):
                self.answer = run_funnel(self.store, parse_funnel_query(PARAMS))
        except BaseException as error:  # handed to the test
            self.error = error


def started(store: ChdbEventStore, budget: QueryBudget) -> Run:
    run = Run(store, budget)
    run.start()
    wait_until(lambda: running(store, budget) or run.answer or run.error, interval=0.01)
    return run


@pytest.fixture
def store(shared_events: ChdbEventStore) -> ChdbEventStore:
    add_events(shared_events, USERS)
    return shared_events


def test_two_analytics_queries_run_at_once_and_answer_as_one_alone(store: ChdbEventStore) -> None:
    alone = run_funnel(store, parse_funnel_query(PARAMS))["data"]
    first, second = QueryBudget(), QueryBudget()
    runs = [started(store, first), started(store, second)]
    both: Callable[[], bool] = lambda: running(store, first) == 1 and running(store, second) == 1  # noqa: E731
    # Both in system.processes at one moment: the second began before the first ended (with one session,
    # or the store's lock held for a query's length, the second would start only after the first).
    overlapped = both()
    for run in runs:
        run.join()
    assert overlapped, "the second query did not run while the first did"
    assert [run.answer["data"] if run.answer else run.error for run in runs] == [alone, alone]


def test_inserts_and_the_probe_do_not_wait_for_a_running_query(store: ChdbEventStore) -> None:
    budget = QueryBudget()
    run = started(store, budget)
    assert running(store, budget) == 1
    store.insert_events(
        [
            Event(
                event_id="late",
                type="track",
                event="view",
                user_key="late",
                ts_ms=START_MS,
                received_ms=START_MS,
            )
        ]
    )
    store.probe()
    row = store.query("SELECT count() FROM events WHERE event_id = 'late'").first()
    # The insert and the probe finished while the query still ran: they did not wait for it.
    still = running(store, budget)
    run.join()
    assert row == [1] and still == 1, "the insert or the probe waited for the analytics query"
    assert run.error is None and run.answer is not None


def test_a_query_past_its_time_limit_stops_with_query_timeout(store: ChdbEventStore) -> None:
    query = parse_funnel_query(PARAMS)
    elapsed = run_funnel(store, query)["statistics"]["elapsed"]
    limit = round(elapsed / 20, 3) or 0.001  # a twentieth of what the query takes
    with pytest.raises(QueryTimeout) as stopped, store.limited(QueryBudget(limit)):
        run_funnel(store, query)
    assert stopped.value.limit_seconds == limit and f"{limit:g} s" in str(stopped.value)
    with store.limited(QueryBudget(elapsed * 100)):  # under a limit it does not reach: the same answer
        assert run_funnel(store, query)["data"] == run_funnel(store, query)["data"]


def test_cancel_kills_a_running_query_and_refuses_the_budgets_next(store: ChdbEventStore) -> None:
    budget = QueryBudget()
    run = started(store, budget)
    assert running(store, budget) == 1
    store.cancel(budget)
    run.join()
    assert isinstance(run.error, QueryCancelled) and run.answer is None
    assert running(store, budget) == 0
    with pytest.raises(QueryCancelled), store.limited(budget):  # a cancelled budget runs nothing more
        store.query("SELECT 1")


def test_queries_outside_a_budget_keep_the_stores_session(shared_events: ChdbEventStore) -> None:
    """Only analytics queries take reader sessions: the store's own statements and reads see each other's
    session settings as before (an import's `SET`, the tests' checks of the session)."""
    shared_events.execute("SET max_threads = 3")
    try:
        assert shared_events.query("SELECT getSetting('max_threads')").first() == [3]
        with shared_events.limited(QueryBudget()):
            assert shared_events.query("SELECT getSetting('max_threads')").first() != [3]
    finally:
        shared_events.execute("SET max_threads = DEFAULT")
