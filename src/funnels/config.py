"""The config file: models, funnels, steps and actions, parsed into typed objects and validated whole.

Accepts exactly the spec's shapes, including the single-object forms (`forModels: "customer"`, `steps: {...}`,
`actions: {...}`). Every problem is reported at once with the path where it is, as written in the file
(`funnels[0].steps[2].actions[1].args.url`), and what was expected. Checks: the shape of each section,
unknown or duplicate names (models in `forModels`, funnel ids, action types), each action type's args
(`funnels.channels`), Liquid syntax in every string of `args`, durations (`delay`), quiet hours
(`notBefore`/`notAfter`), `unless` references to later steps of the same funnel, delivery guarantees
(`guarantee`), holdouts (`holdout: 10%`, 0–50%) and goals, topics, each channel's settings section
(`webhook`, `slack`, `email`, `sms`; gaps filled from environment variables at load time), the `delivery`
policy (attempts, timeout, backoff), frequency caps (`limits`) and `network.allow`
(CIDRs deliveries may reach although they are not public, `funnels.channels.network`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import yaml
from liquid import Environment
from liquid.exceptions import LiquidError
from pydantic import BaseModel, TypeAdapter, ValidationError

from funnels.channels import ACTION_TYPES
from funnels.channels.base import resolve_settings
from funnels.channels.network import Network, parse_networks

TOP_LEVEL = ("models", "funnels", "segment", "delivery", "network", "limits", *ACTION_TYPES)
DELIVERY_FIELDS = ("maxAttempts", "timeout", "backoffBase", "backoffMax")
_SHORT_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_LIQUID = Environment()
GUARANTEES = ("at-least-once", "at-most-once")
ACTION_FIELDS = (
    "type",
    "args",
    "delay",
    "unless",
    "notBefore",
    "notAfter",
    "guarantee",
    "holdout",
    "goal",
    "topic",
    "transactional",
)
SUBSCRIBABLE = ("email", "sms")  # the channels that reach the instance itself: opt-outs apply to them
_TOPIC_NAME = r"[a-z0-9][a-z0-9_.-]{0,99}"  # an action's `topic`
_TOPIC = re.compile(f"^{_TOPIC_NAME}$")
# What an instance unsubscribes from: a channel, or a channel's topic (`email:onboarding`).
SUBSCRIPTION_TOPIC = rf"^({'|'.join(SUBSCRIBABLE)})(:{_TOPIC_NAME})?$"
DEFAULT_GOAL_WITHIN = timedelta(days=14)
MAX_HOLDOUT_BP = 5_000  # a holdout is at most 50% (in basis points: hundredths of a percent)
_PERCENT = re.compile(r"^\s*(\d{1,2}(?:\.\d{1,2})?)\s*%\s*$")


@dataclass(frozen=True)
class ConfigError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigInvalid(Exception):
    """The config has problems; `errors` lists every one."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(error) for error in errors))


@dataclass(frozen=True)
class Action:
    type: str
    args: dict[str, Any]
    delay: timedelta | None = None
    unless: tuple[str, ...] = ()
    not_before_minute: int | None = None  # minutes after midnight in the instance's timezone
    not_after_minute: int | None = None
    guarantee: str = "at-least-once"  # at-least-once or at-most-once (the type's default when not given)
    holdout_bp: int = 0  # the share of instances held out of it, in basis points (`holdout: 10%` → 1,000)
    # What its lift is measured on: reaching the step `goal_event` (a later step of its funnel; None: the next
    # step) within `goal_within` of the job's due time (`automation/lift.py`).
    goal_event: str | None = None
    goal_within: timedelta = DEFAULT_GOAL_WITHIN
    # An email or SMS action's subscription topic (None: its funnel's id); a transactional one (a receipt, a
    # password reset) is sent whatever the instance unsubscribed from.
    topic: str | None = None
    transactional: bool = False


@dataclass(frozen=True)
class Step:
    event: str
    actions: tuple[Action, ...] = ()


@dataclass(frozen=True)
class Funnel:
    id: str
    for_models: tuple[str, ...]
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Limit:
    """A frequency cap (`limits: [{channel: email, max: 2, per: 1d}]`): at most `max` messages of the
    channel to one instance in any window of `per` (of one funnel's actions only, when `funnel` is set)."""

    channel: str  # an action type
    max: int
    per: timedelta
    funnel: str | None = None


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard the worker tries (attempts per action, the timeout of one attempt, exponential backoff), and
    how often one instance may be messaged (`limits`)."""

    max_attempts: int = 8
    timeout: timedelta = timedelta(seconds=10)
    backoff_base: timedelta = timedelta(seconds=2)  # the wait after the first failed attempt, doubling
    backoff_max: timedelta = timedelta(hours=1)
    limits: tuple[Limit, ...] = ()


@dataclass(frozen=True)
class Config:
    models: tuple[str, ...]
    funnels: tuple[Funnel, ...]
    segment_model: str
    # channel name → its settings model (config section, gaps filled from the environment at load time)
    channel_settings: dict[str, BaseModel] = field(default_factory=dict)
    delivery: DeliveryPolicy = DeliveryPolicy()
    network_allow: tuple[Network, ...] = ()  # non-public networks deliveries may reach (`network.allow`)
    # The document as read (before environment fallbacks): what the server hands its delivery process.
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


def parse_duration(value: Any) -> timedelta:
    """`"30s"`, `"5m"`, `"3h"`, `"3d"`, `"2w"`, or ISO 8601 (`"P3D"`, `"PT30M"`); must be positive."""
    if isinstance(value, str) and (match := _SHORT_DURATION.match(value)):
        duration = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    elif isinstance(value, str) and value.strip().upper().startswith("P"):
        try:
            duration = TypeAdapter(timedelta).validate_python(value.strip())
        except ValidationError:
            raise ValueError(f"{value!r} is not an ISO 8601 duration") from None
    else:
        raise ValueError('expected a duration such as "30s", "3d" or ISO 8601 "P3D"')
    if duration <= timedelta(0):
        raise ValueError("must be positive")
    return duration


def _minute_of_day(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 23:
        return value * 60
    if isinstance(value, str) and (match := _CLOCK.match(value.strip())):
        return int(match.group(1)) * 60 + int(match.group(2))
    raise ValueError('expected an hour 0–23 or a time "HH:MM"')


def _holdout_bp(value: Any) -> int:
    """`holdout: 10%` (a percentage, up to two decimals, 0–50%) in basis points."""
    match = _PERCENT.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError('expected a percentage from 0% to 50%, e.g. "10%" or "2.5%"')
    basis_points = round(float(match.group(1)) * 100)
    if basis_points > MAX_HOLDOUT_BP:
        raise ValueError("at most 50%: a holdout larger than the treated group measures little more")
    return basis_points


def _as_list(value: Any, path: str) -> Iterator[tuple[Any, str]]:
    """The spec's "X or list of X": items with their paths as written."""
    if isinstance(value, list):
        yield from ((item, f"{path}[{index}]") for index, item in enumerate(value))
    else:
        yield value, path


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield value, path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


class _Checker:
    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(ConfigError(path, message))

    def pydantic(self, error: ValidationError, path: str, model: type[BaseModel]) -> None:
        """One error per pydantic problem, at its path under `path`."""
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                known = ", ".join(info.alias or name for name, info in model.model_fields.items())
                message = f"unknown field (expected {known})"
            self.fail(path + (f".{where}" if where else ""), message)

    def text(self, value: Any, path: str) -> str | None:
        if isinstance(value, str) and value.strip():
            return value
        self.fail(path, "expected a non-empty string")
        return None

    def action(self, raw: Any, path: str) -> Action | None:
        if not isinstance(raw, dict):
            self.fail(path, "expected an action object {type, args}")
            return None
        for key in sorted(set(raw) - set(ACTION_FIELDS)):
            self.fail(f"{path}.{key}", f"unknown field (expected {', '.join(ACTION_FIELDS)})")
        kind = self.text(raw.get("type"), f"{path}.type")
        args = raw.get("args", {})
        if not isinstance(args, dict):
            self.fail(f"{path}.args", "expected an object")
            args = {}
        if kind is not None and kind not in ACTION_TYPES:
            self.fail(
                f"{path}.type", f"unknown action type {kind!r} (expected one of {', '.join(ACTION_TYPES)})"
            )
        elif kind is not None:
            model = ACTION_TYPES[kind].args
            try:
                model.model_validate(args)
            except ValidationError as error:
                self.pydantic(error, f"{path}.args", model)
        for template, where in _strings(args, f"{path}.args"):
            try:
                _LIQUID.from_string(template)
            except LiquidError as error:
                self.fail(where, f"Liquid syntax error: {str(error).splitlines()[0]}")
        delay = None
        if "delay" in raw:
            try:
                delay = parse_duration(raw["delay"])
            except ValueError as error:
                self.fail(f"{path}.delay", str(error))
        unless = tuple(
            name
            for item, where in _as_list(raw.get("unless", []), f"{path}.unless")
            if (name := self.text(item, where))
        )
        minutes: dict[str, int | None] = {"notBefore": None, "notAfter": None}
        for key in minutes:
            if key in raw:
                try:
                    minutes[key] = _minute_of_day(raw[key])
                except ValueError as error:
                    self.fail(f"{path}.{key}", str(error))
        guarantee = ACTION_TYPES[kind].guarantee if kind in ACTION_TYPES else GUARANTEES[0]
        if "guarantee" in raw:
            if raw["guarantee"] in GUARANTEES:
                guarantee = raw["guarantee"]
            else:
                self.fail(f"{path}.guarantee", f"expected one of {', '.join(GUARANTEES)}")
        holdout_bp = 0
        if "holdout" in raw:
            try:
                holdout_bp = _holdout_bp(raw["holdout"])
            except ValueError as error:
                self.fail(f"{path}.holdout", str(error))
        goal_event, goal_within = (
            self.goal(raw.get("goal"), f"{path}.goal") if "goal" in raw else (None, None)
        )
        topic = raw.get("topic")
        if topic is not None and not (isinstance(topic, str) and _TOPIC.match(topic)):
            self.fail(
                f"{path}.topic", "expected a topic name: lowercase letters, digits, '_', '.', '-' (≤ 100)"
            )
            topic = None
        transactional = raw.get("transactional", False)
        if not isinstance(transactional, bool):
            self.fail(f"{path}.transactional", "expected true or false")
            transactional = False
        return Action(
            type=kind or "",
            args=args,
            delay=delay,
            unless=unless,
            not_before_minute=minutes["notBefore"],
            not_after_minute=minutes["notAfter"],
            guarantee=guarantee,
            holdout_bp=holdout_bp,
            goal_event=goal_event,
            goal_within=goal_within or DEFAULT_GOAL_WITHIN,
            topic=topic,
            transactional=transactional,
        )

    def goal(self, raw: Any, path: str) -> tuple[str | None, timedelta | None]:
        """`goal: {event, within?}`: the step event (checked against the funnel by `funnel`) and the window."""
        if not isinstance(raw, dict):
            self.fail(path, "expected an object {event, within?}")
            return None, None
        for key in sorted(set(raw) - {"event", "within"}):
            self.fail(f"{path}.{key}", "unknown field (expected event, within)")
        event = self.text(raw.get("event"), f"{path}.event")
        within = None
        if "within" in raw:
            try:
                within = parse_duration(raw["within"])
            except ValueError as error:
                self.fail(f"{path}.within", str(error))
        return event, within

    def delivery_duration(self, raw: Mapping[str, Any], key: str, default: timedelta) -> timedelta:
        if key not in raw:
            return default
        try:
            return parse_duration(raw[key])
        except ValueError as error:
            self.fail(f"delivery.{key}", str(error))
            return default

    def delivery(self, raw: Any) -> DeliveryPolicy:
        default = DeliveryPolicy()
        if not isinstance(raw, dict):
            self.fail("delivery", f"expected an object {{{', '.join(DELIVERY_FIELDS)}}}")
            return default
        for key in sorted(set(raw) - set(DELIVERY_FIELDS)):
            self.fail(f"delivery.{key}", f"unknown field (expected {', '.join(DELIVERY_FIELDS)})")
        attempts = raw.get("maxAttempts", default.max_attempts)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            self.fail("delivery.maxAttempts", "expected a whole number of at least 1")
            attempts = default.max_attempts
        base = self.delivery_duration(raw, "backoffBase", default.backoff_base)
        most = self.delivery_duration(raw, "backoffMax", default.backoff_max)
        if most < base:
            self.fail("delivery.backoffMax", f"must be at least backoffBase ({raw.get('backoffBase', '2s')})")
        return DeliveryPolicy(
            max_attempts=attempts,
            timeout=self.delivery_duration(raw, "timeout", default.timeout),
            backoff_base=base,
            backoff_max=most,
        )

    def limits(self, raw: Any, funnel_ids: set[str]) -> tuple[Limit, ...]:
        """`limits: [{channel, max, per, funnel?}]`: the frequency caps."""
        found: list[Limit] = []
        for item, where in _as_list(raw, "limits"):
            if not isinstance(item, dict):
                self.fail(where, "expected an object {channel, max, per, funnel?}")
                continue
            problems = len(self.errors)
            for key in sorted(set(item) - {"channel", "max", "per", "funnel"}):
                self.fail(f"{where}.{key}", "unknown field (expected channel, max, per, funnel)")
            channel, most, funnel = item.get("channel"), item.get("max", 0), item.get("funnel")
            if channel not in ACTION_TYPES:
                self.fail(f"{where}.channel", f"expected one of {', '.join(ACTION_TYPES)}")
            if isinstance(most, bool) or not isinstance(most, int) or most < 1:
                self.fail(f"{where}.max", "expected a whole number of at least 1")
            per = timedelta(0)
            try:
                per = parse_duration(item.get("per"))  # positive, or an error
            except ValueError as error:
                self.fail(f"{where}.per", str(error))
            if funnel is not None and funnel not in funnel_ids:
                self.fail(f"{where}.funnel", f"unknown funnel {funnel!r}")
            if len(self.errors) == problems:
                found.append(Limit(str(channel), int(most), per, funnel))
        return tuple(found)

    def network(self, raw: Any) -> tuple[Network, ...]:
        """`network: {allow: ["127.0.0.1/32", …]}`: the CIDRs deliveries may reach though not public."""
        if not isinstance(raw, dict):
            self.fail("network", "expected an object {allow}")
            return ()
        for key in sorted(set(raw) - {"allow"}):
            self.fail(f"network.{key}", "unknown field (expected allow)")
        allowed: list[Network] = []
        for item, where in _as_list(raw.get("allow", []), "network.allow"):
            if not isinstance(item, str):
                self.fail(where, 'expected a network in CIDR form, e.g. "127.0.0.1/32"')
                continue
            try:
                allowed.extend(parse_networks([item]))
            except ValueError as error:
                self.fail(where, f'{error} (expected CIDR form, e.g. "127.0.0.1/32" or "10.0.0.0/8")')
        return tuple(allowed)

    def channel_settings(self, raw: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, BaseModel]:
        """Each channel's section checked as written, then resolved with the environment's fallbacks."""
        resolved = {}
        for name, channel in ACTION_TYPES.items():
            section = raw.get(name, {})
            if not isinstance(section, dict):
                self.fail(name, "expected an object of settings")
                continue
            try:
                channel.settings.model_validate(section)
            except ValidationError as error:
                self.pydantic(error, name, channel.settings)
                continue
            try:
                resolved[name] = resolve_settings(channel, section, environ)
            except ValidationError as error:  # the section is valid: an environment variable is not
                variables = {
                    channel.settings.model_fields[attribute].alias or attribute: variable
                    for attribute, variable in channel.env.items()
                }
                for item in error.errors():
                    where = ".".join(str(part) for part in item["loc"])
                    source = variables.get(str(item["loc"][0]) if item["loc"] else "", "the environment")
                    self.fail(
                        f"{name}.{where}", f"from {source}: {item['msg'].removeprefix('Value error, ')}"
                    )
        return resolved

    def funnel(self, raw: Any, path: str, models: set[str]) -> Funnel | None:
        if not isinstance(raw, dict):
            self.fail(path, "expected a funnel object {id, forModels, steps}")
            return None
        for key in sorted(set(raw) - {"id", "forModels", "steps"}):
            self.fail(f"{path}.{key}", "unknown field (expected id, forModels, steps)")
        funnel_id = self.text(raw.get("id"), f"{path}.id")
        for_models = []
        for item, where in _as_list(raw.get("forModels"), f"{path}.forModels"):
            name = self.text(item, where)
            if name is not None and name not in models:
                self.fail(where, f"unknown model {name!r} (declared: {', '.join(sorted(models)) or 'none'})")
            if name is not None:
                for_models.append(name)
        steps: list[Step] = []
        positions: list[tuple[int, str]] = []  # (position in the file, event) of each valid step
        action_paths: list[tuple[Action, str, int, str | None]] = []  # with its step's position and event
        for position, (item, where) in enumerate(_as_list(raw.get("steps"), f"{path}.steps")):
            if not isinstance(item, dict):
                self.fail(where, "expected a step object {event, actions?}")
                continue
            for key in sorted(set(item) - {"event", "actions"}):
                self.fail(f"{where}.{key}", "unknown field (expected event, actions)")
            event = self.text(item.get("event"), f"{where}.event")
            actions = []
            for raw_action, action_path in _as_list(item.get("actions", []), f"{where}.actions"):
                if (action := self.action(raw_action, action_path)) is not None:
                    actions.append(action)
                    action_paths.append((action, action_path, position, event))
            if event is not None:
                steps.append(Step(event=event, actions=tuple(actions)))
                positions.append((position, event))
        if raw.get("steps") in (None, []):
            self.fail(f"{path}.steps", "expected a step or a non-empty list of steps")
        events = {step.event for step in steps}
        for action, action_path, owner, owner_event in action_paths:
            goal = action.goal_event
            if goal is not None and not any(p > owner and e == goal for p, e in positions):
                self.fail(
                    f"{action_path}.goal.event", f"{goal!r} is not a later step of funnel {funnel_id!r}"
                )
            for name in action.unless:
                if name not in events:
                    self.fail(
                        f"{action_path}.unless",
                        f"{name!r} is not a step of funnel {funnel_id!r} (steps: {', '.join(s.event for s in steps)})",
                    )
                elif owner_event is not None and not any(p > owner and e == name for p, e in positions):
                    # The model has already reached that step when the action is scheduled.
                    self.fail(
                        f"{action_path}.unless",
                        f"{name!r} is not a later step than {owner_event!r} (the action would always be cancelled)",
                    )
        if funnel_id is None or not for_models:
            return None
        return Funnel(id=funnel_id, for_models=tuple(for_models), steps=tuple(steps))


def validate_config(raw: Any, environ: Mapping[str, str] | None = None) -> Config:
    """The typed config, or `ConfigInvalid` listing every problem; settings fall back to `environ` (os.environ)."""
    check = _Checker()
    if not isinstance(raw, dict):
        raise ConfigInvalid([ConfigError("$", "expected an object with `models` and `funnels`")])
    for key in sorted(set(raw) - set(TOP_LEVEL)):
        check.fail(key, f"unknown section (expected {', '.join(TOP_LEVEL)})")
    models: list[str] = []
    for item, where in _as_list(raw.get("models", []), "models"):
        name = check.text(item.get("name"), f"{where}.name") if isinstance(item, dict) else None
        if not isinstance(item, dict):
            check.fail(where, "expected a model object {name}")
        elif name is not None and name in models:
            check.fail(f"{where}.name", f"duplicate model name {name!r}")
        elif name is not None:
            models.append(name)
    if not models:
        check.fail("models", "declare at least one model, e.g. [{name: customer}]")
    funnels: list[Funnel] = []
    seen: dict[str, str] = {}
    for item, where in _as_list(raw.get("funnels", []), "funnels"):
        funnel = check.funnel(item, where, set(models))
        if funnel is None:
            continue
        if funnel.id in seen:
            check.fail(f"{where}.id", f"duplicate funnel id {funnel.id!r} (first at {seen[funnel.id]})")
        seen.setdefault(funnel.id, where)
        funnels.append(funnel)
    segment = raw.get("segment", {})
    segment_model = models[0] if models else ""
    if not isinstance(segment, dict):
        check.fail("segment", "expected an object {model}")
    elif "model" in segment:
        segment_model = check.text(segment["model"], "segment.model") or segment_model
        if segment_model not in models:
            check.fail("segment.model", f"unknown model {segment_model!r}")
    channel_settings = check.channel_settings(raw, os.environ if environ is None else environ)
    delivery = check.delivery(raw.get("delivery", {}))
    delivery = replace(delivery, limits=check.limits(raw.get("limits", []), set(seen)))
    network_allow = check.network(raw.get("network", {}))
    if check.errors:
        raise ConfigInvalid(check.errors)
    return Config(
        models=tuple(models),
        funnels=tuple(funnels),
        segment_model=segment_model,
        channel_settings=channel_settings,
        delivery=delivery,
        network_allow=network_allow,
    )


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read a JSON or YAML file (by extension; anything else is tried as YAML, which includes JSON)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigInvalid([ConfigError(str(path), f"cannot read the file ({error})")]) from None
    try:
        raw = orjson.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except orjson.JSONDecodeError as error:
        raise ConfigInvalid([ConfigError(str(path), f"not valid JSON: {error}")]) from None
    except yaml.YAMLError as error:
        raise ConfigInvalid([ConfigError(str(path), f"not valid YAML: {error}")]) from None
    return replace(validate_config(raw, environ), raw=raw)
