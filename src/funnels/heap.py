"""The long-running processes' garbage collector: what they allocated to start is set aside once.

How it works: `settle()` runs one full collection and then `gc.freeze()`s every object still alive (the
imported modules, the config, SQLAlchemy's compiled statements, pydantic's validators, ...: about 200,000
objects in a `funnels serve` process, 120,000 in a worker). CPython's collector never looks at frozen
objects again, so a full (oldest-generation) collection walks only what was allocated since. Before this,
each full collection under load stopped the process for 100–265 ms, which stalled every request and
delivery in flight at that moment and set the p99 of ack → webhook; after, the longest was 4.5 ms
(bench/automation.py at 500 events/s on 2 PostgreSQL nodes, docs/benchmarks.md). Objects frozen are only
ever freed by reference counting: call it once, after start-up, in a process's main program (never in a
library or a test process, where it would keep whatever cycles are alive then for good).
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect once, then freeze what survives (see above)."""
    gc.collect()
    gc.freeze()
