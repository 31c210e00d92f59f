"""`GET /v0/funnel/people`'s analytics: the SQL (`run_people` on chDB) against the oracle
(`reference_people`), on hand-made cases and on the property tests' random funnels; the counts against
`/v0/funnel`'s rows; pages read in order against the whole list; its parameters' validation."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from funnels.analytics.funnel import run_funnel
from funnels.analytics.people import PeopleQuery, parse_people_query, people_csv, run_people
from funnels.analytics.query import QueryValidationError
from funnels.analytics.reference import reference_people, siphash64
from funnels.events import Event
from funnels.store.events import EventStore
from tests.analytics.conftest import at, day, ev, funnel_query, load, step
from tests.analytics.test_property import (
    PROFILE,
    cases,
    examples,
    exclusive_kinds,
    overlapping_kinds,
    with_identities,
)

STEPS = [step("event", "page"), step("track", "connect"), step("track", "swap")]
BASE = {"date_from": day(0), "date_to": day(0), "steps": '[{"type":"event","event":"page","name":"p"},'
        '{"type":"track","event":"connect","name":"c"},{"type":"track","event":"swap","name":"s"}]'}  # fmt: skip


def people(step_: int = 1, outcome: str = "reached", limit: int = 100, **params: Any) -> PeopleQuery:
    return PeopleQuery(funnel_query(STEPS, **params), step_, outcome, limit)  # type: ignore[arg-type]


def both(store: EventStore, query: PeopleQuery, events: list[Event]) -> dict[str, Any]:
    load(store, events)
    sql, reference = run_people(store, query), reference_people(query, events)
    assert {**sql, "statistics": {}} == reference
    return sql


EVENTS = [
    ev("a", at(0, 1000), "page", device="mobile"),
    ev("a", at(0, 2000), "track", "connect"),
    ev("a", at(0, 3000), "track", "swap"),
    ev("b", at(0, 1000), "page", device="desktop"),
    ev("b", at(0, 5000), "track", "connect"),
    ev("c", at(0, 1000), "page"),
]


def test_reached_converted_and_dropped(store: EventStore) -> None:
    reached = both(store, people(2), EVENTS)
    assert [row["user_key"] for row in reached["data"]] == sorted(["a", "b"], key=siphash64)
    assert reached["users"] == 2 and reached["next_cursor"] is None and reached["event"] == "connect::1"
    a = next(row for row in reached["data"] if row["user_key"] == "a")
    assert a == {
        "user_key": "a",
        "last_step": 3,
        "times": ["2026-04-01T00:00:01.000Z", "2026-04-01T00:00:02.000Z", "2026-04-01T00:00:03.000Z"],
    }
    assert [row["user_key"] for row in both(store, people(1, "converted"), EVENTS)["data"]] == ["a"]
    dropped = both(store, people(2, "dropped"), EVENTS)  # reached step 1, not step 2
    assert [(row["user_key"], row["times"][1]) for row in dropped["data"]] == [("c", None)]
    assert [row["user_key"] for row in both(store, people(3, "dropped"), EVENTS)["data"]] == ["b"]


def test_breakdown_value_and_csv(store: EventStore) -> None:
    body = both(store, people(1, breakdown="device"), EVENTS)
    assert {row["user_key"]: row["breakdown"] for row in body["data"]} == {
        "a": "mobile",
        "b": "desktop",
        "c": "(none)",
    }
    lines = people_csv(body, breakdown=True).splitlines()
    assert lines[0] == "user_key,last_step,breakdown,step_1_at,step_2_at,step_3_at"
    assert "c,1,(none),2026-04-01T00:00:01.000Z,," in lines and len(lines) == 4


def test_one_breakdown_row_s_people(store: EventStore) -> None:
    events = [
        *EVENTS,
        ev("d", at(0, 1000), "page", device="mobile"),
        ev("e", at(0, 1000), "page", device="tv"),
    ]
    query = people(1, breakdown="device", breakdown_top_n=1)  # mobile (a, d) is kept; the rest is Others
    load(store, events)
    rows = {
        row["breakdown"]: row["users"] for row in run_funnel(store, query.funnel)["data"] if row["step"] == 1
    }
    assert rows == {"mobile": 2, "Others": 3}
    for label, keys in (("mobile", ["a", "d"]), ("Others", ["b", "c", "e"]), ("desktop", [])):
        body = both(store, replace(query, breakdown_value=label), events)
        assert sorted(row["user_key"] for row in body["data"]) == keys and body["breakdown_value"] == label
    others = both(store, replace(query, breakdown_value="Others"), events)
    assert {row["breakdown"] for row in others["data"]} == {"desktop", "(none)", "tv"}  # their own values


def test_counts_equal_the_funnel_rows(store: EventStore) -> None:
    load(store, EVENTS)
    for query in (people(), people(funnel_type="open")):
        rows = run_funnel(store, query.funnel)["data"]
        for k in (1, 2, 3):
            assert run_people(store, replace(query, step=k))["users"] == rows[k - 1]["users"]
            if k > 1:
                dropped = run_people(store, replace(query, step=k, outcome="dropped"))["users"]
                assert dropped == rows[k - 2]["users"] - rows[k - 1]["users"]
        assert run_people(store, replace(query, outcome="converted"))["users"] == rows[-1]["users"]


def test_pages_in_order_hold_everyone_once(store: EventStore) -> None:
    events = [ev(f"u{i}", at(0, i), "page") for i in range(23)]
    load(store, events)
    query, seen = people(1, limit=5), []
    while True:
        body = run_people(store, query)
        assert body["users"] == 23 and body["rows"] <= 5
        seen += [row["user_key"] for row in body["data"]]
        if body["next_cursor"] is None:
            break
        query = replace(query, after=int(body["next_cursor"], 16))
    assert seen == sorted((f"u{i}" for i in range(23)), key=siphash64)


def test_a_stitched_person_shows_the_user_id(store: EventStore) -> None:
    events = [
        ev("", at(0, 0), "page", anonymous_id="anon1"),
        ev("u1", at(0, 500), "identify", anonymous_id="anon1"),
        ev("u1", at(0, 2000), "track", "connect"),
        ev("", at(0, 0), "page", anonymous_id="anon2"),  # never identified: its own person
    ]
    stitched = both(store, people(1), events)
    assert sorted(row["user_key"] for row in stitched["data"]) == ["anon2", "u1"]
    raw = both(store, replace(people(1), funnel=replace(people(1).funnel, identity="raw")), events)
    assert sorted(row["user_key"] for row in raw["data"]) == ["anon1", "anon2"]


def test_siphash64_is_clickhouses(store: EventStore) -> None:
    texts = ["", "a", "user_123", "x" * 7, "y" * 8, "z" * 17, "é漢字"]
    rows = store.query("SELECT arrayMap(t -> sipHash64(t), {texts:Array(String)})", {"texts": texts}).rows
    assert [int(h) for h in rows[0][0]] == [siphash64(text) for text in texts]


@pytest.mark.parametrize(
    ("params", "errors"),
    [
        ({"step": "4"}, {"step": "must be between 1 and 3"}),
        ({"outcome": "left"}, {"outcome": "must be reached, converted or dropped"}),
        ({"outcome": "dropped"}, {"step": "required with outcome=dropped (2 or more)"}),
        ({"outcome": "dropped", "step": "1"}, {"step": "must be 2 or more with outcome=dropped (the users who reached the step before)"}),
        ({"limit": "0", "cursor": "zz"}, {"limit": "must be between 1 and 10000", "cursor": "must be the next_cursor of a previous page"}),
        ({"format": "xml"}, {"format": "must be json or csv"}),
        ({"breakdown_value": "mobile"}, {"breakdown_value": "needs breakdown (a row's breakdown label)"}),
        ({"breakdown_value": "", "breakdown": "device"}, {"breakdown_value": "must be a non-empty string"}),
        ({"format": "csv", "limit": "1000001"}, {"limit": "must be between 1 and 1000000"}),
        ({"steps": "[]", "step": "2"}, {"steps": "must be a JSON array of 2–10 step specs"}),
    ],
)  # fmt: skip
def test_parameter_errors_name_each_parameter(params: dict[str, str], errors: dict[str, str]) -> None:
    with pytest.raises(QueryValidationError) as raised:
        parse_people_query(BASE | params)
    assert raised.value.details == errors


def test_parameters_parse() -> None:
    query = parse_people_query(BASE)
    assert (query.step, query.outcome, query.limit, query.after, query.format) == (
        1,
        "reached",
        100,
        None,
        "json",
    )
    query = parse_people_query(BASE | {"step": "3", "outcome": "dropped", "cursor": "00000000000000ff"})
    assert (query.step, query.outcome, query.after) == (3, "dropped", 255)
    assert parse_people_query(BASE | {"format": "csv"}).limit == 1_000_000


@st.composite
def people_cases(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> tuple[PeopleQuery, list[Event], int]:
    funnel, events, batches = draw(base)
    outcome = draw(st.sampled_from(["reached", "reached", "converted", "dropped"]))
    step_ = draw(st.integers(2 if outcome == "dropped" else 1, len(funnel.steps)))
    value = None
    if funnel.breakdown and draw(st.booleans()):
        value = draw(st.sampled_from(["Others", "(none)", "mobile", "desktop", "google", "twitter"]))
    limit = draw(st.sampled_from([1, 2, 100]))
    return PeopleQuery(funnel, step_, outcome, limit, breakdown_value=value), events, batches


@pytest.mark.slow
@settings(PROFILE, max_examples=examples(50))
@given(
    case=people_cases(
        st.one_of(
            cases(
                st.one_of(exclusive_kinds(), overlapping_kinds(2, 4)), ["closed", "open", "strict"], walk=True
            ),
            cases(exclusive_kinds(2, 3), ["closed", "open", "strict"], bucket_names=True),
            with_identities(cases(exclusive_kinds(), ["closed", "open", "strict"])),
        )
    )
)
def test_people_equal_reference_page_by_page(store: EventStore, case: Any) -> None:
    query, events, batches = case
    load(store, events, batches)
    everyone = reference_people(replace(query, limit=10_000), events)
    seen: list[str] = []
    while True:
        sql, reference = run_people(store, query), reference_people(query, events)
        assert {**sql, "statistics": {}} == reference
        seen += [row["user_key"] for row in sql["data"]]
        if sql["next_cursor"] is None:
            break
        query = replace(query, after=int(sql["next_cursor"], 16))
    assert seen == [row["user_key"] for row in everyone["data"]]  # type: ignore[union-attr]
    rows = [
        row
        for row in run_funnel(store, query.funnel)["data"]
        if query.breakdown_value is None or row["breakdown"] == query.breakdown_value
    ]

    def at_step(k: int) -> int:
        return sum(row["users"] for row in rows if row["step"] == k)

    n = len(query.funnel.steps)
    expected = {
        "reached": at_step(query.step),
        "converted": at_step(n),
        "dropped": at_step(query.step - 1) - at_step(query.step),
    }[query.outcome]
    assert everyone["users"] == expected == len(seen)
