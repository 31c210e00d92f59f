"""`GET /v0/funnels`: the configured funnels with the `/v0/funnel` query that charts each, over real stores.

The end-to-end check: instances identified and driven through the automation API (and Segment), then each
generated query run through `/v0/funnel`, whose users per step must equal the instances automation has
satisfied that step for.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from funnels.analytics.query import MAX_WINDOW_SECONDS
from funnels.clock import ManualClock
from funnels.events import Event
from funnels.services import Services
from funnels.store.state import satisfied_steps
from tests.automation.conftest import DEAD_URL, Config, World, default_config, error_of
from tests.automation.conftest import open_world as open_world  # the fixture, used by `world` below
from tests.conftest import bearer

MINUTE_MS = 60_000


def funnels_config() -> Config:
    config = default_config()
    hook = {"type": "webhook", "args": {"url": DEAD_URL}}
    config["funnels"] += [
        {
            "id": "welcome",
            "forModels": ["customer"],
            "steps": [{"event": "onFunctionaryIdentify"}, {"event": "sign_up", "actions": hook}],
        },
        {"id": "org_welcome", "forModels": "organization", "steps": {"event": "$identify", "actions": hook}},
    ]
    return config


@pytest.fixture
def world(open_world: Callable[[Config], World]) -> World:
    return open_world(funnels_config())


def configured(world: World, expect: int = 200, key: str = "query:read") -> Any:
    response = world.client.get("/v0/funnels", headers=bearer(world.keys[key]))
    assert response.status_code == expect, response.text
    return response.json()


def test_each_configured_funnel_with_its_steps_and_query(world: World) -> None:
    body = configured(world)
    assert body["rows"] == 4
    assert [funnel["id"] for funnel in body["data"]] == ["onboarding", "twice", "welcome", "org_welcome"]
    welcome = body["data"][2]
    assert welcome["forModels"] == ["customer"]
    assert welcome["steps"] == [
        {
            "event": "onFunctionaryIdentify",
            "step": {"type": "event", "event": "identify", "name": "onFunctionaryIdentify::0"},
        },
        {"event": "sign_up", "step": {"type": "track", "event": "sign_up", "name": "sign_up::1"}},
    ]
    assert welcome["reason"] is None
    assert welcome["query"] == {
        "date_from": "2026-04-01",  # no events yet: today, on the server's clock
        "date_to": "2026-04-01",
        "steps": json.dumps([step["step"] for step in welcome["steps"]], separators=(",", ":")),
        "window_seconds": str(MAX_WINDOW_SECONDS),
        "funnel_type": "closed",
    }
    twice = body["data"][1]
    assert [step["step"]["name"] for step in twice["steps"]] == ["visit::0", "visit::1", "buy::2"]
    org_welcome = body["data"][3]
    assert org_welcome["query"] is None
    assert org_welcome["reason"] == "the funnel API charts 2–10 steps; this funnel has 1"
    assert org_welcome["steps"][0]["step"] == {"type": "event", "event": "identify", "name": "$identify::0"}


def test_without_a_config_the_list_is_empty(client: TestClient, keys: dict[str, str]) -> None:
    response = client.get("/v0/funnels", headers=bearer(keys["query:read"]))
    assert response.status_code == 200, response.text
    assert response.json() == {"data": [], "rows": 0}


def test_it_needs_a_query_read_key(world: World) -> None:
    for path in ("/v0/funnels", "/v0/funnel"):  # every route: tests/api/test_app.py
        error_of(world.client.get(path), 401, "UNAUTHORIZED")
        error_of(world.client.get(path, headers=world.writer), 403, "FORBIDDEN")
    configured(world, key="admin")


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def populate(world: World) -> None:
    """Customers at every level of each funnel, via `/api/v1/*` and Segment, a minute apart."""
    steps: list[tuple[str, Any]] = [
        ("identify", ["c1", "ada@example.com"]),
        ("identify", ["c2"]),
        ("identify", ["c3"]),
        ("event", ("sign_up", ["ada@example.com"])),  # keyed by c1, the instance's first id
        ("event", ("development_api_call", ["c3"])),  # before c3's sign_up: not a step yet
        ("event", ("sign_up", ["c2"])),
        ("event", ("development_api_call", ["c1"])),
        ("event", ("production_api_call", ["c2"])),  # c2 skipped a step: not satisfied
        ("event", ("sign_up", ["c3"])),
        ("event", ("production_api_call", ["ada@example.com"])),
        ("identify", ["c4"]),  # identified only
        ("event", ("visit", ["c1"])),
        ("event", ("visit", ["c2"])),
        ("event", ("buy", ["c2"])),  # c2 visited once: buy is not its next step
        ("event", ("visit", ["c1"])),
        ("event", ("buy", ["c1"])),
        ("identify", ["c1"]),  # again: identify fires the step again, already satisfied
        ("segment", ("identify", {"userId": "c5", "traits": {"name": "Eve"}})),
        ("segment", ("track", {"userId": "c5", "event": "sign_up"})),
        ("segment", ("track", {"userId": "c5", "event": "development_api_call"})),
    ]
    for kind, args in steps:
        world.clock.advance(MINUTE_MS)
        if kind == "identify":
            world.identify(args)
        elif kind == "event":
            world.event(*args)
        else:
            path, body = args
            response = world.client.post(f"/v1/{path}", json=body, headers=basic(world.keys["events:write"]))
            assert response.status_code == 200, response.text
    world.svc.shipper.flush()


def automation_levels(world: World) -> dict[str, list[int]]:
    """Per funnel, how many instances automation has satisfied each step for."""
    with world.svc.state.read() as connection:
        rows = connection.execute(
            select(satisfied_steps.c.funnel_id, satisfied_steps.c.step_index, func.count()).group_by(
                satisfied_steps.c.funnel_id, satisfied_steps.c.step_index
            )
        ).all()
    levels: dict[str, list[int]] = {}
    for funnel_id, step_index, count in sorted(rows):
        levels.setdefault(funnel_id, []).append(count)
        assert len(levels[funnel_id]) == step_index + 1
    return levels


def test_the_generated_queries_count_what_automation_counted(world: World) -> None:
    populate(world)
    funnels = configured(world)["data"]
    levels = automation_levels(world)
    assert levels == {"onboarding": [4, 2, 1], "twice": [2, 1, 1], "welcome": [5, 4]}
    charted = 0
    for funnel in funnels:
        if funnel["query"] is None:
            continue
        assert (funnel["query"]["date_from"], funnel["query"]["date_to"]) == ("2026-04-01", "2026-04-01")
        response = world.client.get(
            "/v0/funnel", params=funnel["query"], headers=bearer(world.keys["query:read"])
        )
        assert response.status_code == 200, response.text
        users = [row["users"] for row in response.json()["data"]]
        expected = levels[funnel["id"]] + [0] * (len(users) - len(levels[funnel["id"]]))
        assert users == expected, funnel["id"]
        charted += 1
    assert charted == 3


# --- identity stitching through the API (docs/semantics.md, "Users and persons") ---

SIGNUP_STEPS = [
    {"type": "event", "event": "page", "name": "Landing"},
    {"type": "track", "event": "Signed Up", "name": "Signed Up"},
    {"type": "track", "event": "Purchased", "name": "Purchased"},
]


def _segment(client: TestClient, key: str, batch: list[dict[str, Any]]) -> None:
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    response = client.post("/v1/batch", json={"batch": batch}, headers=auth)
    assert response.status_code == 200, response.text


def _funnel(client: TestClient, key: str, **extra: str) -> Any:
    params = {"date_from": "2026-04-01", "date_to": "2026-04-01", "steps": json.dumps(SIGNUP_STEPS), **extra}
    return client.get("/v0/funnel", params=params, headers=bearer(key))


def test_an_anonymous_visitor_who_signs_up_is_one_person_unless_identity_is_raw(
    client: TestClient, keys: dict[str, str], services: Any
) -> None:
    """The issue's example, sent as analytics.js sends it: the landing page before sign-up is anonymous."""
    _segment(
        client,
        keys["events:write"],
        [
            {"type": "page", "anonymousId": "a1", "name": "Landing", "timestamp": "2026-04-01T10:00:00Z"},
            {"type": "identify", "userId": "u1", "anonymousId": "a1", "timestamp": "2026-04-01T10:00:01Z"},
            {
                "type": "track",
                "event": "Signed Up",
                "userId": "u1",
                "anonymousId": "a1",
                "timestamp": "2026-04-01T10:00:02Z",
            },
            {"type": "track", "event": "Purchased", "userId": "u1", "timestamp": "2026-04-01T10:00:03Z"},
        ],
    )
    services.shipper.flush()
    users = lambda response: [row["users"] for row in response.json()["data"]]  # noqa: E731
    stitched = _funnel(client, keys["query:read"])
    assert stitched.status_code == 200, stitched.text
    assert users(stitched) == [1, 1, 1]
    assert users(_funnel(client, keys["query:read"], identity="stitched")) == [1, 1, 1]
    assert users(_funnel(client, keys["query:read"], identity="raw")) == [1, 0, 0]  # today's answer


def test_a_segment_alias_merges_its_previous_id(
    client: TestClient, keys: dict[str, str], services: Any
) -> None:
    _segment(
        client,
        keys["events:write"],
        [
            {"type": "page", "userId": "old-1", "name": "Landing", "timestamp": "2026-04-01T10:00:00Z"},
            {"type": "alias", "userId": "new-1", "previousId": "old-1", "timestamp": "2026-04-01T10:00:01Z"},
            {"type": "track", "event": "Signed Up", "userId": "new-1", "timestamp": "2026-04-01T10:00:02Z"},
        ],
    )
    services.shipper.flush()
    assert [row["users"] for row in _funnel(client, keys["query:read"]).json()["data"]] == [1, 1, 0]


@pytest.mark.parametrize("value", ["Raw", "persons", "0"])
def test_an_unknown_identity_is_a_400_naming_it(client: TestClient, keys: dict[str, str], value: str) -> None:
    error = error_of(_funnel(client, keys["query:read"], identity=value), 400, "INVALID_VALIDATION_REQUEST")
    assert error["param"] == "identity" and error["details"] == {"identity": "must be stitched or raw"}


def test_identity_is_in_the_openapi_description(client: TestClient) -> None:
    parameters = client.get("/openapi.json").json()["paths"]["/v0/funnel"]["get"]["parameters"]
    identity = next(parameter for parameter in parameters if parameter["name"] == "identity")
    assert identity["schema"]["enum"] == ["stitched", "raw"] and "raw" in identity["description"]


# --- /v0/funnel/time_to_convert and /v0/funnel/trends ---

ANALYSIS_STEPS = json.dumps(
    [
        {"type": "event", "event": "page", "name": "page::0"},
        {"type": "track", "event": "connect", "name": "c"},
    ]
)
ANALYSIS = {
    "date_from": "2026-04-01",
    "date_to": "2026-04-03",
    "steps": ANALYSIS_STEPS,
    "window_seconds": "86400",
}
DAY_MS = 86_400_000


@pytest.fixture
def analysed(services: Services) -> Services:
    """Three users entering on 2026-04-01 and -02, two converting after 2 s and 90 s."""
    start = 1_775_001_600_000
    rows = [
        ("a", start, "page", "page"),
        ("a", start + 2000, "track", "connect"),
        ("b", start + DAY_MS, "page", "page"),
        ("b", start + DAY_MS + 90_000, "track", "connect"),
        ("c", start + DAY_MS, "page", "page"),
    ]
    services.events.insert_events(
        [
            Event(
                event_id=f"e{i}",
                type=type_,
                event=name,
                user_key=user,
                user_id=user,
                ts_ms=ts,
                received_ms=ts,
                properties={},
                columns={},
            )
            for i, (user, ts, type_, name) in enumerate(rows)
        ]
    )
    return services


def test_time_to_convert_endpoint(client: TestClient, keys: dict[str, str], analysed: Services) -> None:
    params = ANALYSIS | {"from_step": "1", "to_step": "2"}
    response = client.get("/v0/funnel/time_to_convert", params=params, headers=bearer(keys["query:read"]))
    assert response.status_code == 200, response.text
    body = response.json()
    (group,) = body["data"]
    assert (group["users"], group["p50_seconds"], group["mean_seconds"]) == (2, 46.0, 46.0)
    assert [(b["from_seconds"], b["users"]) for b in group["histogram"]] == [
        (2.0, 1), (5.0, 0), (10.0, 0), (20.0, 0), (30.0, 0), (60.0, 1)
    ]  # fmt: skip
    funnel = client.get("/v0/funnel", params=ANALYSIS, headers=bearer(keys["query:read"])).json()
    assert funnel["data"][1]["median_seconds_from_start"] == group["p50_seconds"]
    # Without from_step and to_step: the whole funnel, first step to last.
    whole = client.get("/v0/funnel/time_to_convert", params=ANALYSIS, headers=bearer(keys["query:read"]))
    assert (whole.json()["from_step"], whole.json()["to_step"]) == (1, len(funnel["data"]))
    assert whole.json()["data"][0]["p50_seconds"] == funnel["data"][-1]["median_seconds_from_start"]


def test_trends_endpoint_marks_open_windows_by_the_servers_clock(
    client: TestClient, keys: dict[str, str], analysed: Services, clock: ManualClock
) -> None:
    clock.set(1_775_001_600_000 + 2 * DAY_MS + 1)  # day 1's window (1 day) has just closed
    response = client.get("/v0/funnel/trends", params=ANALYSIS, headers=bearer(keys["query:read"]))
    assert response.status_code == 200, response.text
    rows = [(r["period"], r["entered"], r["converted"], r["conversion"], r["window_closed"]) for r in response.json()["data"]]  # fmt: skip
    assert rows == [
        ("2026-04-01", 1, 1, 1.0, True),
        ("2026-04-02", 2, 1, 0.5, False),
        ("2026-04-03", 0, 0, None, False),
    ]


# b mints in the millisecond of its connect: in (t(page), t(connect)], so that conversion is disqualified.
EXCLUDE_C = json.dumps([{"type": "track", "event": "mint", "from_step": 1, "to_step": 2}])


def test_exclusions_disqualify_conversions_on_every_endpoint(
    client: TestClient, keys: dict[str, str], analysed: Services
) -> None:
    start = 1_775_001_600_000
    analysed.events.insert_events(
        [
            Event(
                event_id="m1",
                type="track",
                event="mint",
                user_key="b",
                user_id="b",
                ts_ms=start + DAY_MS + 90_000,
                received_ms=start,
                properties={},
                columns={},
            )
        ]
    )
    params = ANALYSIS | {"exclusions": EXCLUDE_C}
    headers = bearer(keys["query:read"])
    plain = client.get("/v0/funnel", params=ANALYSIS, headers=headers).json()
    assert [row["users"] for row in plain["data"]] == [3, 2]
    excluded = client.get("/v0/funnel", params=params, headers=headers).json()
    assert [row["users"] for row in excluded["data"]] == [3, 1]
    ttc = client.get("/v0/funnel/time_to_convert", params=params, headers=headers).json()
    assert (ttc["data"][0]["users"], ttc["data"][0]["p50_seconds"]) == (1, 2.0)
    trends = client.get("/v0/funnel/trends", params=params, headers=headers).json()
    assert [(row["entered"], row["converted"]) for row in trends["data"]] == [(1, 1), (2, 0), (0, 0)]
    people = client.get("/v0/funnel/people", params=params | {"outcome": "converted"}, headers=headers).json()
    assert [row["user_key"] for row in people["data"]] == ["a"]


def test_hold_constant_on_the_funnel_and_its_analyses(
    client: TestClient, keys: dict[str, str], analysed: Services
) -> None:
    """c connects with `chain=base` after a page without one: a conversion, unless the chain is held."""
    start = 1_775_001_600_000
    analysed.events.insert_events(
        [
            Event(
                event_id="c2",
                type="track",
                event="connect",
                user_key="c",
                user_id="c",
                ts_ms=start + DAY_MS + 5_000,
                received_ms=start,
                properties={"chain": "base"},
                columns={},
            )
        ]
    )
    headers = bearer(keys["query:read"])
    params = ANALYSIS | {"hold_constant": '["properties.chain"]'}
    plain = client.get("/v0/funnel", params=ANALYSIS, headers=headers).json()
    assert [row["users"] for row in plain["data"]] == [3, 3]
    held = client.get("/v0/funnel", params=params, headers=headers).json()
    assert [row["users"] for row in held["data"]] == [3, 2]
    people = client.get("/v0/funnel/people", params=params | {"outcome": "converted"}, headers=headers).json()
    assert sorted(row["user_key"] for row in people["data"]) == ["a", "b"]
    ttc = client.get("/v0/funnel/time_to_convert", params=params, headers=headers).json()
    assert (ttc["data"][0]["users"], ttc["data"][0]["p50_seconds"]) == (2, 46.0)


@pytest.mark.parametrize(
    ("inserted", "params", "users", "converted", "seconds", "trend"),
    [
        pytest.param(
            ("a", 1000, "connect", "base"),
            {"funnel_type": "strict"},
            [3, 1],
            ["b"],
            90.0,
            [(1, 0), (2, 1), (0, 0)],
            id="strict: a's connect of another chain is a's next event (plain strict: a converts through it)",
        ),
        pytest.param(
            ("b", DAY_MS + 1000, "mint", "ethereum"),
            {"exclusions": EXCLUDE_C},
            [3, 1],
            ["a"],
            2.0,
            [(1, 1), (2, 0), (0, 0)],
            id="exclusions: b's mint of another chain still disqualifies b's chain",
        ),
    ],
)
def test_hold_constant_with_strict_or_exclusions_on_every_endpoint(
    client: TestClient,
    keys: dict[str, str],
    analysed: Services,
    inserted: tuple[str, int, str, str],
    params: dict[str, str],
    users: list[int],
    converted: list[str],
    seconds: float,
    trend: list[tuple[int, int]],
) -> None:
    """Once refused (400), now answered on the funnel, its breakdowns, compare and its analyses."""
    user, offset, name, chain = inserted
    start = 1_775_001_600_000
    analysed.events.insert_events(
        [
            Event(
                event_id="x1",
                type="track",
                event=name,
                user_key=user,
                user_id=user,
                ts_ms=start + offset,
                received_ms=start,
                properties={"chain": chain},
                columns={},
            )
        ]
    )
    headers = bearer(keys["query:read"])
    params = ANALYSIS | params | {"hold_constant": '["properties.chain"]'}
    funnel = client.get("/v0/funnel", params=params, headers=headers)
    assert funnel.status_code == 200, funnel.text
    assert [row["users"] for row in funnel.json()["data"]] == users
    people = client.get("/v0/funnel/people", params=params | {"outcome": "converted"}, headers=headers).json()
    assert [row["user_key"] for row in people["data"]] == converted
    ttc = client.get("/v0/funnel/time_to_convert", params=params, headers=headers).json()
    assert (ttc["data"][0]["users"], ttc["data"][0]["p50_seconds"]) == (1, seconds)
    trends = client.get("/v0/funnel/trends", params=params, headers=headers).json()
    assert [(row["entered"], row["converted"]) for row in trends["data"]] == trend
    for extra in (
        {"compare": "previous_period"},
        {"breakdown": "properties.chain", "breakdown_attribution": "step:2"},
        {"breakdown": "properties.chain"},
    ):
        response = client.get("/v0/funnel", params=params | extra, headers=headers)
        assert response.status_code == 200, (extra, response.text)
        totals = {row["step"]: row["total"] for row in response.json()["data"]}
        assert [totals[1], totals[2]] == users, extra


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/v0/funnel/time_to_convert", {"from_step": "1", "to_step": "3"}, "to_step"),
        ("/v0/funnel/time_to_convert", {"from_step": "0"}, "from_step"),
        ("/v0/funnel/time_to_convert", {"from_step": "2", "to_step": "2"}, "to_step"),
        ("/v0/funnel/time_to_convert", {"from_step": "1", "to_step": "2", "bins": "101"}, "bins"),
        ("/v0/funnel/trends", {"interval": "year"}, "interval"),
        ("/v0/funnel/trends", {"date_to": "2026-13-01"}, "date_to"),
        ("/v0/funnel/people", {"step": "3"}, "step"),
        ("/v0/funnel/people", {"outcome": "gone"}, "outcome"),
        ("/v0/funnel/people", {"outcome": "dropped", "step": "1"}, "step"),
        ("/v0/funnel/people", {"limit": "10001"}, "limit"),
        ("/v0/funnel/people", {"cursor": "not-a-cursor"}, "cursor"),
        ("/v0/funnel/people", {"format": "xlsx"}, "format"),
        ("/v0/funnel/people", {"breakdown_value": "mobile"}, "breakdown_value"),
        ("/v0/funnel", {"exclusions": "[{"}, "exclusions"),
        (
            "/v0/funnel",
            {"exclusions": EXCLUDE_C.replace('"to_step": 2', '"to_step": 3')},
            "exclusions.0.to_step",
        ),
        (
            "/v0/funnel/trends",
            {"exclusions": EXCLUDE_C.replace('"from_step": 1', '"from_step": 0')},
            "exclusions.0.from_step",
        ),
        ("/v0/funnel/people", {"exclusions": EXCLUDE_C, "funnel_type": "open"}, "exclusions"),
        ("/v0/funnel", {"hold_constant": '["chain"]'}, "hold_constant.0"),
        (
            "/v0/funnel/trends",
            {"hold_constant": '["device"]', "funnel_type": "strict", "exclusions": EXCLUDE_C},
            "exclusions",
        ),
    ],
)
def test_bad_parameters_get_the_envelope_naming_them(
    client: TestClient, keys: dict[str, str], path: str, params: dict[str, str], param: str
) -> None:
    response = client.get(path, params=ANALYSIS | params, headers=bearer(keys["query:read"]))
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("INVALID_VALIDATION_REQUEST", param)


@pytest.mark.parametrize("path", ["/v0/funnel/time_to_convert", "/v0/funnel/trends", "/v0/funnel/people"])
def test_analysis_endpoints_need_query_read(client: TestClient, keys: dict[str, str], path: str) -> None:
    assert client.get(path, params=ANALYSIS).status_code == 401
    assert client.get(path, params=ANALYSIS, headers=bearer(keys["events:write"])).status_code == 403


def test_people_endpoint_pages_and_downloads(
    client: TestClient, keys: dict[str, str], analysed: Services
) -> None:
    headers = bearer(keys["query:read"])
    first = client.get("/v0/funnel/people", params=ANALYSIS | {"limit": "2"}, headers=headers)
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["users"], body["rows"], body["steps"]) == (3, 2, ["page::0", "c"])
    second = client.get(
        "/v0/funnel/people", params=ANALYSIS | {"limit": "2", "cursor": body["next_cursor"]}, headers=headers
    ).json()
    assert second["next_cursor"] is None and second["rows"] == 1
    assert sorted(row["user_key"] for row in body["data"] + second["data"]) == ["a", "b", "c"]
    funnel = client.get("/v0/funnel", params=ANALYSIS, headers=headers).json()
    dropped = client.get(
        "/v0/funnel/people", params=ANALYSIS | {"step": "2", "outcome": "dropped"}, headers=headers
    ).json()
    assert [row["user_key"] for row in dropped["data"]] == ["c"]
    assert dropped["users"] == funnel["data"][0]["users"] - funnel["data"][1]["users"]
    converted = client.get("/v0/funnel/people", params=ANALYSIS | {"outcome": "converted"}, headers=headers)
    b = next(row for row in converted.json()["data"] if row["user_key"] == "b")
    assert b == {
        "user_key": "b",
        "last_step": 2,
        "times": ["2026-04-02T00:00:00.000Z", "2026-04-02T00:01:30.000Z"],
    }
    csv = client.get("/v0/funnel/people", params=ANALYSIS | {"format": "csv", "limit": "2"}, headers=headers)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.headers["content-disposition"] == 'attachment; filename="funnel-people-step1-reached.csv"'
    assert (csv.headers["x-next-cursor"], csv.headers["x-total-users"]) == (body["next_cursor"], "3")
    lines = csv.text.splitlines()
    assert lines[0] == "user_key,last_step,step_1_at,step_2_at" and len(lines) == 3
