"""The state store's concern modules are tested on both dialects: a real SQLite file, then a schema of the
real PostgreSQL (`tests/postgres.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from funnels.store.state import StateStore


@pytest.fixture
def state(state_target: Path | str) -> Iterator[StateStore]:
    store = StateStore(state_target)
    yield store
    store.close()
