"""The step rule as a pure function: (compiled plan, an instance's levels, one event) → a `Decision`.

How it works: for each (funnel, instance) the satisfied steps are always a prefix 1..m of the funnel's
steps, because step k is satisfied by its event only if steps 1..k−1 are satisfied and k+1 is not (so
neither is k). The rule therefore needs one number per (funnel, instance), its level m, and an event can
only satisfy step m+1, of each funnel of the instance's model, at most one step per funnel. `decide` says
which steps an event satisfies, which of their actions to schedule (due time and idempotency key
included) and which `unless` cancellations to make; it reads nothing and writes nothing. The database
part (reading levels, writing progress rows and jobs, running the cancellations) is `engine.py`'s.

Several events of one instance compose: fold `Decision.levels` into the levels before deciding the next
event. Cancellations name jobs by (funnel, step, action), since the rule does not know job ids; they are
meant to be applied to the instance's pending jobs *before* this decision's own jobs are written. Quiet
hours are not decided here: the worker applies them when a job comes due, in the instance's timezone as
it is then.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson

from funnels.config import Action, Config, Funnel


def action_spec(action: Action) -> dict[str, Any]:
    """An action as stored with its jobs: everything delivery needs, nothing from the config object. A
    holdout, a topic and `transactional` are in it only when set, so the stored form (and its hash) of an
    action without them is what it was before they existed."""
    spec: dict[str, Any] = {
        "type": action.type,
        "args": action.args,
        "delay_ms": _delay_ms(action),
        "unless": list(action.unless),
        "not_before_minute": action.not_before_minute,
        "not_after_minute": action.not_after_minute,
        "guarantee": action.guarantee,
    }
    if action.holdout_bp:
        spec["holdout_bp"] = action.holdout_bp
    if action.topic is not None:
        spec["topic"] = action.topic
    if action.transactional:
        spec["transactional"] = True
    return spec


def _delay_ms(action: Action) -> int:
    return int(action.delay.total_seconds() * 1000) if action.delay else 0


def _spec_id(spec: dict[str, Any]) -> tuple[str, bytes]:
    raw = orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest(), raw


def job_key(funnel_id: str, model: str, primary_id: str, step_index: int, action_index: int) -> str:
    """The idempotency key of one action for one instance: the same however often it is computed."""
    raw = "\x1f".join((funnel_id, model, primary_id, str(step_index), str(action_index)))
    return "fnl_" + hashlib.sha256(raw.encode()).hexdigest()[:40]


HOLDOUT_BUCKETS = 10_000  # basis points


def holdout_bucket(key: str) -> int:
    """Where a job falls among the `HOLDOUT_BUCKETS` (0–9,999): the first 8 hex digits of the SHA-256 of
    `"holdout:" + its key`, as an integer, modulo 10,000. The key is the job's idempotency key (`job_key`:
    funnel, model, the instance's primary id, step and action), so the bucket is the same for one instance
    and one action whenever it is computed: across restarts, replays and config reloads."""
    digest = hashlib.sha256(f"holdout:{key}".encode()).hexdigest()
    return int(digest[:8], 16) % HOLDOUT_BUCKETS


def held_out(key: str, holdout_bp: int) -> bool:
    """Whether the job with this key is in its action's holdout of `holdout_bp` basis points: its bucket is
    below that (so raising a holdout from 10% to 20% keeps everyone held out at 10% held out)."""
    return holdout_bp > 0 and holdout_bucket(key) < holdout_bp


@dataclass(frozen=True)
class PlannedAction:
    """One action of a step, compiled: what a job of it needs besides the event and the instance."""

    index: int  # 0-based position in its step
    type: str
    spec_id: str  # the hash its definition is stored under (`action_specs`)
    delay_ms: int


@dataclass(frozen=True)
class Plan:
    """A validated config compiled for the hot path: lookups by (model, event) instead of scans."""

    config: Config
    funnels_by_model: dict[str, tuple[Funnel, ...]]
    events_by_model: dict[str, frozenset[str]]  # event names that are a step of some funnel of the model
    step_events: frozenset[str]  # of any model
    specs: dict[tuple[str, int, int], tuple[str, bytes]]  # (funnel, step, action) → (spec id, spec JSON)
    actions: dict[tuple[str, int], tuple[PlannedAction, ...]]  # (funnel, step) → its actions
    # (funnel, step event) → the (step, action) pairs whose `unless` names that event
    cancels: dict[tuple[str, str], tuple[tuple[int, int], ...]]

    @classmethod
    def compile(cls, config: Config) -> Plan:
        funnels_by_model = {
            model: tuple(f for f in config.funnels if model in f.for_models) for model in config.models
        }
        events_by_model = {
            model: frozenset(step.event for f in funnels for step in f.steps)
            for model, funnels in funnels_by_model.items()
        }
        specs = {}
        actions: dict[tuple[str, int], tuple[PlannedAction, ...]] = {}
        cancels: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for funnel in config.funnels:
            for step_index, step in enumerate(funnel.steps):
                planned = []
                for action_index, action in enumerate(step.actions):
                    spec = specs[(funnel.id, step_index, action_index)] = _spec_id(action_spec(action))
                    planned.append(PlannedAction(action_index, action.type, spec[0], _delay_ms(action)))
                    for name in action.unless:
                        cancels.setdefault((funnel.id, name), []).append((step_index, action_index))
                actions[(funnel.id, step_index)] = tuple(planned)
        return cls(
            config=config,
            funnels_by_model=funnels_by_model,
            events_by_model=events_by_model,
            step_events=frozenset().union(*events_by_model.values()),
            specs=specs,
            actions=actions,
            cancels={key: tuple(pairs) for key, pairs in cancels.items()},
        )


# The rule runs once per event on the ingest path, so its values are named tuples (a frozen dataclass
# costs several times more to build) and a decision that changes nothing is one shared object.


class Trigger(NamedTuple):
    """What the rule needs of one event for one instance."""

    model: str
    primary_id: str  # the instance's first id: part of each job's idempotency key
    names: tuple[str, ...]  # the step events it counts as: its name, or `IDENTIFY_EVENTS` for an identify
    ts_ms: int  # the event's own time: delays count from it


class SatisfiedStep(NamedTuple):
    funnel: str
    step_index: int  # 0-based; the instance's level in the funnel becomes step_index + 1
    event: str  # the step's event (for an identify: the name the step uses)


class ScheduledJob(NamedTuple):
    """One job to write to the outbox, apart from what comes from the event and the instance's row."""

    funnel: str
    step_index: int
    action_index: int
    type: str
    spec_id: str
    due_ms: int
    key: str  # `job_key`: the idempotency key, unique among jobs


class Cancellation(NamedTuple):
    """Cancel the instance's jobs still to be tried, of `funnel`, at these (step, action) positions."""

    funnel: str
    reached: str  # the step event whose being reached cancels them (their `unless`)
    actions: tuple[tuple[int, int], ...]  # (step index, action index) pairs, all of earlier steps


NO_LEVELS: Mapping[str, int] = MappingProxyType({})


class Decision(NamedTuple):
    """What one event does for one instance."""

    satisfied: tuple[SatisfiedStep, ...] = ()
    schedule: tuple[ScheduledJob, ...] = ()
    cancel: tuple[Cancellation, ...] = ()
    reason: str | None = None  # why nothing was satisfied
    levels: Mapping[str, int] = NO_LEVELS  # new level of each funnel it advanced


NOT_WAITING = "no funnel was waiting for this step (already satisfied, or earlier steps are not)"
_NOT_WAITING = Decision(reason=NOT_WAITING)
_NONE: frozenset[str] = frozenset()


def decide(plan: Plan, levels: Mapping[str, int], trigger: Trigger, now_ms: int) -> Decision:
    """The step rule for one event of one instance whose level per funnel is `levels` (missing: 0).

    Delays count from the event's time, never from the future (a timestamp ahead of `now_ms` counts from
    now), and a job is never due before `now_ms`."""
    model, _, names, ts_ms = trigger
    if plan.events_by_model.get(model, _NONE).isdisjoint(names):
        return Decision(reason=f"{names[0]!r} is not a step of any funnel for model {model!r}")
    satisfied: list[SatisfiedStep] = []
    schedule: list[ScheduledJob] = []
    cancel: list[Cancellation] = []
    advanced: dict[str, int] = {}
    base_ms = min(ts_ms, now_ms)
    for funnel in plan.funnels_by_model.get(model, ()):
        level = levels.get(funnel.id, 0)
        if level >= len(funnel.steps) or (event := funnel.steps[level].event) not in names:
            continue
        satisfied.append(SatisfiedStep(funnel.id, level, event))
        advanced[funnel.id] = level + 1
        # Only earlier steps can have jobs: a later one is not satisfied, and this one's are not written yet.
        pending = tuple(pair for pair in plan.cancels.get((funnel.id, event), ()) if pair[0] < level)
        if pending:
            cancel.append(Cancellation(funnel.id, event, pending))
        for action in plan.actions[(funnel.id, level)]:
            schedule.append(
                ScheduledJob(
                    funnel.id,
                    level,
                    action.index,
                    action.type,
                    action.spec_id,
                    max(now_ms, base_ms + action.delay_ms),
                    job_key(funnel.id, model, trigger.primary_id, level, action.index),
                )
            )
    if not satisfied:
        return _NOT_WAITING
    return Decision(tuple(satisfied), tuple(schedule), tuple(cancel), None, advanced)
