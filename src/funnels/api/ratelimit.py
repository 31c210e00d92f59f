"""A token bucket per client address, for the endpoints anyone may call without a key (the unsubscribe links'
pages, `web/unsubscribe.py`).

Each address has a bucket of `burst` tokens that refills at `per_second`; a request takes one, and one that
finds the bucket empty is refused (429, with `Retry-After`: when the next token is there). The address is the
TCP peer's (`request.client`): behind a reverse proxy every client shares the proxy's, so the proxy should
limit instead (funnels does not trust `X-Forwarded-For`, which any client can send). Buckets live in memory,
per process; at most `max_clients` are kept (the least recently seen go first: a full bucket is the same as
none).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self,
        burst: int,
        per_second: float,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.per_second = per_second
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client → (tokens, at)
        self._lock = threading.Lock()

    def take(self, client: str) -> float | None:
        """Take a token for `client`: None when there was one, else the seconds until there will be."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.per_second)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return None if allowed else (1.0 - tokens) / self.per_second

    @staticmethod
    def retry_after(wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))
