"""The config's funnels as `/v0/funnel` queries, so that each configured funnel is one click from its chart.

Each configured step's event becomes the funnel step that matches the events automation counted for it:
events sent to `/api/v1/events` are stored as type `track` under their name, so `sign_up` becomes
`{"type": "track", "event": "sign_up"}`; the identify event (`onFunctionaryIdentify`, `$identify`) is fired
by every identify, which is stored as type `identify`, so it becomes `{"type": "event", "event":
"identify"}` (every event of type `identify`, whatever its name). Automation's events carry the instance's
first id as their user key, so users are instances. Automation has no conversion window and no date range:
the query is a closed funnel with the longest window the API takes, over every day that has events.
docs/api.md says when the two counts can still differ.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson

from funnels.analytics.query import (
    MAX_STEPS,
    MAX_WINDOW_SECONDS,
    MIN_STEPS,
    QueryValidationError,
    parse_funnel_query,
)
from funnels.config import Config, Funnel
from funnels.types import IDENTIFY_EVENTS

IDENTIFY_STEP = {"type": "event", "event": "identify"}


def funnel_step(event: str, index: int) -> dict[str, str]:
    """The `/v0/funnel` step for a configured step's event, named `<event>::<index>` as the spec suggests."""
    match = IDENTIFY_STEP if event in IDENTIFY_EVENTS else {"type": "track", "event": event}
    return {**match, "name": f"{event}::{index}"}


def funnel_params(funnel: Funnel, date_from: date, date_to: date) -> tuple[dict[str, str] | None, str | None]:
    """The query parameters that chart the funnel, or None and why it cannot be charted."""
    steps = [funnel_step(step.event, index) for index, step in enumerate(funnel.steps)]
    if not MIN_STEPS <= len(steps) <= MAX_STEPS:
        return None, f"the funnel API charts {MIN_STEPS}–{MAX_STEPS} steps; this funnel has {len(steps)}"
    params = {
        "date_from": date_from.isoformat(),
        "date_to": date_to.isoformat(),
        "steps": orjson.dumps(steps).decode(),
        "window_seconds": str(MAX_WINDOW_SECONDS),
        "funnel_type": "closed",
    }
    try:
        parse_funnel_query(params)
    except QueryValidationError as invalid:  # e.g. an event name longer than the API takes
        return None, str(invalid)
    return params, None


def configured_funnels(config: Config | None, date_from: date, date_to: date) -> list[dict[str, Any]]:
    """Each configured funnel with its steps and the `/v0/funnel` parameters that chart it."""
    funnels = []
    for funnel in config.funnels if config else ():
        query, reason = funnel_params(funnel, date_from, date_to)
        funnels.append(
            {
                "id": funnel.id,
                "forModels": list(funnel.for_models),
                "steps": [
                    {"event": step.event, "step": funnel_step(step.event, index)}
                    for index, step in enumerate(funnel.steps)
                ],
                "query": query,
                "reason": reason,
            }
        )
    return funnels
