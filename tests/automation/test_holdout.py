"""Holdouts (`holdout: 10%` on an action): which jobs are held out, that they are never sent, and that
`unless` and quiet hours treat both groups alike; against a real HTTP receiver, with a moved clock."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest

from funnels.automation.steprule import held_out, holdout_bucket, job_key
from tests.automation.conftest import Config, World
from tests.receivers import NETWORK, HttpReceiver

HOUR_MS = 3_600_000
CUSTOMERS = 60  # × 3 actions: within one page of the delivery log (200)


def reproduced_bucket(key: str) -> int:
    """The assignment as docs/automation.md writes it, computed here independently of the code."""
    return int(hashlib.sha256(f"holdout:{key}".encode()).hexdigest()[:8], 16) % 10_000


@pytest.fixture
def automation_config(http_receiver: HttpReceiver) -> Config:
    url = http_receiver.url
    return {
        "models": [{"name": "customer"}],
        "network": NETWORK,
        "funnels": [
            {
                "id": "trial",
                "forModels": "customer",
                "steps": [
                    {
                        "event": "sign_up",
                        "actions": [
                            {"type": "webhook", "args": {"url": f"{url}/now"}, "holdout": "50%"},
                            {
                                "type": "webhook",
                                "args": {"url": f"{url}/later"},
                                "delay": "1d",
                                "unless": "activate",
                                "holdout": "50%",
                            },
                            {
                                "type": "webhook",
                                "args": {"url": f"{url}/quiet"},
                                "notBefore": 9,
                                "notAfter": 17,
                                "holdout": "50%",
                            },
                        ],
                    },
                    {"event": "activate"},
                ],
            }
        ],
    }


def test_the_bucket_is_the_documented_hash_of_the_job_key() -> None:
    keys = [job_key("trial", "customer", f"c{index}", 0, 0) for index in range(1_000)]
    assert [holdout_bucket(key) for key in keys] == [reproduced_bucket(key) for key in keys]
    # Nested holdouts: whoever a 10% holdout holds out, a 20% one holds out too.
    assert all(held_out(key, 2_000) for key in keys if held_out(key, 1_000))
    assert not any(held_out(key, 0) for key in keys)
    share = sum(held_out(key, 1_000) for key in keys) / len(keys)
    assert 0.06 < share < 0.14  # 10% of 1,000: binomial sd ~0.0095


def test_held_out_jobs_are_recorded_and_never_sent(world: World, http_receiver: HttpReceiver) -> None:
    world.clock.set(world.clock.now_ms() - world.clock.now_ms() % (24 * HOUR_MS) + 12 * HOUR_MS)  # 12:00 UTC
    for index in range(CUSTOMERS):
        world.identify([f"c{index}"])
        world.event("sign_up", [f"c{index}"])
    world.run()
    jobs = [job for job in world.jobs(funnel="trial") if job["action"] == 1]
    assert len(jobs) == CUSTOMERS
    expected = {job["idempotency_key"]: reproduced_bucket(job["idempotency_key"]) < 5_000 for job in jobs}
    held = {job["idempotency_key"] for job in jobs if job["status"] == "held_out"}
    assert held == {key for key, out in expected.items() if out}
    assert {job["status"] for job in jobs} == {"held_out", "sent"}
    assert 15 <= len(held) <= 45  # 50% of 60: binomial sd ~3.9
    sent_keys = {
        request.headers["idempotency-key"] for request in http_receiver.requests if "/now" in request.path
    }
    assert sent_keys == set(expected) - held  # the held out were never sent, the others once
    one = next(job for job in jobs if job["status"] == "held_out")
    assert one["attempts"] == 0 and one["attempt_log"] == [] and one["sent_at"] is None
    bucket = reproduced_bucket(one["idempotency_key"])
    assert one["last_error"] == f"held out: bucket {bucket:,} of 10,000 is in the action's 50% holdout"
    listed = world.get("/v0/actions", status="held_out", size=200)
    assert listed["total"] == len(held) + sum(  # the quiet-hours action's held out, due at once at 12:00
        job["status"] == "held_out" for job in world.jobs(funnel="trial") if job["action"] == 3
    )


def test_unless_cancels_the_held_out_and_the_treated_alike(world: World, http_receiver: HttpReceiver) -> None:
    for index in range(40):
        world.identify([f"c{index}"])
        world.event("sign_up", [f"c{index}"])
        if index % 2 == 0:
            world.event("activate", [f"c{index}"])
    world.run(25 * HOUR_MS)
    later = {job["instance"]["id"]: job for job in world.jobs(funnel="trial") if job["action"] == 2}
    for index in range(40):
        job = later[f"c{index}"]
        out = reproduced_bucket(job["idempotency_key"]) < 5_000
        if index % 2 == 0:
            assert job["status"] == "cancelled", job  # whichever group: it never came due
        else:
            assert job["status"] == ("held_out" if out else "sent"), job
    # Both groups among the cancelled and among the due (the groups stay comparable).
    assert {reproduced_bucket(later[f"c{i}"]["idempotency_key"]) < 5_000 for i in range(0, 40, 2)} == {
        True,
        False,
    }
    assert {reproduced_bucket(later[f"c{i}"]["idempotency_key"]) < 5_000 for i in range(1, 40, 2)} == {
        True,
        False,
    }


def test_quiet_hours_hold_a_held_out_job_until_its_window_too(world: World) -> None:
    midnight = world.clock.now_ms() - world.clock.now_ms() % (24 * HOUR_MS)
    world.clock.set(midnight + 3 * HOUR_MS)  # 03:00 UTC: outside 09:00–17:00
    for index in range(20):
        world.identify([f"c{index}"])
        world.event("sign_up", [f"c{index}"])
    world.run()
    quiet = [job for job in world.jobs(funnel="trial") if job["action"] == 3]
    assert {job["status"] for job in quiet} == {"scheduled"}  # both groups wait for the window
    world.run(midnight + 9 * HOUR_MS - world.clock.now_ms())
    opening = datetime.fromtimestamp((midnight + 9 * HOUR_MS) / 1000, UTC).isoformat(timespec="milliseconds")
    opening = opening.replace("+00:00", "Z")
    quiet = [job for job in world.jobs(funnel="trial") if job["action"] == 3]
    for job in quiet:
        out = reproduced_bucket(job["idempotency_key"]) < 5_000
        assert job["status"] == ("held_out" if out else "sent")
        assert job["updated_at"] == opening  # decided when the window opened, not before
    assert {job["status"] for job in quiet} == {"held_out", "sent"}


def test_the_instance_view_shows_its_group_before_any_job_exists(world: World) -> None:
    for index in range(10):
        world.identify([f"c{index}"])  # identified only: no job yet
    assert world.jobs(funnel="trial") == []
    for index in range(10):
        (trial,) = world.get(f"/v0/models/customer/c{index}")["funnels"]
        keys = [job_key("trial", "customer", f"c{index}", 0, action) for action in range(3)]
        assert trial["holdouts"] == [
            {
                "step": 1,
                "action": action + 1,
                "type": "webhook",
                "holdout_percent": 50.0,
                "group": "held_out" if reproduced_bucket(key) < 5_000 else "treated",
            }
            for action, key in enumerate(keys)
        ]


def test_the_groups_survive_a_config_reload_that_keeps_the_action(
    world: World, automation_config: Config, http_receiver: HttpReceiver
) -> None:
    """A reload that adds a funnel and a fourth action after the others keeps every customer's group in
    the first three (shown by the instance view before any job exists), and the jobs made after it end as
    those groups said: held out, or sent."""
    names = [f"c{index}" for index in range(20)]
    for name in names:
        world.identify([name])

    def groups() -> dict[str, list[str]]:
        shown = {}
        for name in names:
            funnels = world.get(f"/v0/models/customer/{name}")["funnels"]
            (trial,) = (funnel for funnel in funnels if funnel["id"] == "trial")
            shown[name] = [holdout["group"] for holdout in trial["holdouts"]][:3]
        return shown

    before = groups()
    changed = json.loads(json.dumps(automation_config))
    changed["funnels"][0]["steps"][0]["actions"].append(
        {"type": "webhook", "args": {"url": f"{http_receiver.url}/new"}, "holdout": "20%"}
    )
    changed["funnels"].append(
        {
            "id": "other",
            "forModels": "customer",
            "steps": {
                "event": "pay",
                "actions": {"type": "webhook", "args": {"url": f"{http_receiver.url}/o"}, "holdout": "50%"},
            },
        }
    )
    world.write_config(changed)
    response = world.client.post("/v0/config/reload", headers=world.admin)
    assert response.status_code == 200, response.text
    assert groups() == before
    assert {group for shown in before.values() for group in shown} == {"held_out", "treated"}
    for name in names:
        world.event("sign_up", [name])
    world.run()
    first = {job["instance"]["id"]: job["status"] for job in world.jobs(funnel="trial") if job["action"] == 1}
    assert first == {name: "held_out" if before[name][0] == "held_out" else "sent" for name in names}
