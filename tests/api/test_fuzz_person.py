"""No person breakdown (`breakdown=person.<key>`), however malformed, produces a 5xx: keys of any text,
with every attribution, funnel type, exclusions, hold_constant and compare, against every endpoint that
takes a breakdown, over stored identify events."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnels.events import Event
from funnels.services import Services
from tests.conftest import bearer

STEPS = json.dumps(
    [{"type": "event", "event": "page", "name": "p"}, {"type": "track", "event": "connect", "name": "c"}]
)
KEYS = st.sampled_from(["plan", "plan", "a.b", "", "'; DROP TABLE events; --", "{p0:String}", "x" * 1001])
PERSON_PARAMS = st.fixed_dictionaries(
    {
        "breakdown": st.one_of(
            KEYS.map(lambda key: f"person.{key}"), st.text(max_size=12).map(lambda t: f"person{t}")
        )
    },
    optional={
        "breakdown_attribution": st.sampled_from(["first_touch", "last_touch", "step:1", "step:3", "", "x"]),
        "funnel_type": st.sampled_from(["closed", "open", "strict"]),
        "identity": st.sampled_from(["raw", "stitched"]),
        "breakdown_top_n": st.sampled_from(["1", "8", "0"]),
        "exclusions": st.just('[{"type":"track","event":"mint","from_step":1,"to_step":2}]'),
        "hold_constant": st.sampled_from(['["device"]', '["properties.chain"]']),
        "compare": st.just("previous_period"),
        "breakdown_value": st.sampled_from(["pro", "(none)", "Others"]),
    },
)
STATUSES: list[int] = []
SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=80, deadline=None, suppress_health_check=SUPPRESS, derandomize=True)
@given(params=PERSON_PARAMS)
def test_person_breakdowns_never_answer_5xx(
    client: TestClient, keys: dict[str, str], services: Services, params: dict[str, str]
) -> None:
    if services.events.count() == 0:
        rows = [("page", "page", {}), ("track", "connect", {}), ("identify", "identify", {"plan": "pro"})]
        rows += [("identify", "identify", {"plan": {"nested": 1}, "a.b": 5})]
        services.events.insert_events(
            [
                Event(
                    event_id=f"e{i}",
                    type=type_,
                    event=name,
                    user_key="u1",
                    user_id="u1",
                    ts_ms=1_775_001_600_000 + (i - 2) * 86_400_000,
                    received_ms=1_775_001_600_000,
                    properties=properties,
                    columns={"device": "mobile"},
                )
                for i, (type_, name, properties) in enumerate(rows)
            ]
        )
    query = {"date_from": "2026-04-01", "date_to": "2026-04-30", "steps": STEPS} | params
    for path in ("/v0/funnel", "/v0/funnel/time_to_convert", "/v0/funnel/trends", "/v0/funnel/people"):
        response = client.get(path, params=query, headers=bearer(keys["query:read"]))
        assert response.status_code in (200, 400), (path, response.text)
        STATUSES.append(response.status_code)
        if response.status_code == 400:
            assert response.json()["error"]["code"] == "INVALID_VALIDATION_REQUEST"
            assert response.json()["error"]["param"]


def test_the_person_fuzz_reached_the_sql_path() -> None:
    """Runs after the fuzz test (file order): some person breakdowns must have run, some been refused."""
    assert STATUSES.count(200) >= 20 and STATUSES.count(400) >= 20, (STATUSES.count(200), STATUSES.count(400))
