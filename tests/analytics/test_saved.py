"""Saved funnels: kept only when `/v0/funnel` would take their parameters (each problem named under
`parameters.`), as given; unique names, versions, the limits; found by name or id."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from funnels.analytics import saved
from funnels.analytics.query import QueryValidationError
from funnels.analytics.saved import SavedFunnelConflict, SavedFunnelMissing
from funnels.clock import ManualClock
from funnels.store.state import StateStore

STEPS = [{"type": "event", "event": "page", "name": "p"}, {"type": "track", "event": "connect", "name": "c"}]
PARAMETERS = {"date_from": "2026-04-01", "date_to": "2026-04-30", "steps": STEPS}


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    store = StateStore(tmp_path / "state.sqlite3")
    yield store
    store.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_775_001_600_000)


def problems(name: Any, parameters: Any) -> dict[str, str]:
    errors: dict[str, str] = {}
    saved.parse_name(name, errors)
    saved.parse_parameters(parameters, errors)
    return errors


def test_a_funnel_is_kept_as_given_with_a_stable_id(state: StateStore, clock: ManualClock) -> None:
    given = PARAMETERS | {
        "window_seconds": 3600,
        "breakdown": "",
        "identity": None,
        "compare": "previous_period",
    }
    funnel = saved.create(state, clock, "  Signups  ", given)
    assert len(funnel.id) == 16 and int(funnel.id, 16) >= 0
    assert (funnel.name, funnel.version, funnel.created_ms, funnel.updated_ms) == (
        "Signups",
        1,
        clock.now_ms(),
        clock.now_ms(),
    )
    assert funnel.parameters == {
        "date_from": "2026-04-01",
        "date_to": "2026-04-30",
        "steps": '[{"type":"event","event":"page","name":"p"},{"type":"track","event":"connect","name":"c"}]',
        "window_seconds": "3600",
        "compare": "previous_period",
    }
    assert saved.find(state, funnel.id) == funnel
    assert saved.find_by_name_or_id(state, "Signups") == funnel == saved.find_by_name_or_id(state, funnel.id)
    assert [(item.id, item.name, item.version) for item in saved.list_saved(state)] == [
        (funnel.id, "Signups", 1)
    ]


@pytest.mark.parametrize(
    ("name", "parameters", "expected"),
    [
        ("", PARAMETERS, {"name": "must be a non-empty string"}),
        (7, PARAMETERS, {"name": "must be a non-empty string"}),
        ("x" * 201, PARAMETERS, {"name": "must be at most 200 characters"}),
        ("a\nb", PARAMETERS, {"name": "must not contain control characters"}),
        ("ok", [], {"parameters": "must be an object of /v0/funnel parameters"}),
        (
            "ok",
            PARAMETERS | {"limit": "5"},
            {"parameters.limit": "unknown parameter; use " + ", ".join(saved.PARAMETERS)},
        ),
        ("ok", PARAMETERS | {"date_to": True}, {"parameters.date_to": "must be a string"}),
        ("ok", PARAMETERS | {"steps": {"a": 1}}, {"parameters.steps": "must be a string or an array"}),
        (
            "ok",
            {"steps": STEPS},
            {"parameters.date_from": "required (YYYY-MM-DD)", "parameters.date_to": "required (YYYY-MM-DD)"},
        ),
        (
            "ok",
            PARAMETERS | {"steps": [{"type": "track", "name": "a"}, STEPS[1]]},
            {"parameters.steps.0.event": "must be a non-empty string"},
        ),
        ("ok", PARAMETERS | {"compare": "yesterday"}, {"parameters.compare": "must be previous_period"}),
        (
            "ok",
            PARAMETERS | {"window_seconds": "0"},
            {"parameters.window_seconds": "must be between 1 and 316224000"},
        ),
        (
            "",
            {"x": "1"},
            {
                "name": "must be a non-empty string",
                "parameters.x": "unknown parameter; use " + ", ".join(saved.PARAMETERS),
            },
        ),
    ],
)
def test_bad_input_is_named(name: Any, parameters: Any, expected: dict[str, str]) -> None:
    assert problems(name, parameters) == expected


def test_nothing_invalid_is_kept(state: StateStore, clock: ManualClock) -> None:
    with pytest.raises(QueryValidationError) as raised:
        saved.create(state, clock, "bad", PARAMETERS | {"funnel_type": "sideways"})
    assert raised.value.param == "parameters.funnel_type"
    assert saved.list_saved(state) == []


def test_parameters_over_the_size_limit_are_refused() -> None:
    filters = [{"operand": "p", "operator": "equals", "value": "v" * 1000}] * 20
    big = [{"type": "track", "event": "e", "name": f"s{i}", "filters": filters} for i in range(4)]
    assert problems("big", PARAMETERS | {"steps": big}) == {"parameters": "must be at most 64 KB as JSON"}
    assert problems("fits", PARAMETERS | {"steps": big[:2]}) == {}


def test_names_are_unique_and_updates_count_versions(state: StateStore, clock: ManualClock) -> None:
    one = saved.create(state, clock, "One", PARAMETERS)
    saved.create(state, clock, "Two", PARAMETERS)
    with pytest.raises(SavedFunnelConflict) as taken:
        saved.create(state, clock, "One ", PARAMETERS)
    assert taken.value.param == "name"
    clock.advance(5_000)
    renamed = saved.update(state, clock, one.id, "Uno", PARAMETERS | {"funnel_type": "open"}, version=1)
    assert (renamed.id, renamed.name, renamed.version, renamed.parameters["funnel_type"]) == (
        one.id,
        "Uno",
        2,
        "open",
    )
    assert renamed.updated_ms == one.created_ms + 5_000 and renamed.created_ms == one.created_ms
    with pytest.raises(SavedFunnelConflict) as stale:
        saved.update(state, clock, one.id, "Uno", PARAMETERS, version=1)
    assert stale.value.param == "version" and "version 2" in str(stale.value)
    with pytest.raises(SavedFunnelConflict):
        saved.update(state, clock, one.id, "Two", PARAMETERS)
    with pytest.raises(SavedFunnelMissing):
        saved.update(state, clock, "0" * 16, "X", PARAMETERS)
    with pytest.raises(QueryValidationError):
        saved.update(state, clock, one.id, "Uno", {"steps": "[]"})
    assert saved.find(state, one.id) == renamed  # a refused update changed nothing
    assert saved.delete(state, one.id) and not saved.delete(state, one.id)
    with pytest.raises(SavedFunnelMissing):
        saved.find_by_name_or_id(state, "Uno")


def test_the_count_is_capped(state: StateStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(saved, "MAX_SAVED", 2)
    saved.create(state, clock, "a", PARAMETERS)
    saved.create(state, clock, "b", PARAMETERS)
    with pytest.raises(SavedFunnelConflict, match="At most 2 funnels"):
        saved.create(state, clock, "c", PARAMETERS)
