"""`sample=` over HTTP: the sampled answer's extra fields, and bad values as 400s naming the parameter."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from funnels.events import Event
from funnels.services import Services
from tests.analytics.conftest import at, ev
from tests.automation.conftest import error_of
from tests.conftest import bearer

STEPS = json.dumps(
    [
        {"type": "page", "event": "page", "name": "viewed"},
        {"type": "track", "event": "connect", "name": "connected"},
    ]
)
QUERY = {"date_from": "2026-04-01", "date_to": "2026-04-02", "steps": STEPS}


def events() -> list[Event]:
    found = [ev(f"u{i}", at(0, i), "page") for i in range(200)]
    return found + [ev(f"u{i}", at(0, 1000 + i), "track", "connect") for i in range(0, 200, 4)]


def test_a_sampled_funnel_states_its_sample_and_intervals(
    client: TestClient, keys: dict[str, str], services: Services
) -> None:
    services.events.insert_events(events())
    headers = bearer(keys["query:read"])
    exact = client.get("/v0/funnel", params=QUERY, headers=headers).json()
    assert "sample" not in exact and [row["users"] for row in exact["data"]] == [200, 50]
    body = client.get("/v0/funnel", params={**QUERY, "sample": "0.5"}, headers=headers).json()
    sample = body["sample"]
    assert sample["rate"] == 0.5 and sample["unit"] == "person" and sample["scale"] == 2.0
    first, second = body["data"]
    assert first["users"] == 2 * first["users_sampled"] == 2 * sample["users_sampled"]
    assert 50 < first["users_sampled"] < 150
    assert first["users_interval"][0] <= 200 <= first["users_interval"][1]
    assert first["conversion_from_previous_interval"] is None
    low, high = second["conversion_from_previous_interval"]
    assert low <= 0.25 <= high
    compared = client.get(
        "/v0/funnel", params={**QUERY, "sample": "0.5", "compare": "previous_period"}, headers=headers
    ).json()
    assert compared["data"] == body["data"] and compared["sample"] == sample
    assert compared["comparison"]["data"][0]["previous_users"] == 0


@pytest.mark.parametrize("value", ["0", "2", "-1", "x", "0.00001", "NaN", "1e-1"])
def test_a_bad_sample_is_a_400_naming_it(client: TestClient, keys: dict[str, str], value: str) -> None:
    response = client.get("/v0/funnel", params={**QUERY, "sample": value}, headers=bearer(keys["query:read"]))
    error = error_of(response, 400, "INVALID_VALIDATION_REQUEST")
    assert error["param"] == "sample" and "between 0.0001 and 1" in error["details"]["sample"]


@pytest.mark.parametrize("path", ["/v0/funnel/time_to_convert", "/v0/funnel/trends", "/v0/funnel/people"])
def test_the_analyses_that_do_not_sample_say_so(client: TestClient, keys: dict[str, str], path: str) -> None:
    response = client.get(path, params={**QUERY, "sample": "0.1"}, headers=bearer(keys["query:read"]))
    error = error_of(response, 400, "INVALID_VALIDATION_REQUEST")
    assert error["param"] == "sample" and "only GET /v0/funnel" in error["details"]["sample"]
    whole = client.get(path, params={**QUERY, "sample": "1"}, headers=bearer(keys["query:read"]))
    assert whole.status_code == 200, whole.text
