"""One process-wide budget for request bytes held in memory.

How it works: whatever buffers a request body (the idempotency middleware, `api.deps.read_json`, the
sign-in form) takes each chunk from the app's `BodyBudget` as it arrives and gives everything back when
it is done with the body. A chunk that would take the total over the budget is refused: the request gets
503 SERVICE_UNAVAILABLE with `Retry-After`, so a client (every Segment SDK does) retries a moment later,
instead of the server growing without bound under many big bodies at once.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from funnels.api.errors import ApiError

# Room for several of the largest bodies any endpoint reads (5 MB of events, 24 MB buffered under an
# Idempotency-Key) at once, far below what a server is given.
MAX_BUFFERED_BYTES = 128 * 1024 * 1024
RETRY_AFTER_SECONDS = 1


class BodyBudget:
    """How many request bytes are buffered now (`in_use`), the most ever (`peak`), and the cap."""

    def __init__(self, capacity: int = MAX_BUFFERED_BYTES) -> None:
        self.capacity = capacity
        self.in_use = 0
        self.peak = 0
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        """Reserve `size` bytes; False (and nothing reserved) when that would exceed the capacity."""
        with self._lock:
            if self.in_use + size > self.capacity:
                return False
            self.in_use += size
            self.peak = max(self.peak, self.in_use)
            return True

    def give_back(self, size: int) -> None:
        with self._lock:
            self.in_use -= size


def over_budget() -> ApiError:
    """The error a request gets when its body does not fit in the budget."""
    return ApiError(
        "SERVICE_UNAVAILABLE",
        "The server is buffering as many request bodies as it allows; retry shortly.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


class Holding:
    """The bytes one request holds of the budget; `add` raises `over_budget()` when the budget is spent."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.size = 0

    def add(self, size: int) -> None:
        if not self.budget.take(size):
            raise over_budget()
        self.size += size


@asynccontextmanager
async def holding(budget: BodyBudget) -> AsyncIterator[Holding]:
    """A `Holding` that gives its bytes back when the block ends, however it ends."""
    held = Holding(budget)
    try:
        yield held
    finally:
        budget.give_back(held.size)
