"""`breakdown=person.<key>` through the API: customers identified with properties by the automation API
(`/api/v1/identify`) and by Segment (`traits`), the day before the funnel's range, then every endpoint that
takes a breakdown groups them by the value of their latest identify; bad values are 400s naming the
parameter, in `/v0/funnel`, its analyses and a saved funnel."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.automation.conftest import Config, World, default_config, error_of
from tests.automation.conftest import open_world as open_world  # the fixture, used by `world` below
from tests.conftest import bearer

DAY_MS = 86_400_000
STEPS = [
    {"type": "track", "event": "sign_up", "name": "Signed up"},
    {"type": "track", "event": "development_api_call", "name": "Called the API"},
]
QUERY = {"date_from": "2026-04-02", "date_to": "2026-04-02", "steps": json.dumps(STEPS)}


@pytest.fixture
def world(open_world: Callable[[Config], World]) -> World:
    """c1 identified as free, then pro (by two ids); c2 team; c3 without a plan; c5 pro through Segment:
    all on 2026-04-01. On 2026-04-02 everyone signs up, c2 and c5 call the API, and c1 is identified
    again with another property only (its plan stays pro)."""
    world = open_world(default_config())
    segment = {
        "Authorization": "Basic " + base64.b64encode(f"{world.keys['events:write']}:".encode()).decode()
    }

    def via_segment(path: str, body: dict[str, Any]) -> None:
        response = world.client.post(f"/v1/{path}", json=body, headers=segment)
        assert response.status_code == 200, response.text

    world.identify(["c1"], properties={"plan": "free"})
    world.clock.advance(60_000)
    world.identify(["c1", "ada@example.com"], properties={"plan": "pro", "seats": 3})
    world.identify(["c2"], properties={"plan": "team"})
    world.identify(["c3"], properties={"name": "Cy"})
    via_segment("identify", {"userId": "c5", "traits": {"plan": "pro", "name": "Eve"}})
    world.clock.advance(DAY_MS)
    for ids in (["ada@example.com"], ["c2"], ["c3"]):
        world.event("sign_up", ids)
    world.event("development_api_call", ["c2"])
    world.identify(["c1"], properties={"name": "Ada"})
    via_segment("track", {"userId": "c5", "event": "sign_up"})
    world.clock.advance(1000)
    via_segment("track", {"userId": "c5", "event": "development_api_call"})
    world.svc.shipper.flush()
    return world


def get(world: World, path: str, expect: int = 200, **params: str) -> Any:
    response = world.client.get(path, params=QUERY | params, headers=bearer(world.keys["query:read"]))
    assert response.status_code == expect, response.text
    return response


def groups(rows: list[dict[str, Any]]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for row in rows:
        found.setdefault(row["breakdown"], []).append(row["users"])
    return found


def test_the_funnel_groups_users_by_their_latest_identify(world: World) -> None:
    body = get(world, "/v0/funnel", breakdown="person.plan").json()
    assert groups(body["data"]) == {"pro": [2, 1], "(none)": [1, 0], "team": [1, 1]}
    assert ["breakdown", "String"] in [[c["name"], c["type"]] for c in body["meta"]]
    seats = get(world, "/v0/funnel", breakdown="person.seats", identity="raw").json()
    assert groups(seats["data"]) == {"(none)": [3, 2], "3": [1, 0]}  # c1's events are keyed by c1
    compared = get(world, "/v0/funnel", breakdown="person.plan", compare="previous_period").json()
    assert groups(compared["data"]) == groups(body["data"])
    assert {row["breakdown"] for row in compared["comparison"]["data"]} == {"pro", "(none)", "team"}


def test_the_analyses_take_the_same_groups(world: World) -> None:
    ttc = get(world, "/v0/funnel/time_to_convert", breakdown="person.plan").json()
    assert [(group["breakdown"], group["users"]) for group in ttc["data"]] == [
        ("pro", 1),
        ("(none)", 0),
        ("team", 1),
    ]
    trends = get(world, "/v0/funnel/trends", breakdown="person.plan").json()
    assert [(row["breakdown"], row["entered"], row["converted"]) for row in trends["data"]] == [
        ("pro", 2, 1),
        ("(none)", 1, 0),
        ("team", 1, 1),
    ]
    people = get(world, "/v0/funnel/people", breakdown="person.plan", breakdown_value="pro").json()
    assert sorted((row["user_key"], row["breakdown"]) for row in people["data"]) == [
        ("c1", "pro"),
        ("c5", "pro"),
    ]
    text = get(world, "/v0/funnel/people", breakdown="person.plan", format="csv").text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted((row["user_key"], row["breakdown"]) for row in rows) == [
        ("c1", "pro"),
        ("c2", "team"),
        ("c3", "(none)"),
        ("c5", "pro"),
    ]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"breakdown": "person."}, "breakdown"),
        ({"breakdown": "person"}, "breakdown"),
        ({"breakdown": "person.plan", "breakdown_attribution": "last_touch"}, "breakdown_attribution"),
        ({"breakdown": "person.plan", "breakdown_attribution": "step:1"}, "breakdown_attribution"),
    ],
)
@pytest.mark.parametrize(
    "path", ["/v0/funnel", "/v0/funnel/time_to_convert", "/v0/funnel/trends", "/v0/funnel/people"]
)
def test_bad_person_breakdowns_are_400s_naming_the_parameter(
    world: World, params: dict[str, str], param: str, path: str
) -> None:
    error = error_of(get(world, path, 400, **params), 400, "INVALID_VALIDATION_REQUEST")
    assert error["param"] == param and param in error["details"]
    if param == "breakdown_attribution":
        assert "person" in error["details"][param]


def test_a_saved_funnel_keeps_a_person_breakdown(world: World) -> None:
    reader = bearer(world.keys["query:read"])
    parameters = QUERY | {"breakdown": "person.plan"}
    created = world.client.post(
        "/v0/saved_funnels", json={"name": "By plan", "parameters": parameters}, headers=reader
    )
    assert created.status_code == 201, created.text
    opened = world.client.get(f"/v0/saved_funnels/{created.json()['id']}", headers=reader).json()
    assert opened["parameters"]["breakdown"] == "person.plan"
    refused = world.client.post(
        "/v0/saved_funnels",
        json={"name": "Last", "parameters": parameters | {"breakdown_attribution": "last_touch"}},
        headers=reader,
    )
    error = error_of(refused, 400, "INVALID_VALIDATION_REQUEST")
    assert "breakdown_attribution" in error["param"]
