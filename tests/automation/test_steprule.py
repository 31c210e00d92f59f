"""The step rule as a pure function (`steprule.decide`), without a database: a table of cases for the spec's
rule, delays, `unless` and folding; then a property test that `decide`, folded over random signal sequences,
agrees with the engine's database path (`apply_signals` on a real SQLite state store)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from funnels.automation.engine import Signal, store_specs
from funnels.automation.identity import Identify
from funnels.automation.steprule import NOT_WAITING, Decision, Plan, Trigger, decide, job_key
from funnels.config import validate_config
from funnels.events import Event
from funnels.ingest.transaction import apply_signals
from funnels.store.state import StateStore, action_jobs, instances, satisfied_steps
from funnels.types import IDENTIFY_EVENTS

NOW = 1_775_001_600_000  # 2026-04-01T00:00:00Z
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
HOOK = {"type": "webhook", "args": {"url": "https://hooks.example/step"}}

RAW_CONFIG: dict[str, Any] = {
    "models": [{"name": "customer"}, {"name": "organization"}],
    "funnels": [
        {
            "id": "onboarding",
            "forModels": "customer",
            "steps": [
                {
                    "event": "sign_up",
                    "actions": [
                        HOOK,
                        {**HOOK, "delay": "3d", "unless": "development_api_call"},
                        {**HOOK, "delay": "1h", "unless": ["development_api_call", "production_api_call"]},
                    ],
                },
                {"event": "development_api_call", "actions": {**HOOK, "notBefore": 9, "notAfter": 17}},
                {"event": "production_api_call", "actions": HOOK},
            ],
        },
        {  # the same event at consecutive steps; step 1's action is cancelled by reaching step 2
            "id": "twice",
            "forModels": "customer",
            "steps": [
                {"event": "visit", "actions": {**HOOK, "delay": "1d", "unless": "visit"}},
                {"event": "visit"},
                {"event": "buy", "actions": HOOK},
            ],
        },
        {  # shares sign_up with onboarding; for both models
            "id": "invite",
            "forModels": ["customer", "organization"],
            "steps": [{"event": "sign_up", "actions": HOOK}, {"event": "invite_sent", "actions": HOOK}],
        },
        {  # identify fires both of its names: one identify satisfies one step
            "id": "greet",
            "forModels": "customer",
            "steps": [{"event": "onFunctionaryIdentify", "actions": HOOK}, {"event": "$identify"}],
        },
    ],
}
PLAN = Plan.compile(validate_config(RAW_CONFIG, environ={}))


def trigger(name: str, model: str = "customer", ts_ms: int = NOW, primary_id: str = "c1") -> Trigger:
    names = IDENTIFY_EVENTS if name == "identify" else (name,)
    return Trigger(model=model, primary_id=primary_id, names=names, ts_ms=ts_ms)


def jobs(decision: Decision) -> list[tuple[str, int, int, int]]:
    """(funnel, step, action, due − NOW), 1-based like the API."""
    return [(j.funnel, j.step_index + 1, j.action_index + 1, j.due_ms - NOW) for j in decision.schedule]


def cancels(decision: Decision) -> list[tuple[str, str, tuple[tuple[int, int], ...]]]:
    return [(c.funnel, c.reached, c.actions) for c in decision.cancel]


def steps(decision: Decision) -> list[tuple[str, int]]:
    return [(s.funnel, s.step_index + 1) for s in decision.satisfied]


@dataclass(frozen=True)
class Case:
    name: str
    levels: dict[str, int]
    event: str
    satisfied: list[tuple[str, int]]
    scheduled: list[tuple[str, int, int, int]] = field(default_factory=list)
    cancelled: list[tuple[str, str, tuple[tuple[int, int], ...]]] = field(default_factory=list)
    model: str = "customer"
    ts_ms: int = NOW


CASES = [
    Case(
        "the first step, in two funnels",
        {},
        "sign_up",
        [("onboarding", 1), ("invite", 1)],
        [
            ("onboarding", 1, 1, 0),
            ("onboarding", 1, 2, 3 * DAY_MS),
            ("onboarding", 1, 3, HOUR_MS),
            ("invite", 1, 1, 0),
        ],
    ),
    Case(
        "the next step in order cancels earlier steps' pending jobs",
        {"onboarding": 1, "invite": 1},
        "development_api_call",
        [("onboarding", 2)],
        [("onboarding", 2, 1, 0)],  # quiet hours do not move the due time: the worker applies them
        [("onboarding", "development_api_call", ((0, 1), (0, 2)))],
    ),
    Case(
        "step 3 cancels what names it",
        {"onboarding": 2},
        "production_api_call",
        [("onboarding", 3)],
        [("onboarding", 3, 1, 0)],
        [("onboarding", "production_api_call", ((0, 2),))],
    ),
    Case("skipping step 1 does nothing", {}, "development_api_call", []),
    Case("skipping step 2 does nothing", {"onboarding": 1}, "production_api_call", []),
    Case("a satisfied step again does nothing", {"onboarding": 1, "invite": 1}, "sign_up", []),
    Case(
        "a step whose next step is satisfied is not satisfied again",
        {"onboarding": 2, "invite": 1},
        "sign_up",
        [],
    ),
    Case("the middle step of a completed funnel", {"onboarding": 3}, "development_api_call", []),
    Case("the last step again", {"onboarding": 3}, "production_api_call", []),
    Case(
        "a repeated event: the first satisfies step 1", {}, "visit", [("twice", 1)], [("twice", 1, 1, DAY_MS)]
    ),
    Case(
        "a repeated event: the second satisfies step 2, cancelling step 1's job",
        {"twice": 1},
        "visit",
        [("twice", 2)],
        [],
        [("twice", "visit", ((0, 0),))],
    ),
    Case("a repeated event: the third does nothing", {"twice": 2}, "visit", []),
    Case(
        "one funnel advanced, the other one not waiting",
        {"invite": 1},
        "sign_up",
        [("onboarding", 1)],
        [("onboarding", 1, 1, 0), ("onboarding", 1, 2, 3 * DAY_MS), ("onboarding", 1, 3, HOUR_MS)],
    ),
    Case(
        "a funnel not for the model is skipped",
        {},
        "sign_up",
        [("invite", 1)],
        [("invite", 1, 1, 0)],
        model="organization",
    ),
    Case("an identify: one step per identify", {}, "identify", [("greet", 1)], [("greet", 1, 1, 0)]),
    Case("an identify again: the next step", {"greet": 1}, "identify", [("greet", 2)]),
    Case(
        "a delay counts from the event's time",
        {},
        "visit",
        [("twice", 1)],
        [("twice", 1, 1, DAY_MS - 5 * HOUR_MS)],
        ts_ms=NOW - 5 * HOUR_MS,
    ),
    Case(
        "a job is never due in the past",
        {},
        "visit",
        [("twice", 1)],
        [("twice", 1, 1, 0)],
        ts_ms=NOW - 2 * DAY_MS,
    ),
    Case(
        "a delay never counts from the future",
        {},
        "visit",
        [("twice", 1)],
        [("twice", 1, 1, DAY_MS)],
        ts_ms=NOW + DAY_MS,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_step_rule(case: Case) -> None:
    decision = decide(PLAN, case.levels, trigger(case.event, case.model, case.ts_ms), NOW)
    assert steps(decision) == case.satisfied
    assert jobs(decision) == case.scheduled
    assert cancels(decision) == case.cancelled
    assert dict(decision.levels) == {funnel: step for funnel, step in case.satisfied}
    assert (decision.reason is None) == bool(case.satisfied)
    if not case.satisfied:
        assert decision.reason == NOT_WAITING


def test_an_event_no_funnel_of_the_model_has_says_so() -> None:
    for event, model in (
        ("development_api_call", "organization"),
        ("checkout", "customer"),
        ("sign_up", "nobody"),
    ):
        decision = decide(PLAN, {}, trigger(event, model), NOW)
        assert decision == Decision(reason=f"{event!r} is not a step of any funnel for model {model!r}")


def test_jobs_carry_their_key_spec_and_type() -> None:
    decision = decide(PLAN, {}, trigger("sign_up", primary_id="ada"), NOW)
    for job in decision.schedule:
        assert job.key == job_key(job.funnel, "customer", "ada", job.step_index, job.action_index)
        assert job.spec_id == PLAN.specs[(job.funnel, job.step_index, job.action_index)][0]
        assert job.type == "webhook"
    assert len({job.key for job in decision.schedule}) == 4


def test_the_levels_passed_in_are_not_changed() -> None:
    levels = {"invite": 1}
    decide(PLAN, levels, trigger("sign_up"), NOW)
    assert levels == {"invite": 1}


def fold(names: list[str], levels: dict[str, int] | None = None) -> list[Decision]:
    """Decide each event in turn, folding each decision's levels into the next call."""
    current = dict(levels or {})
    decisions = []
    for name in names:
        decision = decide(PLAN, current, trigger(name), NOW)
        current.update(decision.levels)
        decisions.append(decision)
    return decisions


@pytest.mark.parametrize(
    ("names", "expected"),
    [  # the table of docs/automation.md, plus the other funnels the same events advance
        (
            ["sign_up", "development_api_call", "production_api_call"],
            [[("onboarding", 1), ("invite", 1)], [("onboarding", 2)], [("onboarding", 3)]],
        ),
        (["sign_up", "sign_up"], [[("onboarding", 1), ("invite", 1)], []]),
        (["development_api_call", "sign_up"], [[], [("onboarding", 1), ("invite", 1)]]),
        (
            ["development_api_call", "sign_up", "development_api_call"],
            [[], [("onboarding", 1), ("invite", 1)], [("onboarding", 2)]],
        ),
        (["sign_up", "production_api_call"], [[("onboarding", 1), ("invite", 1)], []]),
        (
            ["sign_up", "development_api_call", "sign_up"],
            [[("onboarding", 1), ("invite", 1)], [("onboarding", 2)], []],
        ),
        (["visit", "visit", "visit", "buy"], [[("twice", 1)], [("twice", 2)], [], [("twice", 3)]]),
    ],
)
def test_signals_in_sequence_fold_levels(names: list[str], expected: list[list[tuple[str, int]]]) -> None:
    assert [steps(decision) for decision in fold(names)] == expected


def test_sign_up_then_development_api_call_cancels_the_reminder_of_the_first() -> None:
    first, second = fold(["sign_up", "development_api_call"])
    reminders = {
        (j.step_index, j.action_index) for j in first.schedule if j.funnel == "onboarding" and j.due_ms > NOW
    }
    assert reminders == {(0, 1), (0, 2)}
    assert cancels(second) == [("onboarding", "development_api_call", ((0, 1), (0, 2)))]


# The database path: the same random signal sequences through `apply_signals` on a real SQLite store.

WHO = {"c1": "customer", "c2": "customer", "o1": "organization"}
EVENTS = ["identify", "sign_up", "development_api_call", "production_api_call", "visit", "buy", "invite_sent"]


Expected = tuple[list[dict[str, Any]], list[tuple[str, int]], set[str]]


class Reference:
    """`decide` folded over signals, keeping the jobs it scheduled and cancelled by key (no database)."""

    def __init__(self) -> None:
        self.levels: dict[str, dict[str, int]] = {}  # primary id → funnel → level; identified instances only
        self.jobs: dict[str, tuple[str, int, int, int]] = {}  # key → (primary id, funnel, step, action)
        self.due: dict[str, int] = {}
        self.cancelled: set[str] = set()

    def apply(self, name: str, who: str, ts_ms: int, now_ms: int) -> Expected | None:
        """What the engine must answer for one signal: satisfied steps, (key, due) of the jobs it
        schedules, keys of the jobs it cancels; None when the instance does not exist yet."""
        if name == "identify":
            self.levels.setdefault(who, {})
        if who not in self.levels:
            return None  # unmatched: no such instance yet
        levels = self.levels[who]
        decision = decide(PLAN, levels, trigger(name, WHO[who], ts_ms, who), now_ms)
        levels.update(decision.levels)
        cancelled = set()
        for cancel in decision.cancel:
            for step_index, action_index in cancel.actions:
                key = job_key(cancel.funnel, WHO[who], who, step_index, action_index)
                if key in self.jobs and key not in self.cancelled:
                    cancelled.add(key)
        self.cancelled |= cancelled
        for job in decision.schedule:
            self.jobs[job.key] = (who, job.funnel, job.step_index, job.action_index)
            self.due[job.key] = job.due_ms
        satisfied = [
            {"funnel": s.funnel, "step": s.step_index + 1, "event": s.event} for s in decision.satisfied
        ]
        return satisfied, [(job.key, job.due_ms) for job in decision.schedule], cancelled


signal_strategy = st.tuples(
    st.sampled_from(EVENTS), st.sampled_from(sorted(WHO)), st.integers(-4 * DAY_MS, DAY_MS)
)


@settings(max_examples=30, deadline=None)
@given(
    batches=st.lists(st.lists(signal_strategy, min_size=1, max_size=6), min_size=1, max_size=6),
    gaps=st.lists(st.integers(0, 2 * DAY_MS), min_size=6, max_size=6),
)
def test_decide_agrees_with_the_database_path(
    batches: list[list[tuple[str, str, int]]], gaps: list[int]
) -> None:
    reference = Reference()
    now_ms = NOW
    serial = 0
    with tempfile.TemporaryDirectory() as directory:
        store = StateStore(Path(directory) / "state.sqlite3")
        try:
            with store.write() as connection:
                store_specs(connection, PLAN)
            for batch, gap in zip(batches, gaps, strict=False):
                now_ms += gap
                signals = []
                for name, who, offset in batch:
                    serial += 1
                    event = Event(
                        event_id=f"e{serial}",
                        type="identify" if name == "identify" else "track",
                        event=name,
                        user_key=who,
                        ts_ms=now_ms + offset,
                        received_ms=now_ms,
                    )
                    identify = Identify(model=WHO[who], ids=(who,)) if name == "identify" else None
                    signals.append(
                        Signal(event, model=WHO[who], ids=(who,), identify=identify, explicit=True)
                    )
                with store.write() as connection:
                    outcomes = apply_signals(connection, PLAN, signals, now_ms)
                    keys = dict(connection.execute(select(action_jobs.c.id, action_jobs.c.key)).all())
                for (name, who, offset), outcome in zip(batch, outcomes, strict=True):
                    expected = reference.apply(name, who, now_ms + offset, now_ms)
                    if expected is None:
                        assert outcome.status == "unmatched"
                        continue
                    satisfied, scheduled, cancelled = expected
                    assert outcome.status == "processed"
                    assert outcome.satisfied == satisfied
                    assert {keys[job_id] for job_id in outcome.cancelled} == cancelled
                    assert [(keys[item["id"]], item["due_ms"]) for item in outcome.scheduled] == scheduled
            with store.read() as connection:
                rows = connection.execute(
                    select(action_jobs.c.key, action_jobs.c.status, action_jobs.c.due_ms)
                ).all()
                progress = connection.execute(
                    select(
                        instances.c.primary_id, satisfied_steps.c.funnel_id, satisfied_steps.c.step_index
                    ).join(instances, instances.c.id == satisfied_steps.c.instance_id)
                ).all()
        finally:
            store.close()
    assert {key: due for key, _status, due in rows} == reference.due
    assert {key for key, status, _due in rows if status == "cancelled"} == reference.cancelled
    assert {status for _key, status, _due in rows} <= {"scheduled", "cancelled"}
    levels: dict[str, dict[str, list[int]]] = {}
    for primary_id, funnel_id, step_index in progress:
        levels.setdefault(primary_id, {}).setdefault(funnel_id, []).append(step_index)
    expected = {who: found for who, found in reference.levels.items() if found}
    assert {who: {f: sorted(found) for f, found in funnels.items()} for who, funnels in levels.items()} == {
        who: {funnel: list(range(level)) for funnel, level in found.items()}
        for who, found in expected.items()
    }
