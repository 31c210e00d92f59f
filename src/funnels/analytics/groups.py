"""`aggregate_by=<model>`: which models a funnel may count, checked against the loaded config's.

The funnel SQL and the oracle count groups when `FunnelQuery.aggregate_by` is set (`funnels.analytics.sql`,
`funnels.analytics.reference`); the memberships they read come from `funnels.store.groups`. What is left
here is the check every entry point makes before running (the API, saved funnels, the CLI): the model must
be one the config declares. On one server and on a ClickHouse cluster alike (there the memberships are on
every node: `funnels.store.cluster`, docs/deploy.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def aggregate_by_problem(raw: Any, models: Sequence[str]) -> str | None:
    """What is wrong with `aggregate_by` (the raw parameter), or None: absent, or a declared model (any
    event store, a cluster's too)."""
    if raw is None or raw == "":
        return None
    if not models:
        return "no models are declared: aggregate_by needs a config with models (funnels serve --config)"
    if raw not in models:
        return f"must be a declared model: {', '.join(models)}"
    return None
