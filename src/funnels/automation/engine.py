"""The outbox side of the step rule: what an incoming event writes for funnel progress and actions.

How it works: a `Batch` runs inside the ingest transaction that writes the event log
(`funnels.ingest.transaction`), so an event, the step it satisfies and the action jobs it creates commit
together or not at all (transactional outbox).
The rule itself is `steprule.decide`, a pure function of the compiled plan, the instance's levels and the
event; this module is its database part: it reads each instance's levels once per batch (one number per
funnel: its count of satisfied steps), keeps them current as decisions advance them, and writes what each
decision says (progress rows, jobs, cancellations). Each job's idempotency key is derived from (funnel,
model, instance, step, action), so even a re-run could not make a second, different delivery.

When a step is satisfied, scheduled jobs of the same funnel and instance whose `unless` names that step are
cancelled in the same transaction, jobs written earlier in the batch included; the worker checks `unless`
again when a job comes due.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from funnels.automation.identity import Identify, IdentifyRefused, IdentityConflict, choose, identify
from funnels.automation.steprule import Decision, Plan, Trigger, decide
from funnels.automation.steprule import job_key as job_key  # re-exported: callers and tests name it here
from funnels.events import Event
from funnels.store import outbox, progress
from funnels.store.identity import Instance, instances_named
from funnels.store.progress import SatisfiedStep
from funnels.store.state import Connection
from funnels.types import IDENTIFY_EVENTS


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


def store_specs(connection: Connection, plan: Plan) -> None:
    """Write every action definition of the plan once (jobs reference them by hash)."""
    outbox.store_specs(connection, plan.specs.values())


class Batch:
    """One ingest transaction's automation work: made with the signals it will see (to read ahead for them),
    `process` each in order (one outcome each), then `flush`.

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
        self.owners, self.instances = instances_named(connection, ids)
        self.levels = progress.levels_of(connection, self.instances)
        self.steps: list[SatisfiedStep] = []
        self.jobs: list[tuple[Outcome, outbox.NewJob]] = []

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
                self.levels.update(progress.levels_of(self.connection, [instance.id]))
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
        levels = self.levels[instance.id]
        trigger = Trigger(instance.model, instance.primary_id, names, event.ts_ms)
        decision = decide(self.plan, levels, trigger, self.now_ms)
        outcome.reason = decision.reason
        levels.update(decision.levels)  # the next signal of this instance in the batch sees them
        if decision.satisfied:
            self._record(decision, event, instance, outcome)
        return outcome

    def _record(self, decision: Decision, event: Event, instance: Instance, out: Outcome) -> None:
        """Buffer the decision's progress rows and jobs; run its cancellations now (after writing what
        the batch buffered, so jobs scheduled earlier in it are cancellable too)."""
        for step in decision.satisfied:
            self.steps.append(
                SatisfiedStep(
                    instance.id,
                    step.funnel,
                    step.step_index,
                    step.event,
                    event.event_id,
                    event.ts_ms,
                    self.now_ms,
                )
            )
            out.satisfied.append({"funnel": step.funnel, "step": step.step_index + 1, "event": step.event})
        if decision.cancel:
            self.flush()
        for cancel in decision.cancel:
            error = f"cancelled: {cancel.reached!r} was reached first"
            out.cancelled += outbox.cancel(
                self.connection, instance.id, cancel.funnel, cancel.actions, error, self.now_ms
            )
        event_properties = orjson.dumps(event.properties).decode() if decision.schedule else ""
        for job in decision.schedule:
            self.jobs.append(
                (
                    out,
                    outbox.NewJob(
                        key=job.key,
                        funnel_id=job.funnel,
                        step_index=job.step_index,
                        action_index=job.action_index,
                        action_type=job.type,
                        model=instance.model,
                        instance_id=instance.id,
                        spec_id=job.spec_id,
                        event_id=event.event_id,
                        event=event.event,
                        event_properties=event_properties,
                        event_ts_ms=event.ts_ms,
                        due_ms=job.due_ms,
                        created_ms=self.now_ms,
                    ),
                )
            )

    def flush(self) -> None:
        """Write the buffered satisfied steps and jobs (one statement each); jobs report their ids."""
        if self.steps:
            progress.record(self.connection, self.steps)
            self.steps = []
        if not self.jobs:
            return
        inserted = outbox.schedule(self.connection, [job for _outcome, job in self.jobs])
        for outcome, job in self.jobs:
            if job.key in inserted:  # a job with this key already existed: it is not scheduled twice
                outcome.scheduled.append(
                    {
                        "id": inserted[job.key],
                        "funnel": job.funnel_id,
                        "step": job.step_index + 1,
                        "action": job.action_index + 1,
                        "type": job.action_type,
                        "due_ms": job.due_ms,
                    }
                )
        self.jobs = []
