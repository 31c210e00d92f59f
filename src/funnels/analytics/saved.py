"""Saved funnels: a name and a funnel's `/v0/funnel` parameters (never its results), kept in the state store.

The parameters are validated by the parser `/v0/funnel` uses (`parse_compared_query`) before they are kept,
so a saved funnel always runs; they are kept as given (strings, as in a query string), without the empty
ones. A funnel's id is random and never changes, so a link to it keeps working through renames and updates;
its version counts its updates, and an update may name the version it replaces (optimistic concurrency).
Names are unique as given (after trimming; case counts). The limits bound what a hostile `query:read` key
can store: `MAX_SAVED` funnels, names of `MAX_NAME` characters, `MAX_PARAMETERS_BYTES` of parameters each.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any, Final

import orjson

from funnels.analytics.compare import parse_compared_query
from funnels.analytics.query import QueryValidationError
from funnels.clock import Clock
from funnels.store import saved_funnels as stored
from funnels.store.state import StateStore

MAX_SAVED: Final = 1_000
MAX_NAME: Final = 200
MAX_PARAMETERS_BYTES: Final = 64 * 1024
# What a saved funnel may hold: `/v0/funnel`'s parameters (a test holds the two lists equal).
PARAMETERS: Final = (
    "date_from",
    "date_to",
    "steps",
    "window_seconds",
    "funnel_type",
    "breakdown",
    "breakdown_top_n",
    "breakdown_attribution",
    "identity",
    "exclusions",
    "hold_constant",
    "aggregate_by",
    "sample",
    "compare",
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class SavedFunnel:
    id: str
    name: str
    parameters: dict[str, str]
    version: int
    created_ms: int
    updated_ms: int


@dataclass(frozen=True)
class ListedFunnel:
    """A saved funnel in a list: without its parameters."""

    id: str
    name: str
    version: int
    created_ms: int
    updated_ms: int


class SavedFunnelMissing(Exception):
    """No saved funnel has this id (or name)."""


class SavedFunnelConflict(Exception):
    """The write conflicts with the saved funnels as they are: `param` names the field at fault."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def parse_name(raw: Any, errors: dict[str, str], path: str = "name") -> str:
    """A saved funnel's name: a string of 1–`MAX_NAME` characters after trimming, no control characters."""
    if not isinstance(raw, str) or not raw.strip():
        errors[path] = "must be a non-empty string"
        return ""
    name = raw.strip()
    if len(name) > MAX_NAME:
        errors[path] = f"must be at most {MAX_NAME} characters"
    elif _CONTROL.search(name):
        errors[path] = "must not contain control characters"
    return name


def _text(value: Any) -> str | None:
    """A parameter's value as a query string would carry it; None when it cannot be one."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _steps_text(steps: list[Any]) -> str | None:
    """`steps` given as an array, as the JSON text /v0/funnel takes (None: nested past what JSON keeps)."""
    try:
        return orjson.dumps(steps).decode()
    except orjson.JSONEncodeError:
        return None


def parse_parameters(raw: Any, errors: dict[str, str], path: str = "parameters") -> dict[str, str]:
    """`/v0/funnel`'s parameters as a saved funnel keeps them: an object of strings (numbers taken as their
    text, `steps` also as an array), validated as `/v0/funnel` validates them; problems go to `errors`
    under `path`."""
    if not isinstance(raw, dict):
        errors[path] = "must be an object of /v0/funnel parameters"
        return {}
    problems: dict[str, str] = {}
    parameters: dict[str, str] = {}
    for name, value in raw.items():
        if name not in PARAMETERS:
            problems[f"{path}.{name}"] = f"unknown parameter; use {', '.join(PARAMETERS)}"
            continue
        if value is None:
            continue
        text = _steps_text(value) if name == "steps" and isinstance(value, list) else _text(value)
        if text is None:
            problems[f"{path}.{name}"] = "must be a string" + (" or an array" if name == "steps" else "")
        elif text:
            parameters[name] = text
    if not problems:
        try:
            parse_compared_query(parameters)
        except QueryValidationError as error:
            problems = {f"{path}.{name}": problem for name, problem in error.details.items()}
    if not problems and len(orjson.dumps(parameters)) > MAX_PARAMETERS_BYTES:
        problems[path] = f"must be at most {MAX_PARAMETERS_BYTES // 1024} KB as JSON"
    errors |= problems
    return {} if problems else parameters


def _valid(name: Any, parameters: Any) -> tuple[str, dict[str, str]]:
    errors: dict[str, str] = {}
    valid_name = parse_name(name, errors)
    valid_parameters = parse_parameters(parameters, errors)
    if errors:
        raise QueryValidationError(errors)
    return valid_name, valid_parameters


def _saved(row: stored.StoredFunnel) -> SavedFunnel:
    parameters: dict[str, str] = orjson.loads(row.parameters)
    return SavedFunnel(row.id, row.name, parameters, row.version, row.created_ms, row.updated_ms)


def _taken(name: str) -> SavedFunnelConflict:
    return SavedFunnelConflict(f"A saved funnel is already named {name!r}.", "name")


def create(state: StateStore, clock: Clock, name: Any, parameters: Any) -> SavedFunnel:
    """Save a funnel under a new name: `QueryValidationError` for bad input, `SavedFunnelConflict` for a
    taken name or a full store."""
    valid_name, valid_parameters = _valid(name, parameters)
    now_ms = clock.now_ms()
    row = stored.StoredFunnel(
        secrets.token_hex(8), valid_name, orjson.dumps(valid_parameters).decode(), 1, now_ms, now_ms
    )
    outcome = stored.add(state, row, MAX_SAVED)
    if outcome == "name taken":
        raise _taken(valid_name)
    if outcome == "full":
        raise SavedFunnelConflict(
            f"At most {MAX_SAVED} funnels can be saved; delete one to save another.", "name"
        )
    return _saved(row)


def update(
    state: StateStore, clock: Clock, funnel_id: str, name: Any, parameters: Any, version: int | None = None
) -> SavedFunnel:
    """Replace a saved funnel's name and parameters (at `version`, when given); its id stays."""
    valid_name, valid_parameters = _valid(name, parameters)
    encoded = orjson.dumps(valid_parameters).decode()
    outcome, row = stored.replace(state, funnel_id, valid_name, encoded, clock.now_ms(), version)
    if outcome == "missing":
        raise SavedFunnelMissing(f"No saved funnel {funnel_id}.")
    if outcome == "stale":
        assert row is not None
        raise SavedFunnelConflict(
            f"The saved funnel was changed meanwhile: it is at version {row.version}, not {version}; "
            "load it again.",
            "version",
        )
    if outcome == "name taken":
        raise _taken(valid_name)
    assert row is not None
    return _saved(row)


def delete(state: StateStore, funnel_id: str) -> bool:
    """Delete a saved funnel: True if there was one."""
    return stored.remove(state, funnel_id)


def find(state: StateStore, funnel_id: str) -> SavedFunnel | None:
    row = stored.find(state, funnel_id)
    return None if row is None else _saved(row)


def find_by_name_or_id(state: StateStore, name_or_id: str) -> SavedFunnel:
    """The funnel saved under this name, else with this id (`SavedFunnelMissing` when neither)."""
    row = stored.find_named(state, name_or_id.strip()) or stored.find(state, name_or_id.strip())
    if row is None:
        raise SavedFunnelMissing(f"No saved funnel is named {name_or_id!r} or has that id.")
    return _saved(row)


def list_saved(state: StateStore) -> list[ListedFunnel]:
    """Every saved funnel by name, without parameters."""
    return [ListedFunnel(*row) for row in stored.listing(state)]
