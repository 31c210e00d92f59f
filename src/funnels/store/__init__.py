"""The two stores: events (ClickHouse SQL on chDB) and state (SQLite through SQLAlchemy Core)."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """A store refused a write for a reason outside the request: the disk is full or failing. Retryable:
    nothing of the refused write was kept."""

    def __init__(self, store: str, reason: str) -> None:
        self.store = store  # "state" or "events"
        self.reason = reason
        super().__init__(f"the {store} store cannot write: {reason}")
