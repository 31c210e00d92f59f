"""Response shape details that random data rarely reaches."""

from __future__ import annotations

import json

from funnels.analytics.funnel import run_funnel
from funnels.analytics.query import parse_funnel_query
from funnels.analytics.reference import reference_funnel
from funnels.services import Services

STEPS = json.dumps(
    [
        {"type": "event", "event": "page", "name": "page::0"},
        {"type": "track", "event": "connect", "name": "connect::1"},
    ]
)


def test_nobody_entering_still_gives_one_zero_row_per_step(services: Services) -> None:
    query = parse_funnel_query(
        {"date_from": "2026-04-01", "date_to": "2026-04-30", "steps": STEPS, "funnel_type": "open"}
    )
    response = run_funnel(services.events, query)
    assert response["data"] == reference_funnel(query, [])["data"]
    assert [(row["step"], row["users"], row["total"]) for row in response["data"]] == [(1, 0, 0), (2, 0, 0)]
    assert all(
        row["conversion_from_start"] is None and row["median_seconds_from_start"] is None
        for row in response["data"]
    )
    assert response["data"][1]["dropped_off_users"] == 0
    assert response["rows"] == response["rows_before_limit_at_least"] == 2


def test_nobody_entering_with_a_breakdown_gives_no_groups(services: Services) -> None:
    query = parse_funnel_query(
        {"date_from": "2026-04-01", "date_to": "2026-04-30", "steps": STEPS, "breakdown": "device"}
    )
    response = run_funnel(services.events, query)
    assert response["data"] == [] and response["rows"] == 0
    assert [column["name"] for column in response["meta"]][:3] == ["step", "event", "breakdown"]
