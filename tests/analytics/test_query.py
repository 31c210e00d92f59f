"""`parse_funnel_query`: defaults, aliases, every validation error (keyed by parameter path), and bounds."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from funnels.analytics.query import (
    DEFAULT_TOP_N,
    DEFAULT_WINDOW_SECONDS,
    MAX_FILTERS_PER_STEP,
    MAX_TEXT,
    MAX_TOP_N,
    MAX_WINDOW_SECONDS,
    OPERATORS,
    Filter,
    FunnelQuery,
    QueryValidationError,
    Step,
    parse_funnel_query,
)
from funnels.types import BREAKDOWN_COLUMNS

TWO_STEPS = [
    {"type": "event", "event": "page", "name": "page::0"},
    {"type": "track", "event": "connect", "name": "connect::1"},
]


def params(**overrides: Any) -> dict[str, Any]:
    """Valid raw parameters (strings, as from a query string), with overrides; None removes a key."""
    raw: dict[str, Any] = {"date_from": "2026-04-01", "date_to": "2026-04-30", "steps": json.dumps(TWO_STEPS)}
    raw |= overrides
    return {key: value for key, value in raw.items() if value is not None}


def errors(**overrides: Any) -> dict[str, str]:
    with pytest.raises(QueryValidationError) as caught:
        parse_funnel_query(params(**overrides))
    return caught.value.details


def steps_with(*extra: dict[str, Any], first: dict[str, Any] | None = None) -> str:
    return json.dumps([first or TWO_STEPS[0], TWO_STEPS[1], *extra])


def with_filters(*filters: Any) -> str:
    return steps_with(first={**TWO_STEPS[0], "filters": list(filters)})


# --- defaults and accepted forms ---


def test_defaults() -> None:
    query = parse_funnel_query(params())
    assert query == FunnelQuery(
        date_from=date(2026, 4, 1),
        date_to=date(2026, 4, 30),
        steps=(Step("event", "page", "page::0"), Step("track", "connect", "connect::1")),
        window_seconds=1_209_600,
        funnel_type="closed",
        breakdown=None,
        breakdown_top_n=8,
    )
    assert (DEFAULT_WINDOW_SECONDS, DEFAULT_TOP_N) == (1_209_600, 8)


def test_empty_strings_mean_defaults() -> None:
    query = parse_funnel_query(params(window_seconds="", funnel_type="", breakdown="", breakdown_top_n=""))
    assert (query.window_seconds, query.funnel_type, query.breakdown, query.breakdown_top_n) == (
        1_209_600,
        "closed",
        None,
        8,
    )


def test_every_parameter_set() -> None:
    query = parse_funnel_query(
        params(window_seconds="86400", funnel_type="open", breakdown="utm_source", breakdown_top_n="3")
    )
    assert (query.window_seconds, query.funnel_type, query.breakdown, query.breakdown_top_n) == (
        86_400,
        "open",
        "utm_source",
        3,
    )


def test_camel_case_date_aliases() -> None:
    query = parse_funnel_query(
        params(date_from=None, date_to=None, dateFrom="2026-04-02", dateTo="2026-04-03")
    )
    assert (query.date_from, query.date_to) == (date(2026, 4, 2), date(2026, 4, 3))


def test_snake_case_date_wins_over_alias() -> None:
    query = parse_funnel_query(params(dateFrom="2026-01-01", dateTo="2026-12-31"))
    assert (query.date_from, query.date_to) == (date(2026, 4, 1), date(2026, 4, 30))


def test_one_day_range_is_valid() -> None:
    query = parse_funnel_query(params(date_from="2026-04-05", date_to="2026-04-05"))
    assert query.date_from == query.date_to == date(2026, 4, 5)


def test_steps_may_be_an_already_parsed_list_or_bytes() -> None:
    assert parse_funnel_query(params(steps=TWO_STEPS)).steps == parse_funnel_query(params()).steps
    assert (
        parse_funnel_query(params(steps=json.dumps(TWO_STEPS).encode())).steps
        == parse_funnel_query(params()).steps
    )


@pytest.mark.parametrize("count", [2, 10])
def test_two_to_ten_steps(count: int) -> None:
    steps = [{"type": "track", "event": f"e{i}", "name": f"e::{i}"} for i in range(count)]
    assert len(parse_funnel_query(params(steps=json.dumps(steps))).steps) == count


def test_filters_are_parsed_in_order_and_missing_filters_mean_none() -> None:
    raw = with_filters(
        {"operand": "device", "operator": "equals", "value": "mobile"},
        {"operand": "price", "operator": "gte", "value": "1e2"},
        {"operand": "chain", "operator": "in", "value": "ethereum|base"},
    )
    first, second = parse_funnel_query(params(steps=raw)).steps
    assert first.filters == (
        Filter("device", "equals", "mobile"),
        Filter("price", "gte", "1e2"),
        Filter("chain", "in", "ethereum|base"),
    )
    assert first.filters[1].number == 100.0
    assert first.filters[2].values == ("ethereum", "base")
    assert first.filters[0].is_column and not first.filters[1].is_column
    assert second.filters == ()
    assert parse_funnel_query(params(steps=with_filters())).steps[0].filters == ()
    assert (
        parse_funnel_query(params(steps=steps_with(first={**TWO_STEPS[0], "filters": None}))).steps[0].filters
        == ()
    )


@pytest.mark.parametrize("operator", OPERATORS)
def test_every_operator_is_accepted(operator: str) -> None:
    raw = with_filters({"operand": "price", "operator": operator, "value": "100"})
    assert parse_funnel_query(params(steps=raw)).steps[0].filters == (Filter("price", operator, "100"),)


def test_json_numbers_in_filter_values_and_step_fields_become_text() -> None:
    raw = json.dumps(
        [
            {
                "type": "track",
                "event": 42,
                "name": "n::0",
                "filters": [{"operand": "p", "operator": "gt", "value": 1.5}],
            },
            {
                "type": "track",
                "event": "x",
                "name": 7,
                "filters": [{"operand": "chain_id", "operator": "equals", "value": 1}],
            },
        ]
    )
    first, second = parse_funnel_query(params(steps=raw)).steps
    assert (first.event, first.filters[0].value, first.filters[0].number) == ("42", "1.5", 1.5)
    assert (second.name, second.filters[0].value) == ("7", "1")


def test_string_operators_accept_an_empty_value() -> None:
    raw = with_filters({"operand": "device", "operator": "equals", "value": ""})
    assert parse_funnel_query(params(steps=raw)).steps[0].filters == (Filter("device", "equals", ""),)


@pytest.mark.parametrize("value", ["0", "-1", "2.5", "1e2", "1E-3", "-0.5e+10", "007"])
def test_numeric_operators_accept_numbers(value: str) -> None:
    raw = with_filters({"operand": "price", "operator": "lt", "value": value})
    assert parse_funnel_query(params(steps=raw)).steps[0].filters[0].number == float(value)


@pytest.mark.parametrize(
    ("window", "expected"),
    [("1", 1), (" 60 ", 60), (str(MAX_WINDOW_SECONDS), MAX_WINDOW_SECONDS), (3600, 3600)],
)
def test_window_bounds_accepted(window: Any, expected: int) -> None:
    assert parse_funnel_query(params(window_seconds=window)).window_seconds == expected


@pytest.mark.parametrize("top_n", ["1", str(MAX_TOP_N)])
def test_top_n_bounds_accepted(top_n: str) -> None:
    assert parse_funnel_query(params(breakdown_top_n=top_n)).breakdown_top_n == int(top_n)


@pytest.mark.parametrize("breakdown", BREAKDOWN_COLUMNS)
def test_every_allowlisted_breakdown_is_accepted(breakdown: str) -> None:
    assert parse_funnel_query(params(breakdown=breakdown)).breakdown == breakdown


@pytest.mark.parametrize(
    ("breakdown", "attribution", "key", "step"),
    [
        ("properties.plan", "", "plan", None),
        ("properties.a.b", "last_touch", "a.b", None),  # the key is everything after the prefix
        ("device", "step:2", None, 2),
        ("utm_source", "first_touch", None, None),
    ],
)
def test_breakdowns_by_a_property_and_attributions_are_accepted(
    breakdown: str, attribution: str, key: str | None, step: int | None
) -> None:
    query = parse_funnel_query(params(breakdown=breakdown, breakdown_attribution=attribution))
    assert (query.breakdown, query.breakdown_property, query.attribution_step) == (breakdown, key, step)
    assert query.breakdown_attribution == (attribution or "first_touch")


def test_first_touch_without_a_breakdown_is_the_default_spelled_out() -> None:
    assert parse_funnel_query(params(breakdown_attribution="first_touch")).breakdown is None


@pytest.mark.parametrize(
    ("overrides", "name", "message"),
    [
        ({"breakdown": "plan"}, "breakdown", "properties.<key>"),
        ({"breakdown": "properties."}, "breakdown", "properties.<key>"),
        ({"breakdown": "properties." + "x" * 1000}, "breakdown", "at most 1000"),
        ({"breakdown": "device", "breakdown_attribution": "middle"}, "breakdown_attribution", "step:K"),
        ({"breakdown": "device", "breakdown_attribution": "step:0"}, "breakdown_attribution", "step:K"),
        (
            {"breakdown": "device", "breakdown_attribution": "step:3"},
            "breakdown_attribution",
            "past the last",
        ),
        ({"breakdown": "device", "breakdown_attribution": "step:02"}, "breakdown_attribution", "step:K"),
        ({"breakdown_attribution": "last_touch"}, "breakdown_attribution", "needs a breakdown"),
        (
            {
                "funnel_type": "strict",
                "hold_constant": '["device"]',
                "exclusions": '[{"type":"track","event":"mint","from_step":1,"to_step":2}]',
            },
            "exclusions",
            "strict",
        ),
        (  # with aggregate_by too: the value is the group's own (its latest identify's), not an event's
            {"breakdown": "person.plan", "aggregate_by": "organization", "breakdown_attribution": "step:1"},
            "breakdown_attribution",
            "group's",
        ),
    ],
)
def test_bad_breakdowns_and_attributions_are_named(
    overrides: dict[str, str], name: str, message: str
) -> None:
    problems = errors(**overrides)
    assert list(problems) == [name] and message in problems[name]


def test_dates_at_the_bounds_are_accepted() -> None:
    query = parse_funnel_query(params(date_from="1970-01-01", date_to="2199-12-31"))
    assert (query.date_from, query.date_to) == (date(1970, 1, 1), date(2199, 12, 31))


# --- errors ---


@pytest.mark.parametrize("name", ["date_from", "date_to"])
@pytest.mark.parametrize("value", [None, ""])
def test_missing_date(name: str, value: str | None) -> None:
    assert errors(**{name: value}) == {name: "required (YYYY-MM-DD)"}


@pytest.mark.parametrize(
    "value", ["2026/04/01", "2026-4-1", "2026-04-01T00:00:00", "20260401", "yesterday", "2026-02-30"]
)
@pytest.mark.parametrize("name", ["date_from", "date_to"])
def test_malformed_date(name: str, value: str) -> None:
    assert errors(**{name: value}) == {name: "must be a date as YYYY-MM-DD"}


@pytest.mark.parametrize("value", ["1969-12-31", "2200-01-01"])
def test_date_out_of_range(value: str) -> None:
    details = errors(date_from=value, date_to=value)
    assert details == {name: "must be between 1970-01-01 and 2199-12-31" for name in ("date_from", "date_to")}


def test_date_to_before_date_from() -> None:
    assert errors(date_from="2026-04-02", date_to="2026-04-01") == {
        "date_to": "must be on or after date_from"
    }


@pytest.mark.parametrize("value", [None, ""])
def test_missing_steps(value: str | None) -> None:
    assert errors(steps=value) == {"steps": "required: a JSON array of 2–10 step specs"}


def test_steps_not_json() -> None:
    details = errors(steps='[{"type": "track"')
    assert list(details) == ["steps"]
    assert details["steps"].startswith("must be valid JSON (")


@pytest.mark.parametrize(
    "value",
    [
        json.dumps({"type": "track"}),
        json.dumps("steps"),
        json.dumps(TWO_STEPS[:1]),
        json.dumps([]),
        json.dumps([{"type": "track", "event": f"e{i}", "name": f"e::{i}"} for i in range(11)]),
    ],
    ids=["object", "string", "one-step", "empty", "eleven-steps"],
)
def test_steps_not_an_array_of_two_to_ten(value: str) -> None:
    assert errors(steps=value) == {"steps": "must be a JSON array of 2–10 step specs"}


def test_step_not_an_object() -> None:
    assert errors(steps=json.dumps([TWO_STEPS[0], "connect"])) == {
        "steps.1": "must be an object {type, event, name, filters?}"
    }


@pytest.mark.parametrize("field", ["type", "event", "name"])
@pytest.mark.parametrize(
    "value", [None, "", True, ["x"], {"x": 1}], ids=["missing", "empty", "bool", "list", "object"]
)
def test_step_field_must_be_a_non_empty_string(field: str, value: Any) -> None:
    step = {**TWO_STEPS[1]}
    if value is None:
        del step[field]
    else:
        step[field] = value
    assert errors(steps=json.dumps([TWO_STEPS[0], step])) == {
        f"steps.1.{field}": "must be a non-empty string"
    }


@pytest.mark.parametrize("field", ["type", "event", "name"])
def test_step_field_length_limit(field: str) -> None:
    assert parse_funnel_query(params(steps=steps_with(first={**TWO_STEPS[0], field: "x" * MAX_TEXT})))
    details = errors(steps=steps_with(first={**TWO_STEPS[0], field: "x" * (MAX_TEXT + 1)}))
    assert details == {f"steps.0.{field}": f"must be at most {MAX_TEXT} characters"}


def test_duplicate_step_names() -> None:
    details = errors(steps=steps_with({"type": "event", "event": "page", "name": "page::0"}))
    assert details == {"steps.2.name": "duplicate step name 'page::0'; names must be unique"}


def test_same_event_with_distinct_names_is_fine() -> None:
    query = parse_funnel_query(
        params(steps=steps_with({"type": "event", "event": "page", "name": "page::2"}))
    )
    assert [step.name for step in query.steps] == ["page::0", "connect::1", "page::2"]


@pytest.mark.parametrize("value", [{"operand": "x"}, "device=mobile", 3])
def test_filters_not_an_array(value: Any) -> None:
    details = errors(steps=steps_with(first={**TWO_STEPS[0], "filters": value}))
    assert details == {"steps.0.filters": "must be an array of {operand, operator, value}"}


def test_too_many_filters() -> None:
    one = {"operand": "device", "operator": "equals", "value": "mobile"}
    assert parse_funnel_query(params(steps=with_filters(*[one] * MAX_FILTERS_PER_STEP)))
    assert errors(steps=with_filters(*[one] * (MAX_FILTERS_PER_STEP + 1))) == {
        "steps.0.filters": f"at most {MAX_FILTERS_PER_STEP} filters per step"
    }


def test_filter_not_an_object() -> None:
    details = errors(
        steps=with_filters({"operand": "device", "operator": "equals", "value": "m"}, ["device"])
    )
    assert details == {"steps.0.filters.1": "must be an object {operand, operator, value}"}


@pytest.mark.parametrize("operand", [None, "", False], ids=["missing", "empty", "bool"])
def test_filter_operand_required(operand: Any) -> None:
    item = {"operator": "equals", "value": "x"} | ({} if operand is None else {"operand": operand})
    assert errors(steps=with_filters(item)) == {"steps.0.filters.0.operand": "must be a non-empty string"}


def test_filter_operand_length_limit() -> None:
    item = {"operand": "p" * (MAX_TEXT + 1), "operator": "equals", "value": "x"}
    assert errors(steps=with_filters(item)) == {
        "steps.0.filters.0.operand": f"must be at most {MAX_TEXT} characters"
    }


@pytest.mark.parametrize("operator", [None, "", "eq", "EQUALS", "contains", "between", 1])
def test_unknown_operator(operator: Any) -> None:
    item = {"operand": "device", "value": "x"} | ({} if operator is None else {"operator": operator})
    assert errors(steps=with_filters(item)) == {
        "steps.0.filters.0.operator": f"must be one of {', '.join(OPERATORS)}"
    }


@pytest.mark.parametrize(
    "value", [None, ["a", "b"], {"a": 1}, True], ids=["missing", "list", "object", "bool"]
)
def test_filter_value_must_be_a_string(value: Any) -> None:
    item = {"operand": "device", "operator": "equals"} | ({} if value is None else {"value": value})
    assert errors(steps=with_filters(item)) == {"steps.0.filters.0.value": "must be a string"}


def test_filter_value_length_limit() -> None:
    ok = {"operand": "device", "operator": "includes", "value": "x" * MAX_TEXT}
    assert parse_funnel_query(params(steps=with_filters(ok)))
    item = {**ok, "value": "x" * (MAX_TEXT + 1)}
    assert errors(steps=with_filters(item)) == {
        "steps.0.filters.0.value": f"must be at most {MAX_TEXT} characters"
    }


@pytest.mark.parametrize("operator", ["gt", "lt", "gte", "lte"])
@pytest.mark.parametrize(
    "value", ["", "abc", "+5", " 5", "5 ", "1.", ".5", "0x10", "inf", "NaN", "1e", "1,5", "1|2"]
)
def test_numeric_operator_needs_a_number(operator: str, value: str) -> None:
    item = {"operand": "price", "operator": operator, "value": value}
    assert errors(steps=with_filters(item)) == {"steps.0.filters.0.value": f"must be a number for {operator}"}


@pytest.mark.parametrize("value", ["abc", "1.5", "1e3", " ", "one", "0x10", "12345678901234567890123"])
def test_window_must_be_an_integer(value: str) -> None:
    assert errors(window_seconds=value) == {"window_seconds": "must be an integer"}


@pytest.mark.parametrize("value", ["0", "-1", str(MAX_WINDOW_SECONDS + 1)])
def test_window_out_of_bounds(value: str) -> None:
    assert errors(window_seconds=value) == {"window_seconds": f"must be between 1 and {MAX_WINDOW_SECONDS}"}


@pytest.mark.parametrize("value", ["OPEN", "Closed", "funnel", "STRICT"])
def test_unknown_funnel_type(value: str) -> None:
    assert errors(funnel_type=value) == {"funnel_type": "must be closed, open or strict"}


@pytest.mark.parametrize(
    "value", ["page_path", "origin", "user_id", "Device", "event", "device; DROP TABLE events"]
)
def test_breakdown_outside_allowlist(value: str) -> None:
    expected = (
        f"must be one of {', '.join(BREAKDOWN_COLUMNS)}, properties.<key> for an event property, "
        "or person.<key> for a property of the identified model"
    )
    assert errors(breakdown=value) == {"breakdown": expected}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", f"must be between 1 and {MAX_TOP_N}"),
        (str(MAX_TOP_N + 1), f"must be between 1 and {MAX_TOP_N}"),
        ("three", "must be an integer"),
        ("2.0", "must be an integer"),
    ],
)
def test_bad_top_n(value: str, message: str) -> None:
    assert errors(breakdown_top_n=value) == {"breakdown_top_n": message}


def test_every_error_is_collected_and_the_first_is_the_param() -> None:
    raw = json.dumps(
        [
            {
                "type": "",
                "event": "page",
                "name": "a",
                "filters": [{"operand": "p", "operator": "gt", "value": "x"}],
            },
            {"type": "track", "event": "connect", "name": "a"},
        ]
    )
    with pytest.raises(QueryValidationError) as caught:
        parse_funnel_query(
            {
                "date_from": "bad",
                "steps": raw,
                "window_seconds": "0",
                "funnel_type": "sideways",
                "breakdown": "nope",
                "breakdown_top_n": "x",
            }
        )
    error = caught.value
    assert error.details == {
        "date_from": "must be a date as YYYY-MM-DD",
        "date_to": "required (YYYY-MM-DD)",
        "steps.0.type": "must be a non-empty string",
        "steps.0.filters.0.value": "must be a number for gt",
        "steps.1.name": "duplicate step name 'a'; names must be unique",
        "window_seconds": f"must be between 1 and {MAX_WINDOW_SECONDS}",
        "funnel_type": "must be closed, open or strict",
        "breakdown": f"must be one of {', '.join(BREAKDOWN_COLUMNS)}, properties.<key> for an event property, "
        "or person.<key> for a property of the identified model",
        "breakdown_top_n": "must be an integer",
    }
    assert error.param == "date_from"
    assert str(error) == "Invalid date_from: must be a date as YYYY-MM-DD"


# --- derived properties the SQL and the reference rely on ---


def test_time_bounds() -> None:
    query = parse_funnel_query(params(date_from="2026-04-01", date_to="2026-04-02", window_seconds="60"))
    assert query.from_ms == 1_775_001_600_000
    assert query.to_end_ms == 1_775_001_600_000 + 2 * 86_400_000 - 1
    assert query.window_ms == 60_000
    assert query.scan_end_ms == query.to_end_ms + 60_000


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        (("event", "page"), ("page", "home"), True),
        (("event", "page"), ("event", "page"), True),
        (("event", "track"), ("track", "connect"), True),
        (("track", "connect"), ("track", "connect"), True),
        (("track", "connect"), ("track", "swap"), False),
        (("event", "page"), ("track", "page"), False),
        (("track", "swap"), ("transaction", "swap"), False),
        (("event", "transaction"), ("track", "swap"), False),
    ],
)
def test_step_overlap(a: tuple[str, str], b: tuple[str, str], overlap: bool) -> None:
    first, second = Step(*a, name="a"), Step(*b, name="b")
    assert first.may_overlap(second) is overlap
    assert second.may_overlap(first) is overlap
    steps = json.dumps([{"type": t, "event": e, "name": f"s{i}"} for i, (t, e) in enumerate([a, b])])
    assert parse_funnel_query(params(steps=steps)).steps_exclusive is not overlap


def test_stored_type_and_event() -> None:
    assert (Step("event", "page", "p").stored_type, Step("event", "page", "p").stored_event) == ("page", None)
    assert (Step("track", "swap", "s").stored_type, Step("track", "swap", "s").stored_event) == (
        "track",
        "swap",
    )
