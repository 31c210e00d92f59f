"""The step rule through `/api/v1/*` over real SQLite and chDB: step k is satisfied by its event only if steps
1..k−1 are satisfied and k+1 is not, each step at most once; delays, `unless` and job keys."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from funnels.automation.engine import job_key
from funnels.store.state import action_jobs, instances, satisfied_steps
from tests.automation.conftest import DAY_MS, DEAD_URL, Config, World, default_config, satisfied

HOUR_MS = 3_600_000


@pytest.fixture
def automation_config() -> Config:
    config = default_config()
    hook = {"type": "webhook", "args": {"url": DEAD_URL}}
    config["funnels"] += [
        {  # shares sign_up with onboarding; for both models
            "id": "invite",
            "forModels": ["customer", "organization"],
            "steps": [{"event": "sign_up", "actions": hook}, {"event": "invite_sent", "actions": hook}],
        },
        {
            "id": "greet",
            "forModels": "customer",
            "steps": [{"event": "onFunctionaryIdentify", "actions": hook}, {"event": "activated"}],
        },
        {
            "id": "org_greet",
            "forModels": "organization",
            "steps": [{"event": "$identify", "actions": hook}],
        },
    ]
    return config


def levels(world: World, model: str, primary_id: str) -> dict[str, list[int]]:
    """Satisfied steps (1-based) per funnel for one instance, straight from the state store."""
    with world.svc.state.read() as connection:
        rows = connection.execute(
            select(satisfied_steps.c.funnel_id, satisfied_steps.c.step_index)
            .join(instances, instances.c.id == satisfied_steps.c.instance_id)
            .where(instances.c.model == model, instances.c.primary_id == primary_id)
            .order_by(satisfied_steps.c.funnel_id, satisfied_steps.c.step_index)
        ).all()
    found: dict[str, list[int]] = {}
    for funnel_id, step_index in rows:
        found.setdefault(funnel_id, []).append(step_index + 1)
    return found


def job_counts(world: World, primary_id: str) -> dict[tuple[str, int], int]:
    """Jobs per (funnel, step) for one customer."""
    with world.svc.state.read() as connection:
        rows = connection.execute(
            select(action_jobs.c.funnel_id, action_jobs.c.step_index, func.count())
            .join(instances, instances.c.id == action_jobs.c.instance_id)
            .where(instances.c.primary_id == primary_id)
            .group_by(action_jobs.c.funnel_id, action_jobs.c.step_index)
        ).all()
    return {(funnel_id, step_index + 1): int(count) for funnel_id, step_index, count in rows}


def test_steps_are_satisfied_in_order(world: World) -> None:
    world.identify(["c1"])
    first = world.event("sign_up", ["c1"])
    assert first["status"] == "processed"
    assert first["instance"] == {"model": "customer", "id": "c1"}
    assert ("onboarding", 1) in satisfied(first)
    assert [(item["funnel"], item["step"], item["action"]) for item in first["scheduled"]][:2] == [
        ("onboarding", 1, 1),
        ("onboarding", 1, 2),
    ]
    assert satisfied(world.event("development_api_call", ["c1"])) == [("onboarding", 2)]
    assert satisfied(world.event("production_api_call", ["c1"])) == [("onboarding", 3)]
    assert levels(world, "customer", "c1")["onboarding"] == [1, 2, 3]
    progress = world.get("/v0/models/customer/c1")["funnels"]
    onboarding = next(funnel for funnel in progress if funnel["id"] == "onboarding")
    assert onboarding["level"] == 3 and onboarding["completed"] is True


def test_a_later_step_before_an_earlier_one_does_nothing_and_is_not_remembered(world: World) -> None:
    world.identify(["c1"])
    early = world.event("development_api_call", ["c1"])
    assert early["status"] == "processed"
    assert early["satisfied"] == [] and early["scheduled"] == []
    assert early["reason"]
    assert levels(world, "customer", "c1") == {"greet": [1]}  # identify's own funnel only

    assert ("onboarding", 1) in satisfied(world.event("sign_up", ["c1"]))
    # The early development_api_call does not count now that step 1 is there: step 3 still needs step 2.
    assert world.event("production_api_call", ["c1"])["satisfied"] == []
    assert levels(world, "customer", "c1")["onboarding"] == [1]
    assert satisfied(world.event("development_api_call", ["c1"])) == [("onboarding", 2)]
    assert satisfied(world.event("production_api_call", ["c1"])) == [("onboarding", 3)]


def test_repeats_of_a_satisfied_steps_event_change_nothing(world: World) -> None:
    world.identify(["c1"])
    world.event("sign_up", ["c1"])
    world.event("development_api_call", ["c1"])
    before = world.jobs(id="c1")
    for name in ("sign_up", "development_api_call", "sign_up"):
        again = world.event(name, ["c1"])
        assert again["status"] == "processed"
        assert again["satisfied"] == [] and again["scheduled"] == [], again
    assert world.jobs(id="c1") == before
    assert job_counts(world, "c1")[("onboarding", 1)] == 2  # sign_up's two actions, once each
    assert levels(world, "customer", "c1")["onboarding"] == [1, 2]


def test_the_same_event_at_consecutive_steps_satisfies_one_step_per_event(world: World) -> None:
    world.identify(["c1"])
    assert satisfied(world.event("visit", ["c1"])) == [("twice", 1)]
    assert satisfied(world.event("visit", ["c1"])) == [("twice", 2)]
    assert world.event("visit", ["c1"])["satisfied"] == []
    assert satisfied(world.event("buy", ["c1"])) == [("twice", 3)]
    assert job_counts(world, "c1") == {("greet", 1): 1, ("twice", 1): 1, ("twice", 2): 1, ("twice", 3): 1}


def test_one_batch_with_a_repeated_event_advances_one_step_per_event(world: World) -> None:
    world.identify(["c1"])
    answer = world.post(
        "/api/v1/events", [{"name": "visit", "ids": ["c1"]}, {"name": "visit", "ids": ["c1"]}]
    )
    assert [satisfied(result) for result in answer["results"]] == [[("twice", 1)], [("twice", 2)]]


def test_two_funnels_sharing_an_event_advance_independently(world: World) -> None:
    world.identify(["c1"])
    both = world.event("sign_up", ["c1"])
    assert satisfied(both) == [("invite", 1), ("onboarding", 1)]
    assert {item["funnel"] for item in both["scheduled"]} == {"invite", "onboarding"}
    assert satisfied(world.event("invite_sent", ["c1"])) == [("invite", 2)]
    assert satisfied(world.event("development_api_call", ["c1"])) == [("onboarding", 2)]
    assert levels(world, "customer", "c1") == {"greet": [1], "invite": [1, 2], "onboarding": [1, 2]}


def test_for_models_restricts_which_instances_a_funnel_applies_to(world: World) -> None:
    world.identify(["acme"], model="organization")
    org = world.event("sign_up", ["acme"])
    assert org["instance"] == {"model": "organization", "id": "acme"}
    # `invite` is for both models; `onboarding` only for customers.
    assert satisfied(org) == [("invite", 1)]
    assert world.event("development_api_call", ["acme"])["satisfied"] == []
    assert world.event("visit", ["acme"])["satisfied"] == []
    assert levels(world, "organization", "acme") == {"invite": [1], "org_greet": [1]}
    assert {job["funnel"] for job in world.jobs(model="organization")} == {"invite", "org_greet"}

    world.identify(["c1"])
    assert satisfied(world.event("sign_up", ["c1"])) == [("invite", 1), ("onboarding", 1)]


def test_identify_fires_on_functionary_identify_and_dollar_identify_as_step_events(world: World) -> None:
    customer = world.identify(["c1"], displayName="Ada")
    assert customer["status"] == "processed"
    assert satisfied(customer) == [("greet", 1)]
    assert [item["funnel"] for item in customer["scheduled"]] == ["greet"]
    assert satisfied(world.identify(["c1"], displayName="Ada L.")) == []  # at most once
    organization = world.identify(["acme"], model="organization")
    assert satisfied(organization) == [("org_greet", 1)]
    assert satisfied(world.event("activated", ["c1"])) == [("greet", 2)]


def test_a_delay_counts_from_the_event_time(world: World) -> None:
    world.identify(["c1"])
    world.clock.advance(HOUR_MS)
    now = world.clock.now_ms()
    sent_late = world.event("sign_up", ["c1"], timestamp=now - HOUR_MS)
    due = {(item["funnel"], item["action"]): item["due_ms"] for item in sent_late["scheduled"]}
    assert due[("onboarding", 1)] == now  # immediate: due now, not an hour ago
    assert due[("onboarding", 2)] == now - HOUR_MS + 3 * DAY_MS
    (reminder,) = [job for job in world.jobs(id="c1") if job["funnel"] == "onboarding" and job["action"] == 2]
    assert reminder["due_at"] == "2026-04-04T00:00:00.000Z"
    assert reminder["next_attempt_at"] == reminder["due_at"]


def test_an_event_from_the_future_counts_its_delay_from_now(world: World) -> None:
    world.identify(["c1"])
    now = world.clock.now_ms()
    ahead = world.event("sign_up", ["c1"], timestamp=now + DAY_MS)
    due = {(item["funnel"], item["action"]): item["due_ms"] for item in ahead["scheduled"]}
    assert due[("onboarding", 2)] == now + 3 * DAY_MS


def test_a_late_event_with_an_old_timestamp_fires_as_soon_as_possible(world: World) -> None:
    world.identify(["c1"])
    now = world.clock.now_ms()
    old = world.event("sign_up", ["c1"], timestamp=now - 5 * DAY_MS)
    due = {(item["funnel"], item["action"]): item["due_ms"] for item in old["scheduled"]}
    assert due[("onboarding", 2)] == now  # 3 days after an event 5 days ago: overdue, so now
    claimed = world.svc.worker.claim(100)
    assert ("onboarding", 1) in {(job.funnel_id, job.step_index + 1) for job in claimed}
    assert any(job.funnel_id == "onboarding" and job.spec["delay_ms"] == 3 * DAY_MS for job in claimed)


def test_unless_cancels_the_scheduled_job_in_the_same_request(world: World) -> None:
    world.identify(["c1"])
    signed = world.event("sign_up", ["c1"])
    (reminder_id,) = [
        item["id"] for item in signed["scheduled"] if item["funnel"] == "onboarding" and item["action"] == 2
    ]
    assert world.job(reminder_id)["status"] == "scheduled"
    world.clock.advance(DAY_MS)
    reached = world.event("development_api_call", ["c1"])
    assert reached["cancelled"] == [reminder_id]
    job = world.job(reminder_id)
    assert job["status"] == "cancelled"
    assert "development_api_call" in job["last_error"]
    assert job["next_attempt_at"] is None
    # At due time there is nothing left to do for it.
    world.clock.advance(3 * DAY_MS)
    assert all(job.id != reminder_id for job in world.svc.worker.claim(100))
    assert world.job(reminder_id)["attempts"] == 0


def test_unless_without_the_step_reached_leaves_the_job_scheduled(world: World) -> None:
    world.identify(["c1"])
    world.event("sign_up", ["c1"])
    world.event("visit", ["c1"])  # another funnel's progress does not cancel it
    reminders = [job for job in world.jobs(id="c1") if job["funnel"] == "onboarding" and job["action"] == 2]
    assert [job["status"] for job in reminders] == ["scheduled"]


def test_the_worker_cancels_a_due_job_whose_unless_step_was_reached(world: World) -> None:
    """A worker claims the reminder and dies; `development_api_call` arrives while the job is leased (so the
    request cannot cancel it); the next worker to claim it must cancel rather than send it."""
    world.identify(["c1"])
    signed = world.event("sign_up", ["c1"])
    (reminder_id,) = [
        item["id"] for item in signed["scheduled"] if item["funnel"] == "onboarding" and item["action"] == 2
    ]
    world.clock.advance(3 * DAY_MS)
    claimed = world.svc.worker.claim(100)  # ...and never recorded
    assert reminder_id in {job.id for job in claimed}
    reached = world.event("development_api_call", ["c1"])
    assert ("onboarding", 2) in satisfied(reached)
    assert reminder_id not in reached.get("cancelled", [])
    world.clock.advance(60_000)  # past the lease (2 × 10 s timeout + 5 s)
    handled = world.svc.worker.claim(100)
    assert reminder_id in {job.id for job in handled}
    world.svc.worker.record([world.svc.worker.handle(job) for job in handled if job.id == reminder_id])
    job = world.job(reminder_id)
    assert job["status"] == "cancelled"
    assert job["attempts"] == 0 and job["attempt_log"] == []


def test_job_idempotency_keys_are_stable_per_instance_step_and_action(world: World) -> None:
    assert job_key("onboarding", "customer", "c1", 0, 1) == job_key("onboarding", "customer", "c1", 0, 1)
    variants = {
        job_key("onboarding", "customer", "c1", 0, 1),
        job_key("onboarding", "customer", "c2", 0, 1),
        job_key("onboarding", "organization", "c1", 0, 1),
        job_key("twice", "customer", "c1", 0, 1),
        job_key("onboarding", "customer", "c1", 1, 1),
        job_key("onboarding", "customer", "c1", 0, 0),
    }
    assert len(variants) == 6

    for name in ("c1", "c2"):
        world.identify([name, f"{name}@example.com"])
        world.event("sign_up", [f"{name}@example.com"])  # named by a secondary id: the key uses the primary
    keys = {
        (job["instance"]["id"], job["funnel"], job["step"], job["action"]): job["idempotency_key"]
        for job in world.jobs()
    }
    assert keys[("c1", "onboarding", 1, 2)] == job_key("onboarding", "customer", "c1", 0, 1)
    assert keys[("c2", "onboarding", 1, 2)] == job_key("onboarding", "customer", "c2", 0, 1)
    assert keys[("c1", "onboarding", 1, 2)] != keys[("c2", "onboarding", 1, 2)]
    assert len(set(keys.values())) == len(keys)


def reference_levels(steps: list[str], events: list[str]) -> int:
    """The rule in its simplest form: walk the events, advance when one equals the next step's event."""
    level = 0
    for name in events:
        if level < len(steps) and name == steps[level]:
            level += 1
    return level


FUNNEL_STEPS = {
    "onboarding": ["sign_up", "development_api_call", "production_api_call"],
    "twice": ["visit", "visit", "buy"],
    "invite": ["sign_up", "invite_sent"],
}
ACTIONS_PER_STEP = {("onboarding", 1): 2}  # every other step of these funnels has one action
EVENT_NAMES = [
    "sign_up",
    "development_api_call",
    "production_api_call",
    "visit",
    "buy",
    "invite_sent",
    "noise",
]


def test_satisfied_steps_are_a_prefix_equal_to_the_reference(world: World) -> None:
    counter = itertools.count()

    # Derandomized (a fixed set of examples, no example database), as in tests/analytics/test_property.py.
    @settings(
        max_examples=40,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(events=st.lists(st.sampled_from(EVENT_NAMES), max_size=10), batched=st.booleans())
    def check(events: list[str], batched: bool) -> None:
        name = f"p{next(counter)}"
        world.identify([name])
        items: list[dict[str, Any]] = [{"name": event, "ids": [name]} for event in events]
        results: list[dict[str, Any]] = []
        if batched and items:
            results = world.post("/api/v1/events", items)["results"]
        else:
            results = [world.post("/api/v1/events", item)["results"][0] for item in items]
        found = levels(world, "customer", name)
        counts = job_counts(world, name)
        for funnel, steps in FUNNEL_STEPS.items():
            expected = reference_levels(steps, events)
            assert found.get(funnel, []) == list(range(1, expected + 1)), (funnel, events)
            reported = [
                item["step"] for result in results for item in result["satisfied"] if item["funnel"] == funnel
            ]
            assert reported == list(range(1, expected + 1)), (funnel, events)
            for step in range(1, len(steps) + 1):
                wanted = ACTIONS_PER_STEP.get((funnel, step), 1) if step <= expected else 0
                assert counts.get((funnel, step), 0) == wanted, (funnel, step, events)

    check()
