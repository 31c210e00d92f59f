"""No input, however malformed, produces a 5xx: arbitrary parameters and bodies against the real app."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnels.api.ratelimit import RateLimiter
from funnels.events import Event
from funnels.services import Services
from funnels.store.identity import claim_ids, create_instance, owners_in
from tests.conftest import bearer

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "type",
    "event",
    "name",
    "filters",
    "operand",
    "operator",
    "value",
    "user_id",
    "userId",
    "timestamp",
    "batch",
]
STEP = st.fixed_dictionaries(
    {},
    optional={
        "type": JSON | st.sampled_from(["event", "track", "page"]),
        "event": JSON | st.sampled_from(["page", "connect"]),
        "name": JSON,
        "filters": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "operand": JSON | st.sampled_from(["device", "price", ""]),
                    "operator": JSON | st.sampled_from(["equals", "in", "gt", "includes"]),
                    "value": JSON,
                },
            ),
            max_size=3,
        )
        | JSON,
    },
)
VALID_STEPS = st.lists(
    st.builds(
        lambda kind, event, filters: {"type": kind, "event": event, "filters": filters},
        st.sampled_from(["event", "track", "page", "transaction"]),
        st.sampled_from(["page", "connect", "track"]) | st.text(min_size=1, max_size=8),
        st.lists(
            st.builds(
                lambda operand, operator, value: {"operand": operand, "operator": operator, "value": value},
                st.sampled_from(["device", "page_path", "price", "chain"]) | st.text(min_size=1, max_size=8),
                st.sampled_from(["equals", "notEquals", "in", "notIn", "startsWith", "endsWith", "includes"]),
                st.text(max_size=12),
            ),
            max_size=3,
        ),
    ),
    min_size=2,
    max_size=10,
).map(lambda steps: json.dumps([{**step, "name": f"s{i}"} for i, step in enumerate(steps)]))
EXCLUSION = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["track", "page", "event"]) | JSON,
        "event": st.sampled_from(["mint", "page", "connect"]) | JSON,
        "from_step": st.integers(0, 3) | JSON,
        "to_step": st.integers(1, 4) | JSON,
    },
    optional={"filters": STEP.map(lambda step: step.get("filters", []))},
)
EXCLUSIONS = st.one_of(
    st.lists(EXCLUSION, max_size=3).map(json.dumps),
    st.lists(
        st.builds(
            lambda f, g: {"type": "track", "event": "mint", "from_step": f, "to_step": f + g},
            st.integers(1, 2),
            st.integers(1, 2),
        ),
        min_size=1,
        max_size=3,
    ).map(json.dumps),
    JSON.map(json.dumps),
    st.text(max_size=20),
)
VALID_SAMPLE = st.sampled_from(["0.1", "0.5", ".25", "1", "", "0.0001"])
BAD_SAMPLE = st.sampled_from(
    ["0", "-0.1", "2", "1e-3", "0.00001", "nan", "inf", "10%", "1/10", "0x1", "½", "0.1 "]
)
PARAMS = st.fixed_dictionaries(
    {
        # Mostly valid dates, so that many generated queries get past validation and run as SQL.
        "date_from": st.sampled_from(["2026-04-01"] * 6 + ["1970-01-01", "", "x", "2026-02-30"]),
        "date_to": st.sampled_from(["2026-04-30"] * 6 + ["2199-12-31", "0000-00-00"]),
        "steps": st.one_of(
            VALID_STEPS, VALID_STEPS, st.lists(STEP, max_size=11).map(json.dumps), st.text(max_size=40)
        ),
    },
    optional={
        "window_seconds": st.integers(-(10**20), 10**20).map(str)
        | st.sampled_from(["1", "86400", "316224000"]),
        "funnel_type": st.sampled_from(["open", "closed", "strict", "", "OPEN"]),
        "breakdown": st.sampled_from(["device", "referrer", "", "properties"]),
        "breakdown_top_n": st.integers(-5, 10**12).map(str),
        "compare": st.sampled_from(["previous_period", "previous_period", "", "x", "PREVIOUS_PERIOD"]),
        "exclusions": EXCLUSIONS,
        "hold_constant": st.sampled_from(
            ['["properties.chain"]', '["device", "properties.x"]', "[]", "[1]", "x"]
        )
        | JSON.map(json.dumps),
        # No model is declared here: always a 400 (tests/api/test_aggregate_by.py fuzzes it with models).
        "aggregate_by": st.sampled_from(["organization", "", "x" * 300]) | st.text(max_size=12),
        # Mostly valid (three branches in four: the saved funnels' fuzz saves these parameters), and the ways
        # a fraction goes wrong.
        "sample": st.one_of(VALID_SAMPLE, VALID_SAMPLE, VALID_SAMPLE, BAD_SAMPLE),
    },
)
STATUSES: list[int] = []
SUPPRESS = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=150, deadline=None, suppress_health_check=SUPPRESS, derandomize=True)
@given(params=PARAMS)
def test_funnel_never_answers_5xx(client: TestClient, keys: dict[str, str], params: dict[str, str]) -> None:
    response = client.get("/v0/funnel", params=params, headers=bearer(keys["query:read"]))
    assert response.status_code in (200, 400), response.text
    STATUSES.append(response.status_code)

    if response.status_code == 400:
        assert response.json()["error"]["code"] == "INVALID_VALIDATION_REQUEST"


@settings(max_examples=150, deadline=None, suppress_health_check=SUPPRESS, derandomize=True)
@given(body=JSON | st.lists(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6), max_size=3))
def test_event_endpoints_never_answer_5xx(client: TestClient, keys: dict[str, str], body: object) -> None:
    for path in ("/v0/events", "/v1/track", "/v1/batch"):
        wrapped = {"batch": body} if path == "/v1/batch" and isinstance(body, list) else body
        response = client.post(path, content=json.dumps(wrapped), headers=bearer(keys["events:write"]))
        assert response.status_code < 500, (path, response.text)
        if response.status_code >= 400:
            assert set(response.json()["error"]) >= {"code", "message", "doc_url"}


def test_the_funnel_fuzz_reached_the_sql_path() -> None:
    """Runs after the fuzz test (file order): some generated queries must have been valid and executed."""
    assert STATUSES.count(200) >= 5, STATUSES.count(200)


EXCLUDING: list[str] = []  # the exclusions of the queries that ran with some


@settings(max_examples=80, deadline=None, suppress_health_check=SUPPRESS, derandomize=True)
@given(exclusions=EXCLUSIONS, funnel_type=st.sampled_from(["closed", "closed", "open", "strict"]))
def test_exclusions_never_answer_5xx(
    client: TestClient, keys: dict[str, str], exclusions: str, funnel_type: str
) -> None:
    steps = [{"type": "event", "event": "page"}, {"type": "track", "event": "connect"}]
    steps += [{"type": "track", "event": "swap"}]
    params = {
        "date_from": "2026-04-01",
        "date_to": "2026-04-30",
        "steps": json.dumps([{**step, "name": f"s{i}"} for i, step in enumerate(steps)]),
        "funnel_type": funnel_type,
        "exclusions": exclusions,
    }
    for path in ("/v0/funnel", "/v0/funnel/time_to_convert", "/v0/funnel/trends", "/v0/funnel/people"):
        response = client.get(path, params=params, headers=bearer(keys["query:read"]))
        assert response.status_code in (200, 400), (path, response.text)
        if response.status_code == 400:
            assert response.json()["error"]["code"] == "INVALID_VALIDATION_REQUEST"
        elif exclusions not in ("[]", ""):
            EXCLUDING.append(exclusions)


def test_the_exclusions_fuzz_reached_the_sql_path() -> None:
    """Runs after the exclusions' fuzz test (file order): some queries with exclusions must have run (16 to
    25 of its 80 examples do, depending on what Hypothesis' example database replays first)."""
    assert len(EXCLUDING) >= 10, len(EXCLUDING)


ANALYSIS_STATUSES: list[int] = []
STEP_NUMBER = st.integers(-2, 12).map(str) | st.sampled_from(["", "x", "1.0", "99999999999999999999999"])
ANALYSIS_PARAMS = PARAMS.flatmap(
    lambda params: st.fixed_dictionaries(
        {},
        optional={
            "from_step": STEP_NUMBER,
            "to_step": STEP_NUMBER,
            "bins": st.integers(-1, 102).map(str) | st.sampled_from(["", "auto", "x", "1e2"]),
            "interval": st.sampled_from(["day", "week", "month", "", "year", "DAY"]),
            "step": STEP_NUMBER,
            "outcome": st.sampled_from(["reached", "converted", "dropped", "", "left", "DROPPED"]),
            "limit": st.integers(-1, 10_002).map(str) | st.sampled_from(["", "x", "1000000", "1000001"]),
            "cursor": st.text(max_size=17)
            | st.sampled_from(["0000000000000000", "ffffffffffffffff", "FFFF"]),
            "format": st.sampled_from(["json", "csv", "", "xml"]),
            "breakdown_value": st.sampled_from(["mobile", "Others", "(none)", "", "x" * 1001]),
        },
    ).map(lambda extra: params | extra)
)


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=SUPPRESS, derandomize=True)
@given(params=ANALYSIS_PARAMS)
def test_funnel_analyses_never_answer_5xx(
    client: TestClient, keys: dict[str, str], services: Services, params: dict[str, str]
) -> None:
    if services.events.count() == 0:
        services.events.insert_events(
            [
                Event(
                    event_id=f"e{i}",
                    type=type_,
                    event=name,
                    user_key="u1",
                    user_id="u1",
                    ts_ms=1_775_001_600_000 + i * 1000,
                    received_ms=1_775_001_600_000,
                    properties={},
                    columns={"device": "mobile"},
                )
                for i, (type_, name) in enumerate(
                    [("page", "page"), ("track", "connect"), ("track", "track")]
                )
            ]
        )
    for path in ("/v0/funnel/time_to_convert", "/v0/funnel/trends", "/v0/funnel/people"):
        response = client.get(path, params=params, headers=bearer(keys["query:read"]))
        assert response.status_code in (200, 400), (path, response.text)
        ANALYSIS_STATUSES.append(response.status_code)
        if response.status_code == 400:
            assert response.json()["error"]["code"] == "INVALID_VALIDATION_REQUEST"


@pytest.mark.slow
def test_the_analyses_fuzz_reached_the_sql_path() -> None:
    """Runs after the analyses' fuzz test (file order): some generated queries must have run."""
    assert ANALYSIS_STATUSES.count(200) >= 10, ANALYSIS_STATUSES.count(200)


CATALOG_STATUSES: list[int] = []
TEXT = st.text(max_size=12) | st.sampled_from(
    ["track", "page", "event", "connect", "device", "chain", "MetaMask"]
)
CATALOG_PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "type": TEXT,
        "event": TEXT,
        "operand": TEXT,
        "q": TEXT,
        "cursor": TEXT,
        "limit": st.integers(-5, 10**21).map(str) | st.sampled_from(["", "1", "x"]),
        "date_from": st.sampled_from(["2026-04-01", "", "1970-01-01", "2026-02-30", "x"]),
        "dateTo": st.sampled_from(["2026-04-30", "2199-12-31", "0000-00-00"]),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=SUPPRESS, derandomize=True)
@given(params=CATALOG_PARAMS)
def test_catalog_endpoints_never_answer_5xx(
    client: TestClient, keys: dict[str, str], services: Services, params: dict[str, str]
) -> None:
    if services.events.count() == 0:
        services.events.insert_events(
            [
                Event(
                    event_id="e1",
                    type="track",
                    event="connect",
                    user_key="u1",
                    user_id="u1",
                    ts_ms=1_775_001_600_000,
                    received_ms=1_775_001_600_000,
                    properties={"chain": "base", "n": 1.5, "": None, "nested": {"a": [1]}},
                    columns={"device": "mobile"},
                )
            ]
        )
    for path in ("/v0/events/names", "/v0/events/properties", "/v0/events/values", "/v0/events/users"):
        response = client.get(path, params=params, headers=bearer(keys["query:read"]))
        assert response.status_code in (200, 400), (path, response.text)
        CATALOG_STATUSES.append(response.status_code)
        if response.status_code == 400:
            assert response.json()["error"]["code"] == "INVALID_VALIDATION_REQUEST"


def test_the_catalog_fuzz_reached_the_sql_path() -> None:
    """Runs after the catalog fuzz test (file order): some generated queries must have run."""
    assert CATALOG_STATUSES.count(200) >= 30, CATALOG_STATUSES.count(200)


MODEL_LIST_PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "q": TEXT | st.sampled_from(["%", "_", "\\", "'", "x" * 501]),
        "limit": st.integers(-5, 10**21).map(str) | st.sampled_from(["", "1", "x"]),
        "cursor": st.integers(-5, 10**21).map(str) | st.text(max_size=12),
    },
)
MODEL_LIST_STATUSES: list[int] = []


@settings(max_examples=100, deadline=None, suppress_health_check=SUPPRESS, derandomize=True)
@given(model=TEXT, params=MODEL_LIST_PARAMS)
def test_the_model_list_never_answers_5xx(
    client: TestClient, keys: dict[str, str], model: str, params: dict[str, str]
) -> None:
    path = f"/v0/models/{quote(model, safe='') or 'customer'}"
    response = client.get(path, params=params, headers=bearer(keys["admin"]))
    assert response.status_code in (200, 400, 404), response.text
    MODEL_LIST_STATUSES.append(response.status_code)
    if response.status_code != 200:
        assert response.json()["error"]["code"] in ("INVALID_VALIDATION_REQUEST", "NOT_FOUND")


def test_the_model_list_fuzz_reached_the_query() -> None:
    """Runs after the model list's fuzz test (file order): some generated requests must have been answered."""
    assert MODEL_LIST_STATUSES.count(200) >= 20, MODEL_LIST_STATUSES.count(200)


SAVED_STATUSES: list[int] = []


def _steps_list(steps: str) -> object:
    """`steps` as an array when it is JSON (a saved funnel takes either), else the text as it is."""
    try:
        return json.loads(steps)
    except ValueError:
        return steps


SAVED_BODY = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=12) | st.sampled_from(["A", " A ", "x" * 201, "a\x00b"]) | JSON,
        "parameters": PARAMS.map(lambda params: {**params, "steps": _steps_list(params["steps"])})
        | PARAMS
        | st.dictionaries(st.sampled_from(["steps", "date_from", "limit", "compare", ""]), JSON, max_size=3)
        | JSON,
        "version": st.integers(-2, 3) | st.sampled_from([10**30, "1", 1.5, None, True]) | JSON,
        "extra": JSON,
    },
)
# Mostly well-formed: a name and the funnel fuzz's parameters (many of them valid).
SAVED_LIKELY = st.fixed_dictionaries(
    {
        "name": st.text(st.characters(codec="utf-8", min_codepoint=32), min_size=1, max_size=12),
        # a bad `sample` fails the whole body (SAVED_BODY keeps those): here a valid one where there is one
        "parameters": PARAMS.flatmap(
            lambda params: VALID_SAMPLE.map(
                lambda sample: params | {"sample": sample} if "sample" in params else params
            )
        ),
    }
)
SAVED_ID = st.sampled_from(["", "0123456789abcdef", "zz", "a" * 40, "%00", "..", "ab/cd"]) | st.text(
    max_size=20
)


@settings(max_examples=150, deadline=None, suppress_health_check=SUPPRESS, derandomize=True)
@given(body=SAVED_LIKELY | SAVED_LIKELY | SAVED_BODY | JSON, funnel_id=SAVED_ID)
def test_saved_funnel_endpoints_never_answer_5xx(
    client: TestClient, keys: dict[str, str], body: object, funnel_id: str
) -> None:
    headers = bearer(keys["query:read"])
    created = client.post("/v0/saved_funnels", content=json.dumps(body), headers=headers)
    assert created.status_code in (201, 400, 409), created.text
    SAVED_STATUSES.append(created.status_code)
    target = created.json()["id"] if created.status_code == 201 else quote(funnel_id, safe="")
    path = f"/v0/saved_funnels/{target}"
    for method in ("PUT", "GET", "DELETE"):
        kwargs = {"content": json.dumps(body)} if method == "PUT" else {}
        response = client.request(method, path, headers=headers, **kwargs)
        assert response.status_code in (200, 400, 404, 409), (method, path, response.text)
        if response.status_code >= 400:
            assert set(response.json()["error"]) >= {"code", "message", "doc_url"}
    assert client.get("/v0/saved_funnels", headers=headers).status_code == 200


def test_the_saved_funnel_fuzz_saved_some() -> None:
    """Runs after the saved funnels' fuzz test (file order): some generated bodies must have been saved."""
    assert SAVED_STATUSES.count(201) >= 5, SAVED_STATUSES.count(201)


UNSUBSCRIBE_STATUSES: list[int] = []
TOPICS = st.sampled_from(["email", "email:tips", "sms:x", "slack", "", "email:Tips"]) | st.text(max_size=12)


def _signed(services: Services, payload: bytes) -> str:
    """A token whose signature is right for an arbitrary payload (what only the server could make)."""
    encoded = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return f"{encoded}.{services.worker.tokens._signature(encoded)}"


@settings(max_examples=150, deadline=None, suppress_health_check=SUPPRESS, derandomize=True)
@given(
    kind=st.sampled_from(["text", "signed", "made", "real"]),
    text=st.text(max_size=300),
    # Ids no instance has (the only one is 1): a signed payload is then a 404 whatever else it holds.
    payload=st.binary(max_size=60)
    | st.builds(lambda i, t: f"{i}.{t}".encode(), st.integers(-5, 0) | st.integers(1000, 10**20), TOPICS),
    instance=st.integers(1, 3),
    topic=st.sampled_from(["email", "email:tips", "sms:reminders"]),
    method=st.sampled_from(["GET", "POST"]),
    body=st.binary(max_size=100)
    | st.sampled_from([b"scope=all", b"List-Unsubscribe=One-Click", b"scope=%ff"]),
    form=st.booleans(),
)
def test_unsubscribe_links_never_answer_5xx(
    client: TestClient,
    services: Services,
    kind: str,
    text: str,
    payload: bytes,
    instance: int,
    topic: str,
    method: str,
    body: bytes,
    form: bool,
) -> None:
    client.app.state.unsubscribe_limiter = RateLimiter(10**9, 10**9)  # type: ignore[attr-defined]
    with services.state.write() as connection:
        if not owners_in(connection, "customer", ["ada"]):
            ada = create_instance(connection, "customer", "ada", "Ada", '{"email": "ada@example.com"}', 1)
            claim_ids(connection, "customer", ["ada"], ada, 0)
        ada = owners_in(connection, "customer", ["ada"])["ada"]
    token = {
        "text": text,
        "signed": _signed(services, payload),
        "made": services.worker.tokens.make(ada + instance, topic),  # no such instance
        "real": services.worker.tokens.make(ada, topic),
    }[kind]
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if form else {}
    response = client.request(method, f"/u/{quote(token, safe='') or 'x'}", content=body, headers=headers)
    assert response.status_code == (200 if kind == "real" else 404), (kind, token, response.text)
    UNSUBSCRIBE_STATUSES.append(response.status_code)


def test_the_unsubscribe_fuzz_reached_both_answers() -> None:
    assert UNSUBSCRIBE_STATUSES.count(200) >= 5 and UNSUBSCRIBE_STATUSES.count(404) >= 50
