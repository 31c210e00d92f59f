"""`FunnelQuery`: the validated, frozen form of `GET /v0/funnel`'s parameters."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final, Literal, TypeVar, cast

import orjson

from funnels.types import BREAKDOWN_COLUMNS, STANDARD_COLUMNS

DEFAULT_WINDOW_SECONDS: Final = 1_209_600
MAX_WINDOW_SECONDS: Final = 10 * 366 * 86_400
DEFAULT_TOP_N: Final = 8
MAX_TOP_N: Final = 1_000
MIN_STEPS, MAX_STEPS = 2, 10
FunnelType = Literal["closed", "open", "strict"]
FUNNEL_TYPES: tuple[FunnelType, ...] = ("closed", "open", "strict")
Identity = Literal["stitched", "raw"]
IDENTITIES: tuple[Identity, ...] = ("stitched", "raw")
T = TypeVar("T", bound=str)
MAX_FILTERS_PER_STEP: Final = 20
MAX_EXCLUSIONS: Final = 10
MAX_HELD: Final = 3
MAX_TEXT: Final = 1_000

STRING_OPERATORS: Final = ("equals", "notEquals", "in", "notIn", "startsWith", "endsWith", "includes")
NUMERIC_OPERATORS: Final = ("gt", "lt", "gte", "lte")
OPERATORS: Final = STRING_OPERATORS + NUMERIC_OPERATORS

# `breakdown`: a column, or an event property by its key (`properties.<key>`).
PROPERTY_PREFIX: Final = "properties."
# ... or a property of the identified model, by its key (`person.<key>`): what the person's identifies set.
PERSON_PREFIX: Final = "person."
# `breakdown_attribution`: which of a user's values puts them in a group (`step:K` for step K's event).
ATTRIBUTIONS: Final = ("first_touch", "last_touch")
_STEP_ATTRIBUTION = re.compile(r"step:([1-9][0-9]?)")

# Numbers as text, the one spelling both SQL and the reference accept (no '+', no inf/nan, no hex).
NUMBER_PATTERN: Final = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
_NUMBER = re.compile(NUMBER_PATTERN)


def parse_number(text: str) -> float | None:
    """The number a text spells, if it matches `NUMBER_PATTERN`."""
    return float(text) if _NUMBER.fullmatch(text) else None  # fullmatch: `$` alone also accepts a final "\n"


@dataclass(frozen=True)
class Filter:
    operand: str
    operator: str
    value: str

    @property
    def is_column(self) -> bool:
        return self.operand in STANDARD_COLUMNS

    @property
    def values(self) -> tuple[str, ...]:
        """The `|`-separated values of `in`/`notIn`."""
        return tuple(self.value.split("|"))

    @property
    def number(self) -> float:
        number = parse_number(self.value)
        assert number is not None  # guaranteed by validation
        return number


@dataclass(frozen=True)
class Step:
    type: str
    event: str
    name: str
    filters: tuple[Filter, ...] = ()

    @property
    def stored_type(self) -> str:
        """`{"type":"event","event":"page"}` matches stored type `page`; other types match themselves."""
        return self.event if self.type == "event" else self.type

    @property
    def stored_event(self) -> str | None:
        """The event name this step requires, or None when any name of the stored type matches."""
        return None if self.type == "event" else self.event

    def may_overlap(self, other: Step) -> bool:
        """Whether one event could match both steps (filters only narrow, so compare type and name)."""
        if self.stored_type != other.stored_type:
            return False
        return (
            self.stored_event is None or other.stored_event is None or self.stored_event == other.stored_event
        )


@dataclass(frozen=True)
class Exclusion:
    """An event that, between the matches of steps `from_step` and `to_step` (1-based), disqualifies a
    conversion (docs/semantics.md, "Exclusion steps"). `step` is what it matches, as a step matches."""

    step: Step
    from_step: int
    to_step: int


@dataclass(frozen=True)
class FunnelQuery:
    date_from: date
    date_to: date
    steps: tuple[Step, ...]
    window_seconds: int = DEFAULT_WINDOW_SECONDS
    funnel_type: FunnelType = "closed"
    breakdown: str | None = None
    breakdown_top_n: int = DEFAULT_TOP_N
    identity: Identity = "stitched"  # users are persons, or user keys as stored
    breakdown_attribution: str = "first_touch"  # first_touch | last_touch | step:K
    exclusions: tuple[Exclusion, ...] = ()
    hold_constant: tuple[str, ...] = ()  # held constant: standard columns, and `properties.KEY`
    aggregate_by: str | None = None  # count instances of this model (their members' events) instead of users
    sample: float | None = None  # answer from this fraction of users, by a hash of each (None: all, exact)

    @property
    def sample_threshold(self) -> int | None:
        """With `sample`, the bound a user's 64-bit hash must be under to be in the sample: a user is in when
        `hash < sample × 2^64` (docs/semantics.md, "Sampling"); None without a sample."""
        return sample_threshold(self.sample)

    @property
    def breakdown_property(self) -> str | None:
        """With `breakdown=properties.<key>`, the key; None for a column (or no breakdown)."""
        if self.breakdown is not None and self.breakdown.startswith(PROPERTY_PREFIX):
            return self.breakdown[len(PROPERTY_PREFIX) :]
        return None

    @property
    def breakdown_person(self) -> str | None:
        """With `breakdown=person.<key>`, the key of the person's (identified model's) property; else None."""
        if self.breakdown is not None and self.breakdown.startswith(PERSON_PREFIX):
            return self.breakdown[len(PERSON_PREFIX) :]
        return None

    @property
    def attribution_step(self) -> int | None:
        """With `breakdown_attribution=step:K`, K (1-based); None for first or last touch."""
        found = _STEP_ATTRIBUTION.fullmatch(self.breakdown_attribution)
        return int(found.group(1)) if found else None

    @property
    def stitched(self) -> bool:
        return self.identity == "stitched"

    @property
    def from_ms(self) -> int:
        return int(
            datetime(self.date_from.year, self.date_from.month, self.date_from.day, tzinfo=UTC).timestamp()
            * 1000
        )

    @property
    def to_end_ms(self) -> int:
        """The last millisecond a step-1 event may have: `date_to` 23:59:59.999."""
        start = datetime(self.date_to.year, self.date_to.month, self.date_to.day, tzinfo=UTC)
        return int(start.timestamp() * 1000) + 86_400_000 - 1

    @property
    def window_ms(self) -> int:
        return self.window_seconds * 1000

    @property
    def scan_end_ms(self) -> int:
        """Events are scanned up to `window_seconds` past the end of `date_to`."""
        return self.to_end_ms + self.window_ms

    @property
    def steps_exclusive(self) -> bool:
        """True when no event can match two steps (then a plain time-ordered scan is exact)."""
        return _exclusive(self.steps)


def _exclusive(steps: Sequence[Step]) -> bool:
    return not any(a.may_overlap(b) for i, a in enumerate(steps) for b in steps[i + 1 :])


class QueryValidationError(Exception):
    """Invalid parameters: `details` maps each parameter path to what was wrong with it."""

    def __init__(self, details: dict[str, str]) -> None:
        self.details = details
        self.param = next(iter(details))
        super().__init__(f"Invalid {self.param}: {details[self.param]}")


def _date(value: Any, errors: dict[str, str], name: str, required: bool) -> date | None:
    if value is None or value == "":
        if required:
            errors[name] = "required (YYYY-MM-DD)"
        return None
    try:
        parsed = date.fromisoformat(str(value)) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value)) else None
    except ValueError:
        parsed = None
    if parsed is None:
        errors[name] = "must be a date as YYYY-MM-DD"
    elif not date(1970, 1, 1) <= parsed <= date(2199, 12, 31):
        errors[name] = "must be between 1970-01-01 and 2199-12-31"
        return None
    return parsed


def parse_dates(
    params: dict[str, Any], errors: dict[str, str], required: bool = True
) -> tuple[date | None, date | None]:
    """`date_from`/`dateFrom` and `date_to`/`dateTo` as dates (inclusive UTC days); problems go to `errors`."""
    date_from = _date(params.get("date_from", params.get("dateFrom")), errors, "date_from", required)
    date_to = _date(params.get("date_to", params.get("dateTo")), errors, "date_to", required)
    if date_from and date_to and date_from > date_to:
        errors["date_to"] = "must be on or after date_from"
    return date_from, date_to


def parse_int(value: Any, errors: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer parameter in [low, high], `default` when absent; problems go to `errors`."""
    if value is None or value == "":
        return default
    text = str(value).strip()
    if not re.fullmatch(r"-?\d{1,20}", text):
        errors[name] = "must be an integer"
        return default
    number = int(text)
    if not low <= number <= high:
        errors[name] = f"must be between {low} and {high}"
    return number


def parse_choice(value: Any, choices: Sequence[T], errors: dict[str, str], name: str) -> T:
    """One of `choices` (the first when absent); anything else goes to `errors` as "must be a, b or c"."""
    if value in (None, ""):
        return choices[0]
    if value not in choices:
        errors[name] = f"must be {', '.join(choices[:-1])} or {choices[-1]}"
        return choices[0]
    return cast(T, value)


def parse_text(raw: Any, path: str, errors: dict[str, str], required: bool = True) -> str:
    """A string of at most `MAX_TEXT` characters (numbers are taken as their text); problems go to `errors`."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or (required and not raw):
        errors[path] = "must be a non-empty string" if required else "must be a string"
        return ""
    if len(raw) > MAX_TEXT:
        errors[path] = f"must be at most {MAX_TEXT} characters"
    return raw


def _filters(raw: Any, path: str, errors: dict[str, str]) -> tuple[Filter, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors[path] = "must be an array of {operand, operator, value}"
        return ()
    if len(raw) > MAX_FILTERS_PER_STEP:
        errors[path] = f"at most {MAX_FILTERS_PER_STEP} filters per step"
        return ()
    filters = []
    for index, item in enumerate(raw):
        here = f"{path}.{index}"
        if not isinstance(item, dict):
            errors[here] = "must be an object {operand, operator, value}"
            continue
        operand = parse_text(item.get("operand"), f"{here}.operand", errors)
        operator = item.get("operator")
        if operator not in OPERATORS:
            errors[f"{here}.operator"] = f"must be one of {', '.join(OPERATORS)}"
            continue
        value = parse_text(item.get("value"), f"{here}.value", errors, required=False)
        if operator in NUMERIC_OPERATORS and parse_number(value) is None:
            errors[f"{here}.value"] = f"must be a number for {operator}"
        filters.append(Filter(operand=operand, operator=operator, value=value))
    return tuple(filters)


def _json(raw: Any, name: str, errors: dict[str, str]) -> Any:
    """A JSON parameter's value (as given when it is not text); a problem goes to `errors` as None."""
    try:
        return orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError as error:
        errors[name] = f"must be valid JSON ({error.msg} at position {error.pos})"
        return None


def _steps(raw: Any, errors: dict[str, str]) -> tuple[Step, ...]:
    if raw is None or raw == "":
        errors["steps"] = "required: a JSON array of 2–10 step specs"
        return ()
    parsed = _json(raw, "steps", errors)
    if "steps" in errors:
        return ()
    if not isinstance(parsed, list) or not MIN_STEPS <= len(parsed) <= MAX_STEPS:
        errors["steps"] = f"must be a JSON array of {MIN_STEPS}–{MAX_STEPS} step specs"
        return ()
    steps, names = [], set()
    for index, item in enumerate(parsed):
        path = f"steps.{index}"
        if not isinstance(item, dict):
            errors[path] = "must be an object {type, event, name, filters?}"
            continue
        step_type = parse_text(item.get("type"), f"{path}.type", errors)
        event = parse_text(item.get("event"), f"{path}.event", errors)
        name = parse_text(item.get("name"), f"{path}.name", errors)
        if name and name in names:
            errors[f"{path}.name"] = f"duplicate step name {name!r}; names must be unique"
        names.add(name)
        filters = _filters(item.get("filters"), f"{path}.filters", errors)
        steps.append(Step(type=step_type, event=event, name=name, filters=filters))
    return tuple(steps)


def _step_number(raw: Any, path: str, errors: dict[str, str], steps: int) -> int:
    """A 1-based step number of a funnel with `steps` steps (0 with a problem, added to `errors`)."""
    if isinstance(raw, bool) or not isinstance(raw, int):
        errors[path] = "must be an integer step number"
        return 0
    if steps and not 1 <= raw <= steps:
        errors[path] = f"must be between 1 and {steps} (the number of steps)"
        return 0
    return raw


def _exclusions(raw: Any, steps: int, errors: dict[str, str]) -> tuple[Exclusion, ...]:
    """`exclusions`: a JSON array of {type, event, filters?, from_step, to_step}, matched as steps are."""
    if raw is None or raw == "":
        return ()
    parsed = _json(raw, "exclusions", errors)
    if "exclusions" in errors:
        return ()
    if not isinstance(parsed, list) or len(parsed) > MAX_EXCLUSIONS:
        errors["exclusions"] = f"must be a JSON array of at most {MAX_EXCLUSIONS} exclusion specs"
        return ()
    exclusions = []
    for index, item in enumerate(parsed):
        path = f"exclusions.{index}"
        if not isinstance(item, dict):
            errors[path] = "must be an object {type, event, filters?, from_step, to_step}"
            continue
        step_type = parse_text(item.get("type"), f"{path}.type", errors)
        event = parse_text(item.get("event"), f"{path}.event", errors)
        filters = _filters(item.get("filters"), f"{path}.filters", errors)
        from_step = _step_number(item.get("from_step"), f"{path}.from_step", errors, steps)
        to_step = _step_number(item.get("to_step"), f"{path}.to_step", errors, steps)
        if from_step and to_step and from_step >= to_step:
            errors[f"{path}.to_step"] = "must be after from_step"
        step = Step(type=step_type, event=event, name="", filters=filters)
        exclusions.append(Exclusion(step=step, from_step=from_step, to_step=to_step))
    return tuple(exclusions)


def _held(raw: Any, errors: dict[str, str]) -> tuple[str, ...]:
    """`hold_constant`: a JSON array of 1–3 of `properties.KEY` or a standard column."""
    if raw is None or raw == "":
        return ()
    parsed = _json(raw, "hold_constant", errors)
    if "hold_constant" in errors:
        return ()
    if not isinstance(parsed, list) or not 1 <= len(parsed) <= MAX_HELD:
        errors["hold_constant"] = (
            f"must be a JSON array of 1–{MAX_HELD} of properties.KEY or a standard column"
        )
        return ()
    held = []
    for index, item in enumerate(parsed):
        path = f"hold_constant.{index}"
        if (isinstance(item, str) and item in STANDARD_COLUMNS) or (
            isinstance(item, str) and item.startswith("properties.") and 0 < len(item) - 11 <= MAX_TEXT
        ):
            held.append(item)
        else:
            errors[path] = f"must be properties.KEY or one of {', '.join(STANDARD_COLUMNS)}"
    return tuple(held)


def parse_funnel_part(params: dict[str, Any], errors: dict[str, str]) -> FunnelQuery | None:
    """The funnel's parameters of an analysis built on it (time to convert, trends, people): the query, or
    None with its problems added to `errors`, so the analysis reports them with its own in one answer."""
    try:
        return parse_funnel_query(params)
    except QueryValidationError as error:
        errors |= error.details
        return None


def parse_funnel_query(params: dict[str, Any]) -> FunnelQuery:
    """Validate raw parameters (strings, as from a query string) into a `FunnelQuery`; collect every error."""
    errors: dict[str, str] = {}
    date_from, date_to = parse_dates(params, errors)
    steps = _steps(params.get("steps"), errors)
    window = parse_int(
        params.get("window_seconds"), errors, "window_seconds", DEFAULT_WINDOW_SECONDS, 1, MAX_WINDOW_SECONDS
    )
    funnel_type = parse_choice(params.get("funnel_type"), FUNNEL_TYPES, errors, "funnel_type")
    breakdown = _breakdown(params.get("breakdown") or None, errors)
    top_n = parse_int(params.get("breakdown_top_n"), errors, "breakdown_top_n", DEFAULT_TOP_N, 1, MAX_TOP_N)
    attribution = _attribution(params.get("breakdown_attribution"), breakdown, len(steps), errors)
    identity = parse_choice(params.get("identity"), IDENTITIES, errors, "identity")
    exclusions = _exclusions(params.get("exclusions"), len(steps), errors)
    if exclusions and funnel_type != "closed" and "funnel_type" not in errors:
        errors["exclusions"] = (
            f"only with funnel_type=closed: {funnel_type} funnels have no 'between' to exclude from "
            + (
                "(steps in any order)"
                if funnel_type == "open"
                else "(no other event is between two strict steps)"
            )
        )
    held = _held(params.get("hold_constant"), errors)
    aggregate_by = _aggregate_by(params.get("aggregate_by"), errors)
    sample = _sample(params.get("sample"), errors)
    if errors:
        raise QueryValidationError(errors)
    assert date_from is not None and date_to is not None
    return FunnelQuery(
        date_from=date_from,
        date_to=date_to,
        steps=steps,
        window_seconds=window,
        funnel_type=funnel_type,
        breakdown=breakdown,
        breakdown_top_n=top_n,
        identity=identity,
        breakdown_attribution=attribution,
        exclusions=exclusions,
        hold_constant=held,
        aggregate_by=aggregate_by,
        sample=sample,
    )


MIN_SAMPLE: Final = 0.0001  # one user in 10,000: below it a sample of a big product is a handful of users
_SAMPLE = re.compile(r"(0?\.[0-9]{1,6}|[01](\.0{0,6})?)")


def sample_threshold(rate: float | None) -> int | None:
    """The 64-bit hash bound of a sampling rate (`FunnelQuery.sample_threshold`)."""
    return None if rate is None else min(round(rate * 2**64), 2**64 - 1)


def _sample(raw: Any, errors: dict[str, str]) -> float | None:
    """`sample`: the fraction of users to answer from, a decimal in [0.0001, 1] with at most 6 decimals;
    absent, empty or 1: every user (the exact answer, as without it)."""
    if raw is None or raw == "":
        return None
    text = str(raw).strip() if isinstance(raw, str | int | float) and not isinstance(raw, bool) else ""
    rate = float(text) if _SAMPLE.fullmatch(text) else None
    if rate is None or not MIN_SAMPLE <= rate <= 1:
        errors["sample"] = f"must be a fraction of users between {MIN_SAMPLE} and 1 (e.g. 0.1 for 10%)"
        return None
    return None if rate == 1 else rate


def reject_sample(funnel: FunnelQuery | None, errors: dict[str, str]) -> None:
    """For the analyses built on the funnel that do not sample (time to convert, trends, people): `sample`
    is a problem to report, not a parameter to ignore."""
    if funnel is not None and funnel.sample is not None:
        errors["sample"] = "only GET /v0/funnel answers from a sample; leave it out here"


MAX_MODEL_NAME: Final = 200  # as the state store's `model` columns


def _aggregate_by(raw: Any, errors: dict[str, str]) -> str | None:
    """`aggregate_by`: a model's name (whether the config declares it is the caller's to check:
    `funnels.analytics.groups.aggregate_by_problem`); absent or empty, users are counted."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or len(raw) > MAX_MODEL_NAME:
        errors["aggregate_by"] = f"must be a declared model's name (at most {MAX_MODEL_NAME} characters)"
        return None
    return raw


def _breakdown(raw: Any, errors: dict[str, str]) -> str | None:
    """A breakdown column, `properties.<key>` (an event property) or `person.<key>` (a property of the
    identified model); any key up to MAX_TEXT characters."""
    if raw is None:
        return None
    if isinstance(raw, str) and (
        raw in BREAKDOWN_COLUMNS
        or (raw.startswith(PROPERTY_PREFIX) and raw != PROPERTY_PREFIX)
        or (raw.startswith(PERSON_PREFIX) and raw != PERSON_PREFIX)
    ):
        if len(raw) > MAX_TEXT:
            errors["breakdown"] = f"must be at most {MAX_TEXT} characters"
        return raw
    errors["breakdown"] = (
        f"must be one of {', '.join(BREAKDOWN_COLUMNS)}, properties.<key> for an event property, "
        "or person.<key> for a property of the identified model"
    )
    return None


def _attribution(raw: Any, breakdown: str | None, steps: int, errors: dict[str, str]) -> str:
    """`first_touch` (the default), `last_touch` or `step:K` (1 ≤ K ≤ the number of steps); only with a
    breakdown."""
    if raw is None or raw == "":
        return "first_touch"
    found = _STEP_ATTRIBUTION.fullmatch(raw) if isinstance(raw, str) else None
    if not (raw in ATTRIBUTIONS or found):
        errors["breakdown_attribution"] = "must be first_touch, last_touch or step:K (K a step, 1-based)"
    elif found and steps and int(found.group(1)) > steps:
        errors["breakdown_attribution"] = f"step:{found.group(1)} is past the last step ({steps})"
    elif breakdown is None and raw != "first_touch":
        errors["breakdown_attribution"] = "needs a breakdown"
    elif breakdown is not None and breakdown.startswith(PERSON_PREFIX) and raw != "first_touch":
        errors["breakdown_attribution"] = (
            "only first_touch with a person.<key> breakdown: the value is the person's (with aggregate_by, "
            "the group's own), their latest identify's, not an event's, so there is no touch or step to choose"
        )
    else:
        return str(raw)
    return "first_touch"
