"""`aggregate_by=organization` through the API: organizations identified with their customers (childIds on the
organization, parentIds on a customer), customers' events sent through the automation API and Segment, and
every funnel endpoint counting organizations; bad values answer the error envelope naming `aggregate_by`."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.analytics.test_aggregate_by_cluster import pretend_cluster
from tests.api.test_fuzz import ANALYSIS_PARAMS
from tests.automation.conftest import Config, World, default_config, error_of
from tests.automation.conftest import open_world as open_world  # the fixture, used by `world` below
from tests.conftest import bearer

MINUTE_MS = 60_000
STEPS = [
    {"type": "track", "event": "sign_up", "name": "Signed up"},
    {"type": "track", "event": "api_call", "name": "First API call"},
]
DAY = {"date_from": "2026-04-01", "date_to": "2026-04-01", "steps": json.dumps(STEPS)}


@pytest.fixture
def world(open_world: Callable[[Config], World]) -> World:
    return open_world(default_config())


def get(world: World, path: str, expect: int = 200, **params: str) -> Any:
    response = world.client.get(path, params=DAY | params, headers=bearer(world.keys["query:read"]))
    assert response.status_code == expect, response.text
    return response.json()


def users(body: Any) -> list[int]:
    return [row["users"] for row in body["data"]]


def by_value(body: Any) -> dict[str, list[int]]:
    """Each breakdown value's users per step."""
    out: dict[str, list[int]] = {}
    for row in body["data"]:
        out.setdefault(row["breakdown"], []).append(row["users"])
    return out


def segment_track(world: World, user_id: str, event: str) -> None:
    auth = {"Authorization": "Basic " + base64.b64encode(f"{world.keys['events:write']}:".encode()).decode()}
    response = world.client.post("/v1/track", json={"userId": user_id, "event": event}, headers=auth)
    assert response.status_code == 200, response.text


def populate(world: World) -> None:
    """acme: c1 (named by acme's childIds before c1 existed) and c2 (by its own parentIds); globex: c3;
    c4 in no organization. acme converts through two members, globex signs up only."""
    actions: list[Callable[[], Any]] = [
        lambda: world.identify(["acme"], model="organization", childModel="customer", childIds=["c1"]),
        lambda: world.identify(["c1", "c1@acme.test"]),
        lambda: world.identify(["c2"], parentModel="organization", parentIds=["acme"]),
        lambda: world.identify(["globex"], model="organization", childModel="customer", childIds=["c3"]),
        lambda: world.identify(["c3"]),
        lambda: world.identify(["c4"]),
        lambda: world.event("sign_up", ["c1@acme.test"]),  # stored under c1, acme's member
        lambda: segment_track(world, "c2", "api_call"),  # Segment: its own user key
        lambda: world.event("sign_up", ["c3"]),
        lambda: world.event("sign_up", ["c4"]),
        lambda: world.event("api_call", ["c4"]),
    ]
    for action in actions:
        world.clock.advance(MINUTE_MS)
        action()
    world.svc.shipper.flush()


def test_every_funnel_endpoint_counts_organizations(world: World) -> None:
    populate(world)
    assert users(get(world, "/v0/funnel")) == [3, 1]  # c1, c3, c4; c4 converted
    grouped = get(world, "/v0/funnel", aggregate_by="organization")
    assert users(grouped) == [2, 1]  # acme (c1 signs up, c2 calls the API) and globex
    assert grouped["data"][1]["median_seconds_from_previous"] == 60.0
    compared = get(world, "/v0/funnel", aggregate_by="organization", compare="previous_period")
    assert users(compared) == [2, 1]
    people = get(world, "/v0/funnel/people", aggregate_by="organization")
    assert sorted(row["user_key"] for row in people["data"]) == ["acme", "globex"]
    dropped = get(world, "/v0/funnel/people", aggregate_by="organization", step="2", outcome="dropped")
    assert [row["user_key"] for row in dropped["data"]] == ["globex"]
    trends = get(world, "/v0/funnel/trends", aggregate_by="organization")
    assert [(row["entered"], row["converted"]) for row in trends["data"]] == [(2, 1)]
    ttc = get(world, "/v0/funnel/time_to_convert", aggregate_by="organization")
    assert ttc["data"][0]["users"] == 1 and ttc["data"][0]["p50_seconds"] == 60.0
    by_customer = get(world, "/v0/funnel", aggregate_by="customer")  # a customer is its own group
    assert users(by_customer) == [3, 1]


def test_organizations_break_down_by_their_own_property(world: World) -> None:
    """`breakdown=person.plan` with `aggregate_by=organization`: each organization's own plan (its latest
    identify, which the automation API stores under its primary id), not a member's; on every endpoint,
    in a saved funnel too; an attribution other than first touch is still a 400 naming it."""
    populate(world)
    world.clock.advance(MINUTE_MS)
    world.identify(["acme", "acme.test"], model="organization", properties={"plan": "free"})
    world.clock.advance(MINUTE_MS)
    world.identify(["acme.test"], model="organization", properties={"plan": "pro"})  # stored under acme
    world.identify(["c3"], properties={"plan": "team"})  # globex's member: not globex's plan
    world.svc.shipper.flush()
    by_plan = {"aggregate_by": "organization", "breakdown": "person.plan"}
    body = get(world, "/v0/funnel", **by_plan)
    assert by_value(body) == {"(none)": [1, 0], "pro": [1, 1]}  # globex signed up only
    users_by_plan = get(world, "/v0/funnel", breakdown="person.plan")  # users: each their own identify's
    assert {row["breakdown"] for row in users_by_plan["data"]} == {"(none)", "team"}
    compared = get(world, "/v0/funnel", compare="previous_period", **by_plan)
    assert by_value(compared) == by_value(body)
    people = get(world, "/v0/funnel/people", breakdown_value="pro", **by_plan)
    assert [(row["user_key"], row["breakdown"]) for row in people["data"]] == [("acme", "pro")]
    trends = get(world, "/v0/funnel/trends", **by_plan)
    assert sorted((row["breakdown"], row["entered"], row["converted"]) for row in trends["data"]) == [
        ("(none)", 1, 0),
        ("pro", 1, 1),
    ]
    ttc = get(world, "/v0/funnel/time_to_convert", **by_plan)
    assert {row["breakdown"]: row["users"] for row in ttc["data"]} == {"(none)": 0, "pro": 1}
    refused = get(world, "/v0/funnel", 400, breakdown_attribution="last_touch", **by_plan)
    assert refused["error"]["param"] == "breakdown_attribution"
    saved = world.client.post(
        "/v0/saved_funnels",
        json={"name": "Organizations by plan", "parameters": DAY | by_plan},
        headers=bearer(world.keys["query:read"]),
    )
    assert saved.status_code == 201, saved.text


def test_a_new_relationship_counts_at_the_next_query(world: World) -> None:
    populate(world)
    assert users(get(world, "/v0/funnel", aggregate_by="organization")) == [2, 1]
    world.identify(["initech"], model="organization", childModel="customer", childIds=["c4"])
    assert users(get(world, "/v0/funnel", aggregate_by="organization")) == [3, 2]
    loads = world.svc.events.groups_reloaded["organization"]
    assert users(get(world, "/v0/funnel", aggregate_by="organization")) == [3, 2]
    assert world.svc.events.groups_reloaded["organization"] == loads  # nothing changed: no reload


def test_a_cluster_counts_organizations_too(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a ClickHouse cluster `aggregate_by` is no longer refused (issue 14): with the store on a cluster
    (simulated: `pretend_cluster`, its database the layout's), every funnel endpoint answers as on one
    server, and a new relationship counts at the next query."""
    populate(world)
    paths = ("/v0/funnel", "/v0/funnel/people", "/v0/funnel/trends", "/v0/funnel/time_to_convert")
    one_server = {path: get(world, path, aggregate_by="organization")["data"] for path in paths}
    layout = pretend_cluster(world.svc.events, monkeypatch)
    assert world.svc.events.cluster == layout
    for path in paths:
        assert get(world, path, aggregate_by="organization")["data"] == one_server[path], path
    world.identify(["initech"], model="organization", childModel="customer", childIds=["c4"])
    assert users(get(world, "/v0/funnel", aggregate_by="organization")) == [3, 2]


def test_a_cluster_layout_made_before_the_memberships_answers_503_naming_the_step(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layout an older version made has no memberships objects: not the request's fault, so a 503 in the
    spec's envelope that names `funnels events init --cluster` (not a bare 500), and the other endpoints
    work on."""
    populate(world)
    layout = pretend_cluster(world.svc.events, monkeypatch)
    for statement in (
        "DROP DICTIONARY identity_groups_members",
        "DROP TABLE identity_groups",
        "DROP TABLE identity_groups_loads",
    ):
        world.svc.events.execute(statement)
    world.svc.events.groups_created = False  # as a process started on such a layout
    body = get(world, "/v0/funnel", 503, aggregate_by="organization")
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert f"funnels events init --cluster {layout.cluster}" in body["error"]["message"]
    assert body["error"]["details"] == {"store": "events", "reason": "layout_outdated"}
    assert users(get(world, "/v0/funnel"))[0] > 0  # a funnel of users still answers


def test_aggregate_by_must_be_a_declared_model(world: World) -> None:
    body = get(world, "/v0/funnel", 400, aggregate_by="team")
    assert body["error"]["param"] == "aggregate_by"
    assert "customer, organization" in body["error"]["details"]["aggregate_by"]
    both = get(world, "/v0/funnel/trends", 400, aggregate_by="team", window_seconds="0")
    assert set(both["error"]["details"]) == {"window_seconds", "aggregate_by"}
    for path in ("/v0/funnel/people", "/v0/funnel/time_to_convert"):
        assert get(world, path, 400, aggregate_by="x" * 300)["error"]["param"] == "aggregate_by"


def test_without_declared_models_aggregate_by_is_refused(client: TestClient, keys: dict[str, str]) -> None:
    response = client.get(
        "/v0/funnel", params=DAY | {"aggregate_by": "organization"}, headers=bearer(keys["query:read"])
    )
    error = error_of(response, 400, "INVALID_VALIDATION_REQUEST")
    assert error["param"] == "aggregate_by" and "no models are declared" in error["details"]["aggregate_by"]


GROUPED: list[int] = []


@pytest.mark.slow
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    params=ANALYSIS_PARAMS,
    aggregate_by=st.sampled_from(["organization", "organization", "customer", "", "team", "x" * 300])
    | st.text(max_size=8),
)
def test_aggregated_queries_never_answer_5xx(world: World, params: dict[str, str], aggregate_by: str) -> None:
    """The fuzz tests' parameters (tests/api/test_fuzz.py) with `aggregate_by`, models declared, on every
    funnel endpoint: 200 or the error envelope, never a 5xx."""
    if not world.svc.events.count():
        populate(world)
    for path in ("/v0/funnel", "/v0/funnel/time_to_convert", "/v0/funnel/trends", "/v0/funnel/people"):
        asked = params | {"aggregate_by": aggregate_by}
        if path != "/v0/funnel":  # the analyses refuse any `sample` by name (tests/api/test_sampling.py)
            asked.pop("sample", None)
        response = world.client.get(path, params=asked, headers=bearer(world.keys["query:read"]))
        assert response.status_code in (200, 400), (path, response.text)
        if response.status_code == 400:
            assert response.json()["error"]["code"] == "INVALID_VALIDATION_REQUEST"
        elif aggregate_by:
            GROUPED.append(response.status_code)


@pytest.mark.slow
def test_the_aggregated_fuzz_reached_the_sql_path() -> None:
    """Runs after the fuzz test above (file order): some aggregated queries must have run."""
    assert len(GROUPED) >= 10, len(GROUPED)
