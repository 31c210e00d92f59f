"""Group commit: concurrent requests share transactions, each gets its own results, failures stay local."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence

import pytest

from funnels.ingest.committer import GroupCommitter


class Recorder:
    """A commit function that records each transaction's items; `hold` blocks the next commit until
    released, so requests can pile up behind it."""

    def __init__(self) -> None:
        self.transactions: list[list[str]] = []
        self.threads: set[str] = set()
        self.hold = threading.Event()
        self.held = threading.Event()
        self.hold.set()

    def __call__(self, items: Sequence[str]) -> list[str]:
        self.threads.add(threading.current_thread().name)
        if not self.hold.is_set():
            self.held.set()
            self.hold.wait(10)
        if any(item.startswith("bad") for item in items):
            raise ValueError(f"cannot commit {[i for i in items if i.startswith('bad')]}")
        self.transactions.append(list(items))
        return [f"ok:{item}" for item in items]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def committer(recorder: Recorder) -> Iterator[GroupCommitter[str, str]]:
    running: GroupCommitter[str, str] = GroupCommitter(recorder, max_items=5)
    running.start()
    yield running
    running.stop()


async def _pile_up(
    committer: GroupCommitter[str, str], recorder: Recorder, requests: list[list[str]]
) -> list[list[str] | BaseException]:
    """Submit the first request, hold its commit, queue the rest behind it, then release."""
    recorder.hold.clear()
    first = asyncio.ensure_future(committer.submit(requests[0]))
    while not recorder.held.is_set():
        await asyncio.sleep(0.001)
    rest = [asyncio.ensure_future(committer.submit(items)) for items in requests[1:]]
    await asyncio.sleep(0.01)  # let every submit reach the queue
    recorder.hold.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_requests_queued_behind_a_commit_share_the_next_one(
    committer: GroupCommitter[str, str], recorder: Recorder
) -> None:
    requests = [["a"], ["b1", "b2"], ["c"], ["d1", "d2"]]
    results = asyncio.run(_pile_up(committer, recorder, requests))
    assert results == [["ok:a"], ["ok:b1", "ok:b2"], ["ok:c"], ["ok:d1", "ok:d2"]]
    # The first commits alone; the three queued behind it (5 items, the limit) share one transaction,
    # in arrival order.
    assert recorder.transactions == [["a"], ["b1", "b2", "c", "d1", "d2"]]
    assert recorder.threads == {"funnels-ingest"}


def test_a_batch_never_exceeds_max_items_but_a_large_request_is_never_split(
    committer: GroupCommitter[str, str], recorder: Recorder
) -> None:
    requests = [["a"], ["b1", "b2", "b3"], ["c1", "c2", "c3"], [f"d{i}" for i in range(7)]]
    results = asyncio.run(_pile_up(committer, recorder, requests))
    assert [len(result) for result in results if isinstance(result, list)] == [1, 3, 3, 7]
    assert [len(transaction) for transaction in recorder.transactions] == [1, 3, 3, 7]


def test_a_failing_request_fails_alone_and_the_others_commit(
    committer: GroupCommitter[str, str], recorder: Recorder
) -> None:
    requests = [["a"], ["b"], ["bad-c"], ["d"]]
    results = asyncio.run(_pile_up(committer, recorder, requests))
    assert results[:2] == [["ok:a"], ["ok:b"]]
    assert isinstance(results[2], ValueError) and "bad-c" in str(results[2])
    assert results[3] == ["ok:d"]
    # The shared transaction failed as a whole, then each of its requests was committed on its own.
    assert recorder.transactions == [["a"], ["b"], ["d"]]


def test_without_the_thread_a_request_commits_alone_in_a_worker_thread(recorder: Recorder) -> None:
    idle: GroupCommitter[str, str] = GroupCommitter(recorder)
    assert asyncio.run(idle.submit(["x", "y"])) == ["ok:x", "ok:y"]
    assert recorder.transactions == [["x", "y"]]
    assert "funnels-ingest" not in recorder.threads


def test_stop_commits_everything_queued_first(recorder: Recorder) -> None:
    committer: GroupCommitter[str, str] = GroupCommitter(recorder)
    committer.start()

    async def scenario() -> list[list[str]]:
        recorder.hold.clear()
        first = asyncio.ensure_future(committer.submit(["a"]))
        while not recorder.held.is_set():
            await asyncio.sleep(0.001)
        queued = [asyncio.ensure_future(committer.submit([name])) for name in ("b", "c")]
        await asyncio.sleep(0.01)
        stopping = threading.Thread(target=committer.stop)
        stopping.start()
        recorder.hold.set()
        results = await asyncio.gather(first, *queued)
        stopping.join(10)
        # After stop, a submit still commits (in a worker thread) instead of waiting forever.
        results.append(await committer.submit(["late"]))
        return results

    assert asyncio.run(scenario()) == [["ok:a"], ["ok:b"], ["ok:c"], ["ok:late"]]
    assert recorder.transactions == [["a"], ["b", "c"], ["late"]]


def test_a_cancelled_request_is_still_committed_and_the_committer_goes_on(
    committer: GroupCommitter[str, str], recorder: Recorder
) -> None:
    async def scenario() -> list[str]:
        recorder.hold.clear()
        first = asyncio.ensure_future(committer.submit(["a"]))
        while not recorder.held.is_set():
            await asyncio.sleep(0.001)
        abandoned = asyncio.ensure_future(committer.submit(["gone"]))
        await asyncio.sleep(0.01)
        abandoned.cancel()  # the client disconnected while waiting
        recorder.hold.set()
        await first
        return await committer.submit(["after"])

    assert asyncio.run(scenario()) == ["ok:after"]
    # "gone" and "after" may share a transaction (both can be queued when "a" finishes).
    assert [item for transaction in recorder.transactions for item in transaction] == ["a", "gone", "after"]


def test_a_busy_committer_lets_requests_gather_for_its_interval(recorder: Recorder) -> None:
    paced: GroupCommitter[str, str] = GroupCommitter(recorder, min_interval_s=0.3)
    paced.start()

    async def scenario() -> tuple[float, list[list[str]]]:
        started = time.monotonic()
        assert await paced.submit(["a"]) == ["ok:a"]  # idle: committed at once, no wait
        first_s = time.monotonic() - started
        # Within the interval after that commit, requests wait for its end and share one transaction.
        return first_s, await asyncio.gather(*(paced.submit([item]) for item in ("b", "c", "d")))

    try:
        first_s, results = asyncio.run(scenario())
    finally:
        paced.stop()
    assert first_s < 0.2
    assert results == [["ok:b"], ["ok:c"], ["ok:d"]]
    assert recorder.transactions == [["a"], ["b", "c", "d"]]


def test_an_idle_committer_commits_each_request_at_once(recorder: Recorder) -> None:
    paced: GroupCommitter[str, str] = GroupCommitter(recorder, min_interval_s=0.05)
    paced.start()

    async def scenario() -> list[list[str]]:
        results = []
        for item in ("a", "b"):
            await asyncio.sleep(0.1)  # longer than the interval: each request finds the committer idle
            results.append(await paced.submit([item]))
        return results

    try:
        assert asyncio.run(scenario()) == [["ok:a"], ["ok:b"]]
    finally:
        paced.stop()
    assert recorder.transactions == [["a"], ["b"]]
