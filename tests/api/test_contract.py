"""The API keeps its own OpenAPI document: schemathesis generates requests for every operation from the app's
`/openapi.json` and checks each response (no 5xx, a documented status, the documented content type and
body), once with no key and once with a key of each scope, against real stores with real data in them.

Bounded and reproducible: few examples per operation, derandomized, no deadline. The generated requests go
to the app in-process through schemathesis' ASGI session; the app's lifespan (committer, shipper) is the
`World`'s, as in the other API tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.python.asgi import ASGIClient

from funnels.automation.deliveries import STATUSES
from tests.automation.conftest import Config, World, default_config
from tests.automation.conftest import open_world as open_world  # the fixture, used by `api` below
from tests.conftest import bearer

BASE_URL = "http://testserver"
# Examples per operation (schema-valid, schema-invalid) with each credential. Without a key, or with a key of
# another scope, an operation answers 401/403 before reading anything: one request shows it. The admin key
# passes every scope check, so its run is the one that reaches the handlers with generated data.
EXAMPLES = {"no key": (1, 0), "events:write": (2, 0), "query:read": (2, 0), "admin": (10, 4)}
CREDENTIALS = list(EXAMPLES)
# Every other check of schemathesis runs. Excluded, with the reason:
EXCLUDED_CHECKS = [
    # "A request the schema allows must be accepted": the document cannot say what makes a request valid
    # beyond its shape (a model declared in the config, a date range, `/v0/funnel`'s steps as JSON in a
    # query string), so schema-valid requests are rightly answered 400 with `details`.
    schemathesis.checks.positive_data_acceptance,
    # Re-sends the request without auth through a new network connection, outside the in-process
    # session, so it cannot reach the app; the run without a key checks the same thing (`run` below).
    schemathesis.checks.ignored_auth,
]


@dataclass
class Api:
    world: World
    session: ASGIClient
    headers: dict[str, str]


def seed(world: World) -> None:
    """Instances, events and action jobs (failed: nothing listens on their URL), so that generated ids and
    queries find something."""
    world.identify(["c1", "ada@example.com"], displayName="Ada", properties={"plan": "pro"})
    world.identify(["acme"], model="organization", childIds=["c1"], childModel="customer")
    world.event("sign_up", ["c1"])
    world.event("development_api_call", ["c1"])
    world.run()


def open_api(world: World, credential: str) -> Api:
    seed(world)
    headers = bearer(world.keys[credential]) if credential in world.keys else {}
    return Api(world, ASGIClient(world.client.app), headers)


def check_operation(api: Api, operation: Any, mode: GenerationMode, examples: int) -> None:
    """Generated requests for one operation, each sent and its response checked against the document."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is shown as found
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(
            base_url=BASE_URL, session=api.session, headers=api.headers, excluded_checks=EXCLUDED_CHECKS
        )
        if not api.headers and operation.definition.raw.get("security"):
            assert response.status_code == 401, response.text

    try:
        run()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE  # an operation without parameters or body: nothing to negate
    except BaseException as failure:
        failure.add_note(
            f"{operation.label} ({mode.value} data, {'with' if api.headers else 'without'} a key)"
        )
        raise


@pytest.mark.slow
@pytest.mark.parametrize("credential", CREDENTIALS)
def test_every_operation_answers_as_documented(
    open_world: Callable[[Config], World], credential: str
) -> None:
    api = open_api(open_world(default_config()), credential)
    document = api.world.client.get("/openapi.json").json()
    operations = [result.ok() for result in schemathesis.openapi.from_dict(document).get_all_operations()]
    assert len(operations) >= 30
    positive, negative = EXAMPLES[credential]
    for operation in operations:
        check_operation(api, operation, GenerationMode.POSITIVE, positive)
        if negative:
            check_operation(api, operation, GenerationMode.NEGATIVE, negative)


STEPS = '[{"type":"track","event":"sign_up","name":"a"},{"type":"track","event":"development_api_call","name":"b"}]'
FUNNEL = {"date_from": "2026-03-01", "date_to": "2026-04-30", "steps": STEPS}
# (method, path template, path parameters, request keywords, status): every success shape at least once.
KNOWN: list[tuple[str, str, dict[str, Any], dict[str, Any], int]] = [
    ("POST", "/v0/events", {}, {"json": [{"event": "visit", "user_id": "u1"}]}, 200),
    ("POST", "/api/v1/identify", {}, {"json": {"model": "customer", "ids": ["c2"]}}, 200),
    (
        "POST",
        "/api/v1/events",
        {},
        {"json": [{"name": "sign_up", "ids": ["c2"]}, {"name": "nope", "ids": ["x"]}]},
        200,
    ),
    ("POST", "/api/v1/events", {}, {"json": {"name": "development_api_call", "ids": ["c2"]}}, 200),
    ("POST", "/v1/track", {}, {"json": {"userId": "u1", "event": "visit"}}, 200),
    (
        "POST",
        "/v1/batch",
        {},
        {"json": {"batch": [{"type": "track", "userId": "u1", "event": "x"}, {}]}},
        200,
    ),
    ("GET", "/v0/funnel", {}, {"params": FUNNEL}, 200),
    ("GET", "/v0/funnel", {}, {"params": {**FUNNEL, "funnel_type": "open", "breakdown": "device"}}, 200),
    ("GET", "/v0/funnel", {}, {"params": {**FUNNEL, "funnel_type": "strict", "breakdown": "device"}}, 200),
    ("GET", "/v0/funnel", {}, {"params": {**FUNNEL, "compare": "previous_period"}}, 200),
    ("GET", "/v0/funnel", {}, {"params": {**FUNNEL, "compare": "previous_period", "breakdown": "os"}}, 200),
    ("GET", "/v0/funnel/time_to_convert", {}, {"params": {**FUNNEL, "from_step": "1", "to_step": "2"}}, 200),
    (
        "GET",
        "/v0/funnel/time_to_convert",
        {},
        {"params": {**FUNNEL, "from_step": "1", "to_step": "2", "bins": "5", "breakdown": "device"}},
        200,
    ),
    ("GET", "/v0/funnel/trends", {}, {"params": {**FUNNEL, "interval": "week"}}, 200),
    ("GET", "/v0/funnel/trends", {}, {"params": {**FUNNEL, "funnel_type": "open", "breakdown": "os"}}, 200),
    ("GET", "/v0/funnel/people", {}, {"params": {**FUNNEL, "step": "2", "limit": "1"}}, 200),
    (
        "GET",
        "/v0/funnel/people",
        {},
        {
            "params": {
                **FUNNEL,
                **{"step": "2", "outcome": "dropped", "breakdown": "device", "breakdown_value": "Others"},
                "identity": "raw",
            }
        },
        200,
    ),
    ("GET", "/v0/funnel/people", {}, {"params": {**FUNNEL, "format": "csv", "breakdown": "os"}}, 200),
    ("GET", "/v0/funnel/people", {}, {"params": {**FUNNEL, "outcome": "later"}}, 400),
    ("GET", "/v0/funnels", {}, {}, 200),
    ("GET", "/v0/events/names", {}, {}, 200),
    ("GET", "/v0/events/properties", {}, {"params": {"type": "track", "event": "sign_up"}}, 200),
    (
        "GET",
        "/v0/events/values",
        {},
        {"params": {"type": "track", "event": "sign_up", "operand": "type"}},
        200,
    ),
    (
        "POST",
        "/v0/import",
        {},
        {"params": {"name": "h.ndjson"}, "content": b'{"event": "x", "user_id": "u1", "timestamp": 1}\n{}\n'},
        200,
    ),
    ("GET", "/v0/actions", {}, {}, 200),
    ("GET", "/v0/actions", {}, {"params": {"status": "held_out"}}, 200),
    ("GET", "/v0/actions", {}, {"params": {"status": "sent-ish"}}, 400),
    ("GET", "/v0/actions/summary", {}, {}, 200),
    ("GET", "/v0/lift", {}, {}, 200),
    ("GET", "/v0/lift", {}, {"params": {"funnel": "nope"}}, 404),
    (
        "PUT",
        "/v0/models/{model}/{instance_id}/subscriptions",
        {"model": "customer", "instance_id": "c1"},
        {"json": {"topic": "email:onboarding", "subscribed": False}},
        200,
    ),
    ("GET", "/v0/actions/{job_id}", {"job_id": 1}, {}, 200),
    ("POST", "/v0/actions/{job_id}/retry", {"job_id": 1}, {}, 200),
    ("POST", "/v0/actions/{job_id}/retry", {"job_id": 1}, {}, 409),
    ("GET", "/v0/models/{model}/{instance_id}", {"model": "customer", "instance_id": "c1"}, {}, 200),
    ("GET", "/v0/models/{model}/{instance_id}", {"model": "organization", "instance_id": "acme"}, {}, 200),
    ("GET", "/v0/users/{user_key}", {"user_key": "c1"}, {}, 200),
    ("GET", "/v0/users/{user_key}", {"user_key": "nobody"}, {}, 404),
    ("GET", "/v0/config", {}, {}, 200),
    ("POST", "/v0/config/reload", {}, {}, 200),
    ("GET", "/v0/keys", {}, {}, 200),
    ("POST", "/v0/keys", {}, {"json": {"name": "ci", "scopes": ["query:read"]}}, 201),
    ("POST", "/v0/saved_funnels", {}, {"json": {"name": "signups", "parameters": FUNNEL}}, 201),
    ("POST", "/v0/saved_funnels", {}, {"json": {"name": "signups", "parameters": FUNNEL}}, 409),
    ("GET", "/v0/saved_funnels", {}, {}, 200),
    ("GET", "/healthz", {}, {}, 200),
]


def test_known_requests_answer_as_documented(open_world: Callable[[Config], World]) -> None:
    """The success shapes that generated requests rarely reach (a funnel with real steps, an instance's
    timeline, a retried job, a created key), checked against the same document."""
    world = open_world(default_config())
    seed(world)
    world.svc.shipper.flush()
    document = world.client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    for method, template, path_parameters, keywords, status in KNOWN:
        path = template.format(**path_parameters)
        response = world.client.request(method, path, headers=world.admin, **keywords)
        assert response.status_code == status, (method, path, response.text)
        assert str(status) in document["paths"][template][method.lower()]["responses"], (method, path)
        schema[template][method].validate_response(response)
    funnel_id = world.client.get("/v0/saved_funnels", headers=world.admin).json()["data"][0]["id"]
    path = f"/v0/saved_funnels/{funnel_id}"
    update = {"name": "signups", "parameters": {**FUNNEL, "compare": "previous_period"}, "version": 1}
    for method, keywords, status in (
        ("GET", {}, 200),
        ("PUT", {"json": update}, 200),
        ("PUT", {"json": update}, 409),
        ("DELETE", {}, 200),
        ("GET", {}, 404),
    ):
        response = world.client.request(method, path, headers=world.admin, **keywords)
        assert response.status_code == status, (method, response.text)
        schema["/v0/saved_funnels/{funnel_id}"][method].validate_response(response)
    created = world.client.post("/v0/keys", json={"scopes": ["admin"]}, headers=world.admin).json()
    for status in (200, 409):
        response = world.client.post(f"/v0/keys/{created['id']}/revoke", headers=world.admin)
        assert response.status_code == status
        schema["/v0/keys/{key_id}/revoke"]["POST"].validate_response(response)


def test_the_delivery_statuses_are_enumerated_in_the_document(open_world: Callable[[Config], World]) -> None:
    """`held_out`, `capped` and `suppressed` (issue 15) are in every place the document lists the delivery
    log's statuses: the `status` filter of `GET /v0/actions`, a job's `status`, the summary's counts; and in
    docs/api.md's rows for those routes."""
    world = open_world(default_config())
    seed(world)
    document = world.client.get("/openapi.json").json()
    (parameter,) = (p for p in document["paths"]["/v0/actions"]["get"]["parameters"] if p["name"] == "status")
    schemas = document["components"]["schemas"]
    enums = {
        "filter": parameter["schema"]["enum"],
        "job": schemas["ActionJob"]["properties"]["status"]["enum"],
        "summary": schemas["ActionStatusCounts"]["properties"]["statuses"]["propertyNames"]["enum"],
        "summary keys": schemas["ActionStatusCounts"]["properties"]["statuses"]["required"],
    }
    for where, enum in enums.items():
        assert enum == list(STATUSES), where
        assert {"held_out", "capped", "suppressed"} <= set(enum), where
    summary = world.client.get("/v0/actions/summary", headers=world.admin).json()["data"]
    assert summary and all(list(row["statuses"]) == list(STATUSES) for row in summary)
    api_md = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    for route in ("| `GET /v0/actions` |", "| `GET /v0/actions/summary` |"):
        (row,) = (line for line in api_md.splitlines() if line.startswith(route))
        assert all(f"`{status}`" in row or status in row for status in STATUSES), (route, row)
