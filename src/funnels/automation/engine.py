"""The step rule and the outbox: what an incoming event does to funnel progress, and which actions it schedules.

How it works: `apply_signals` runs inside the ingest transaction that writes the event log, so an event,
the step it satisfies and the action jobs it creates commit together or not at all (transactional outbox).
For each (funnel, instance) the satisfied steps are always a prefix 1..m of the funnel's steps: step k is
satisfied by its event only if steps 1..k−1 are satisfied and k is not. So the rule needs one number per
(funnel, instance), its level m, and an event can only satisfy step m+1. Each step is satisfied at most
once, so its actions are scheduled at most once; each job's idempotency key is derived from (funnel,
model, instance, step, action), so even a re-run could not make a second, different delivery.

When a step is satisfied, scheduled jobs of the same funnel and instance whose `unless` names that step are
cancelled in the same transaction; the worker checks `unless` again when a job comes due.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, func, select, tuple_, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from funnels.automation.identity import (
    Identify,
    IdentifyRefused,
    IdentityConflict,
    Instance,
    choose,
    identify,
    load_instances,
    owners_of,
)
from funnels.config import Action, Config, Funnel
from funnels.events import Event
from funnels.ingest.log import known_event_ids, log_events
from funnels.store.state import action_jobs, action_specs, chunks, satisfied_steps
from funnels.types import IDENTIFY_EVENTS

ACTIVE = ("scheduled", "failed")  # statuses of jobs that will still be tried


@dataclass
class Signal:
    """One incoming event as automation sees it: the analytics event and the instance it names."""

    event: Event
    model: str | None = None
    ids: tuple[str, ...] = ()
    identify: Identify | None = None
    explicit: bool = False  # from /api/v1/*: always resolved, so the event carries the instance's user key


@dataclass
class Outcome:
    """What one event did, as `/api/v1/*` reports it."""

    event_id: str
    event: str
    status: str  # processed, duplicate, unmatched, conflict, refused (over a cap: not stored), off
    instance: dict[str, str] | None = None
    satisfied: list[dict[str, Any]] = field(default_factory=list)
    scheduled: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    reason: str | None = None
    refused_field: str | None = None  # with `refused`: the identify's field over its cap

    @property
    def refused(self) -> bool:
        return self.status == "refused"

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.event_id, "event": self.event, "status": self.status}
        if self.instance is not None:
            body["instance"] = self.instance
        body["satisfied"] = self.satisfied
        body["scheduled"] = self.scheduled
        if self.cancelled:
            body["cancelled"] = self.cancelled
        if self.reason:
            body["reason"] = self.reason
        return body


def action_spec(action: Action) -> dict[str, Any]:
    """An action as stored with its jobs: everything delivery needs, nothing from the config object."""
    return {
        "type": action.type,
        "args": action.args,
        "delay_ms": int(action.delay.total_seconds() * 1000) if action.delay else 0,
        "unless": list(action.unless),
        "not_before_minute": action.not_before_minute,
        "not_after_minute": action.not_after_minute,
        "guarantee": action.guarantee,
    }


def _spec_id(spec: dict[str, Any]) -> tuple[str, bytes]:
    raw = orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest(), raw


def job_key(funnel_id: str, model: str, primary_id: str, step_index: int, action_index: int) -> str:
    """The idempotency key of one action for one instance: the same however often it is computed."""
    raw = "\x1f".join((funnel_id, model, primary_id, str(step_index), str(action_index)))
    return "fnl_" + hashlib.sha256(raw.encode()).hexdigest()[:40]


@dataclass(frozen=True)
class Plan:
    """A validated config compiled for the hot path: lookups by (model, event) instead of scans."""

    config: Config
    funnels_by_model: dict[str, tuple[Funnel, ...]]
    events_by_model: dict[str, frozenset[str]]  # event names that are a step of some funnel of the model
    step_events: frozenset[str]  # of any model
    specs: dict[tuple[str, int, int], tuple[str, bytes]]  # (funnel, step, action) → (spec id, spec JSON)
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
        cancels: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for funnel in config.funnels:
            for step_index, step in enumerate(funnel.steps):
                for action_index, action in enumerate(step.actions):
                    specs[(funnel.id, step_index, action_index)] = _spec_id(action_spec(action))
                    for name in action.unless:
                        cancels.setdefault((funnel.id, name), []).append((step_index, action_index))
        return cls(
            config=config,
            funnels_by_model=funnels_by_model,
            events_by_model=events_by_model,
            step_events=frozenset().union(*events_by_model.values()),
            specs=specs,
            cancels={key: tuple(pairs) for key, pairs in cancels.items()},
        )

    def store_specs(self, connection: Connection) -> None:
        """Write every action definition once (jobs reference them by hash)."""
        rows = [{"id": spec_id, "spec": raw.decode()} for spec_id, raw in self.specs.values()]
        if rows:
            connection.execute(sqlite_insert(action_specs).on_conflict_do_nothing(), rows)


_LEVELS = (
    select(satisfied_steps.c.instance_id, satisfied_steps.c.funnel_id, func.count())
    .where(satisfied_steps.c.instance_id.in_(bindparam("keys", expanding=True)))
    .group_by(satisfied_steps.c.instance_id, satisfied_steps.c.funnel_id)
)


def levels_of(connection: Connection, instance_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """Each instance's level (satisfied steps) per funnel; every instance asked for has an entry."""
    levels: dict[int, dict[str, int]] = {instance_id: {} for instance_id in instance_ids}
    for chunk in chunks(levels):
        for instance_id, funnel_id, count in connection.execute(_LEVELS, {"keys": chunk}):
            levels[instance_id][funnel_id] = int(count)
    return levels


class _Batch:
    """One ingest transaction's automation work.

    Reads are done up front for the whole batch (ids, instances, levels: a few queries, not a few per
    event) and kept current as the batch identifies instances and satisfies steps; writes of satisfied
    steps and jobs are buffered and written with one statement each (`flush`)."""

    def __init__(self, connection: Connection, plan: Plan, now_ms: int, signals: Sequence[Signal]) -> None:
        self.connection = connection
        self.plan = plan
        self.now_ms = now_ms
        wanted = [signal for signal in signals if self.wanted(signal)]
        ids = {
            id_
            for signal in wanted
            for id_ in (*signal.ids, *(signal.identify.ids if signal.identify else ()))
        }
        self.owners = owners_of(connection, ids)
        found = {instance_id for owners in self.owners.values() for _model, instance_id in owners}
        self.instances = load_instances(connection, found)
        self.levels = levels_of(connection, found)
        self.steps: list[dict[str, Any]] = []
        self.jobs: list[tuple[Outcome, dict[str, Any]]] = []

    def wanted(self, signal: Signal) -> bool:
        """Whether automation looks at this signal at all (cheap: no I/O)."""
        if signal.identify is not None:
            return True
        return bool(signal.ids) and (signal.explicit or signal.event.event in self.plan.step_events)

    def process(self, signal: Signal) -> Outcome:
        event = signal.event
        if not self.wanted(signal):
            return Outcome(event.event_id, event.event, "unmatched", reason="not a step event of any funnel")
        found = self.instance_for(signal)
        if isinstance(found, Outcome):
            return found
        if signal.explicit:  # /api/v1 names instances, not users: key its events by the instance
            event.user_key = found.primary_id
        return self.apply(signal, found)

    def instance_for(self, signal: Signal) -> Instance | Outcome:
        """Identify or resolve the signal's instance, or the outcome that says why there is none."""
        event = signal.event
        if signal.identify is not None:
            try:
                instance, _created = identify(self.connection, signal.identify, self.now_ms)
            except IdentityConflict as conflict:
                return Outcome(event.event_id, event.event, "conflict", reason=str(conflict))
            except IdentifyRefused as refused:
                return Outcome(
                    event.event_id, event.event, "refused", reason=str(refused), refused_field=refused.field
                )
            model = signal.identify.model
            for id_ in signal.identify.ids:  # keep the prefetched view current for later signals
                others = [owner for owner in self.owners.get(id_, []) if owner[0] != model]
                self.owners[id_] = [*others, (model, instance.id)]
            self.instances[instance.id] = instance
            if instance.id not in self.levels:
                self.levels.update(levels_of(self.connection, [instance.id]))
            return instance
        instance_id = choose(self.owners, signal.ids, signal.model, self.plan.config.models)
        if instance_id is None:
            where = f"{signal.model} instance" if signal.model else "instance of any model"
            reason = f"no {where} has any of the ids {list(signal.ids)}; identify it first"
            return Outcome(event.event_id, event.event, "unmatched", reason=reason)
        return self.instances[instance_id]

    def apply(self, signal: Signal, instance: Instance) -> Outcome:
        event = signal.event
        outcome = Outcome(event.event_id, event.event, "processed", instance=instance.ref())
        names = IDENTIFY_EVENTS if signal.identify is not None else (event.event,)
        if not any(name in self.plan.events_by_model.get(instance.model, ()) for name in names):
            outcome.reason = f"{names[0]!r} is not a step of any funnel for model {instance.model!r}"
            return outcome
        levels = self.levels[instance.id]
        for funnel in self.plan.funnels_by_model.get(instance.model, ()):
            level = levels.get(funnel.id, 0)
            if level >= len(funnel.steps) or funnel.steps[level].event not in names:
                continue
            levels[funnel.id] = level + 1
            self._satisfy(funnel, level, event, instance, outcome)
        if not outcome.satisfied:
            outcome.reason = (
                "no funnel was waiting for this step (already satisfied, or earlier steps are not)"
            )
        return outcome

    def _satisfy(
        self, funnel: Funnel, step_index: int, event: Event, instance: Instance, out: Outcome
    ) -> None:
        step = funnel.steps[step_index]
        self.steps.append(
            {
                "instance_id": instance.id,
                "funnel_id": funnel.id,
                "step_index": step_index,
                "event": step.event,
                "event_id": event.event_id,
                "event_ts_ms": event.ts_ms,
                "satisfied_ms": self.now_ms,
            }
        )
        out.satisfied.append({"funnel": funnel.id, "step": step_index + 1, "event": step.event})
        cancel = self.plan.cancels.get((funnel.id, step.event), ())
        if cancel:
            self.flush()  # jobs of this batch are cancellable too
            result = self.connection.execute(
                update(action_jobs)
                .where(
                    action_jobs.c.instance_id == instance.id,
                    action_jobs.c.funnel_id == funnel.id,
                    action_jobs.c.status.in_(ACTIVE),
                    tuple_(action_jobs.c.step_index, action_jobs.c.action_index).in_(cancel),
                )
                .values(
                    status="cancelled",
                    next_ms=None,
                    last_error=f"cancelled: {step.event!r} was reached first",
                    updated_ms=self.now_ms,
                )
                .returning(action_jobs.c.id)
            )
            out.cancelled.extend(int(row.id) for row in result)
        # Delays count from the event's time (an SDK may send late), never from the future, and a job is
        # never due before now.
        base_ms = min(event.ts_ms, self.now_ms)
        event_properties = orjson.dumps(event.properties).decode() if step.actions else ""
        for action_index, action in enumerate(step.actions):
            spec_id, _raw = self.plan.specs[(funnel.id, step_index, action_index)]
            delay_ms = int(action.delay.total_seconds() * 1000) if action.delay else 0
            due_ms = max(self.now_ms, base_ms + delay_ms)
            self.jobs.append(
                (
                    out,
                    {
                        "key": job_key(
                            funnel.id, instance.model, instance.primary_id, step_index, action_index
                        ),
                        "funnel_id": funnel.id,
                        "step_index": step_index,
                        "action_index": action_index,
                        "action_type": action.type,
                        "model": instance.model,
                        "instance_id": instance.id,
                        "spec_id": spec_id,
                        "event_id": event.event_id,
                        "event": event.event,
                        "event_properties": event_properties,
                        "event_ts_ms": event.ts_ms,
                        "status": "scheduled",
                        "due_ms": due_ms,
                        "next_ms": due_ms,
                        "attempts": 0,
                        "created_ms": self.now_ms,
                        "updated_ms": self.now_ms,
                    },
                )
            )

    def flush(self) -> None:
        """Write the buffered satisfied steps and jobs (one statement each); jobs report their ids."""
        if self.steps:
            self.connection.execute(satisfied_steps.insert(), self.steps)
            self.steps = []
        if not self.jobs:
            return
        inserted = {
            row.key: int(row.id)
            for row in self.connection.execute(
                sqlite_insert(action_jobs)
                .on_conflict_do_nothing(index_elements=["key"])
                .returning(action_jobs.c.id, action_jobs.c.key),
                [row for _outcome, row in self.jobs],
            )
        }
        for outcome, row in self.jobs:
            if row["key"] in inserted:  # a job with this key already existed: it is not scheduled twice
                outcome.scheduled.append(
                    {
                        "id": inserted[row["key"]],
                        "funnel": row["funnel_id"],
                        "step": row["step_index"] + 1,
                        "action": row["action_index"] + 1,
                        "type": row["action_type"],
                        "due_ms": row["due_ms"],
                    }
                )
        self.jobs = []


def apply_signals(
    connection: Connection, plan: Plan | None, signals: Sequence[Signal], now_ms: int
) -> list[Outcome]:
    """Log the events and run the step rule for each, in order, in the caller's transaction.

    Every new event is written to the event log whatever automation makes of it (analytics keeps them
    all); an event id already in the log is a no-op. An `/api/v1` event for a known instance carries the
    instance's primary id as its user key, so analytics counts each instance once. An identify over a cap
    (`refused`) is neither applied nor logged: the client gets an error and may send it again changed.
    One outcome per signal."""
    seen = known_event_ids(connection, [signal.event.event_id for signal in signals])
    fresh = [signal for signal in signals if signal.event.event_id not in seen]
    batch = _Batch(connection, plan, now_ms, fresh) if plan is not None else None
    outcomes: list[Outcome] = []
    logged: list[Event] = []
    for signal in signals:
        event = signal.event
        if event.event_id in seen:
            outcomes.append(
                Outcome(event.event_id, event.event, "duplicate", reason="this event id was already received")
            )
            continue
        if batch is None:
            outcome = Outcome(
                event.event_id, event.event, "off", reason="automation is off: the server has no config"
            )
        else:
            outcome = batch.process(signal)
        outcomes.append(outcome)
        if not outcome.refused:
            seen.add(event.event_id)
            logged.append(event)
    if batch is not None:
        batch.flush()
    log_events(connection, logged)
    return outcomes
