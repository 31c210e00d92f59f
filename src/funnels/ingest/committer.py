"""Group commit: ingest requests that arrive while a transaction is being written share the next one.

How it works: a request hands its items to `submit` and awaits a future. One thread takes everything queued
so far (up to `max_items`), commits it in one transaction through the `commit` function it was given, and
resolves each request's future with its own slice of the results, in arrival order. An idle server
commits each request at once (a batch of one, no added wait); a busy one commits several requests per
transaction, so the per-transaction costs (BEGIN, the fsync at COMMIT, the batch's lookups) are shared and
the cost per event falls as load rises instead of requests queueing behind one another.

Pacing: transactions start at most every `min_interval_s` (5 ms). A request that arrives while the last
transaction started longer ago than that is committed at once; one that arrives sooner waits for the rest
of the interval, together with everything else that arrives meanwhile. So a light load sees no added wait,
and a heavy one (500 single-event requests/s) shares each transaction between a few requests: a single-event
transaction costs ~1 ms of CPU, five events in one ~0.3 ms each (`bench/automation.py`, docs/benchmarks.md).

While the thread is not running (before `start`, after `stop`, in tests without an app lifespan) `submit`
commits its request alone in a worker thread. If a shared transaction fails, each request in it is retried alone, so one request's failure is reported
to that request only. A request is acknowledged only after its transaction has committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio.to_thread

from funnels.background import BackgroundLoop

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Request(Generic[Item, Result]):
    items: Sequence[Item]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[Result]]


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the client went away and its handler was cancelled; the items are committed
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class GroupCommitter(BackgroundLoop, Generic[Item, Result]):
    """Commits queued requests' items together; `submit` while it runs (`start`/`stop`)."""

    thread_name = "funnels-ingest"

    def __init__(
        self,
        commit: Callable[[Sequence[Item]], list[Result]],
        max_items: int = 5_000,
        min_interval_s: float = 0.005,
    ) -> None:
        self.commit = commit  # one transaction; returns one result per item, in order
        self.max_items = max_items
        self.min_interval_s = min_interval_s  # between the starts of two transactions
        self._queue: deque[_Request[Item, Result]] = deque()
        self._lock = threading.Lock()
        self._accepting = False  # set while the thread runs and will still drain the queue
        super().__init__()

    def start(self) -> None:
        self._accepting = True
        super().start()

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        """The items' results once they are committed (the commit's exception if that failed)."""
        loop = asyncio.get_running_loop()
        request: _Request[Item, Result] = _Request(items, loop, loop.create_future())
        with self._lock:
            accepted = self._accepting
            if accepted:
                self._queue.append(request)
        if not accepted:
            return await anyio.to_thread.run_sync(self.commit, items)
        self.wake()
        return await request.future

    def _take(self) -> list[_Request[Item, Result]]:
        """The oldest queued requests, up to `max_items` items (always at least one request)."""
        taken: list[_Request[Item, Result]] = []
        count = 0
        with self._lock:
            while self._queue and (not taken or count + len(self._queue[0].items) <= self.max_items):
                request = self._queue.popleft()
                taken.append(request)
                count += len(request.items)
            if not taken and self._stop.is_set():
                self._accepting = False  # later submits commit on their own
        return taken

    def _run(self) -> None:
        last_start = -self.min_interval_s
        while True:
            if self._queue and not self._stop.is_set():
                # Busy: requests arriving within the interval join this transaction.
                self._stop.wait(last_start + self.min_interval_s - time.monotonic())
            batch = self._take()
            if not batch:
                if not self._accepting:
                    return  # stop() waited for the queue to drain: nothing submitted is dropped
                self._wake.wait()
                self._wake.clear()
                continue
            last_start = time.monotonic()
            self._commit(batch)

    def _commit(self, batch: list[_Request[Item, Result]]) -> None:
        try:
            results = self.commit([item for request in batch for item in request.items])
        except Exception as error:
            if len(batch) == 1:
                self._answer(batch[0], None, error)
                return
            log.warning("a shared ingest transaction failed (%r); committing its requests one by one", error)
            for request in batch:
                self._commit([request])
            return
        start = 0
        for request in batch:
            self._answer(request, results[start : start + len(request.items)], None)
            start += len(request.items)

    @staticmethod
    def _answer(request: _Request[Item, Result], result: Any, error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # a closed event loop: nobody waits for the answer
            request.loop.call_soon_threadsafe(_resolve, request.future, result, error)
