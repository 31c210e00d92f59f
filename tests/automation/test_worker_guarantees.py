"""Delivery guarantees when a worker stops mid-round, against a real HTTP receiver and a moved clock:
at-least-once jobs are sent again with the same key, at-most-once jobs whose send had started end
`unknown` and stay so until a manual retry, and jobs that were only claimed are sent normally."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, select, update

from funnels.automation.worker import Send, Worker, release_jobs
from funnels.store import outbox
from funnels.store.state import action_specs
from tests.automation.conftest import Config, World
from tests.receivers import NETWORK, HttpReceiver, free_port

LEASE_MS = 2 * 10_000 + 5_000  # 2 × the default 10 s timeout + 5 s


@pytest.fixture
def automation_config(http_receiver: HttpReceiver) -> Config:
    url = http_receiver.url
    return {
        "models": [{"name": "customer"}],
        "network": NETWORK,
        "funnels": [
            {
                "id": "welcome",
                "forModels": "customer",
                "steps": {
                    "event": "sign_up",
                    "actions": [
                        {"type": "slack", "args": {"url": f"{url}/slack", "content": "hi {{ ids[0] }}"}},
                        {"type": "webhook", "args": {"url": f"{url}/hook", "body": {"id": "{{ ids[0] }}"}}},
                        {
                            "type": "webhook",
                            "guarantee": "at-most-once",
                            "args": {"url": f"{url}/once", "body": {"id": "{{ ids[0] }}"}},
                        },
                    ],
                },
            }
        ],
    }


def another_worker(world: World) -> Worker:
    return Worker(
        world.svc.state, world.svc.automation.delivery, world.clock, allow=world.svc.automation.network_allow
    )


def paths(receiver: HttpReceiver) -> list[str]:
    return sorted(request.path for request in receiver.requests)


def start_sends(worker: Worker) -> list[Send]:
    """A worker's round up to the sends: claim, prepare, mark the at-most-once ones started."""
    prepared = [worker.prepare(job) for job in worker.claim(16)]
    return worker.mark_started([item for item in prepared if isinstance(item, Send)])


def test_each_channel_has_its_documented_default_guarantee(world: World) -> None:
    world.identify(["c1"])
    world.event("sign_up", ["c1"])
    jobs = {
        (job.action_type, job.spec["args"]["url"].rsplit("/", 1)[1]): job
        for job in world.svc.worker.claim(16)
    }
    assert {key: job.at_most_once for key, job in jobs.items()} == {
        ("slack", "slack"): True,
        ("webhook", "hook"): False,
        ("webhook", "once"): True,  # `guarantee: at-most-once` in the config
    }


def test_a_send_cut_off_by_an_expired_lease_ends_unknown_and_only_a_retry_sends_it_again(
    world: World, http_receiver: HttpReceiver
) -> None:
    world.identify(["c1"])
    world.event("sign_up", ["c1"])
    sends = start_sends(world.svc.worker)
    for ready in sends:  # each reached its receiver; then the worker died before recording anything
        world.svc.worker.send(ready)
    assert paths(http_receiver) == ["/hook", "/once", "/slack"]

    successor = another_worker(world)
    world.clock.advance(LEASE_MS)
    assert successor.run_until_idle() == 1  # only the at-least-once webhook is sent again
    assert paths(http_receiver) == ["/hook", "/hook", "/once", "/slack"]
    hooks = [r.headers["idempotency-key"] for r in http_receiver.requests if r.path == "/hook"]
    assert len(set(hooks)) == 1

    statuses = sorted((job["type"], job["status"]) for job in world.jobs())
    assert statuses == [("slack", "unknown"), ("webhook", "sent"), ("webhook", "unknown")]
    unknown = world.jobs(status="unknown")
    assert len(unknown) == 2
    for job in unknown:
        assert job["next_attempt_at"] is None
        assert job["attempts"] == 1
        assert [item["outcome"] for item in job["attempt_log"]] == ["unknown"]
        assert "outcome unknown" in job["last_error"]
    world.clock.advance(7 * 86_400_000)
    assert successor.run_until_idle() == 0  # never re-sent by itself
    assert len(http_receiver.requests) == 4

    slack = next(job for job in unknown if job["type"] == "slack")
    retried = world.client.post(f"/v0/actions/{slack['id']}/retry", headers=world.admin)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "scheduled"
    assert successor.run_until_idle() == 1
    assert world.job(slack["id"])["status"] == "sent"
    log = world.job(slack["id"])["attempt_log"]
    assert [(item["attempt"], item["outcome"]) for item in log] == [(1, "unknown"), (2, "sent")]
    assert paths(http_receiver) == ["/hook", "/hook", "/once", "/slack", "/slack"]
    assert http_receiver.requests[-1].headers["idempotency-key"] == slack["idempotency_key"]


def test_claimed_jobs_whose_send_had_not_started_are_sent_normally(
    world: World, http_receiver: HttpReceiver
) -> None:
    world.identify(["c1"])
    world.event("sign_up", ["c1"])
    assert len(world.svc.worker.claim(16)) == 3  # claimed, then the worker died before any send
    world.clock.advance(LEASE_MS)
    assert another_worker(world).run_until_idle() == 3
    assert sorted((job["type"], job["status"]) for job in world.jobs()) == [
        ("slack", "sent"),
        ("webhook", "sent"),
        ("webhook", "sent"),
    ]
    assert paths(http_receiver) == ["/hook", "/once", "/slack"]


def test_releasing_a_dead_workers_jobs_needs_no_lease(world: World, http_receiver: HttpReceiver) -> None:
    world.identify(["c1"])
    world.event("sign_up", ["c1"])
    world.identify(["c2"])
    world.event("sign_up", ["c2"])
    dead = world.svc.worker
    claimed = dead.claim(3)  # c1's three jobs
    assert {job.ids for job in claimed} == {("c1",)}
    prepared = [dead.prepare(job) for job in claimed]
    sends = dead.mark_started([item for item in prepared if isinstance(item, Send)])
    assert len(sends) == 3
    for ready in sends:
        if ready.job.action_type == "slack":
            dead.send(ready)  # reached Slack; the other two were about to start when the worker died
    successor = another_worker(world)
    (c2_job, *_) = successor.claim(1)  # a live worker's lease is not touched by the release
    assert c2_job.ids == ("c2",)

    assert release_jobs(world.svc.state, dead.owner, world.clock.now_ms()) == (1, 2)
    statuses = {(job["instance"]["id"], job["type"], job["status"]) for job in world.jobs()}
    assert ("c1", "slack", "unknown") in statuses
    assert ("c1", "webhook", "scheduled") in statuses  # the at-least-once one: due again at once
    assert ("c1", "webhook", "unknown") in statuses  # `guarantee: at-most-once`, marked as started
    assert (c2_job.ids[0], c2_job.action_type, "sending") in statuses
    successor.record([successor.handle(c2_job)])
    assert successor.run_until_idle() >= 3  # no clock move: nothing waits for the lease
    final = sorted((job["instance"]["id"], job["type"], job["status"]) for job in world.jobs())
    assert final == [
        ("c1", "slack", "unknown"),
        ("c1", "webhook", "sent"),
        ("c1", "webhook", "unknown"),
        ("c2", "slack", "sent"),
        ("c2", "webhook", "sent"),
        ("c2", "webhook", "sent"),
    ]
    c1_slack = [r for r in http_receiver.requests if r.path == "/slack" and r.json["text"] == "hi c1"]
    assert len(c1_slack) == 1  # never sent twice


@pytest.mark.sqlite_only  # EXPLAIN QUERY PLAN
def test_the_claim_and_the_release_read_indexes_not_the_table(world: World) -> None:
    """The claim stays one range scan of the partial index on `next_ms` in due-time order (however many
    jobs are pending); releasing a dead worker's jobs reads only the `sending` ones (status index)."""

    def plan(statement: Any, params: dict[str, Any]) -> str:
        compiled = statement.compile(dialect=world.svc.state.engine.dialect)
        values = compiled.construct_params(params)
        positional = tuple(values[name] for name in compiled.positiontup)
        with world.svc.state.read() as connection:
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", positional)
            return " | ".join(row[3] for row in rows)

    claim = plan(outbox._CLAIMS["sqlite"], {"now": 5, "lease_until": 9, "claim_limit": 16, "owner": "w"})
    assert "SEARCH action_jobs USING COVERING INDEX ix_action_jobs_next (next_ms<?)" in claim, claim
    assert "SCAN action_jobs" not in claim and "TEMP B-TREE" not in claim, claim
    release = plan(outbox._RELEASE, {"owner": "w", "now": 5})
    assert "SEARCH action_jobs USING INDEX ix_action_jobs_status (status=?)" in release, release


def test_marking_sends_started_costs_at_least_once_jobs_nothing(world: World) -> None:
    """Write transactions per round: claim, record; at-most-once jobs add one (the mark) per round, not
    per job; at-least-once jobs add none."""
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.split()[0] if statement.strip() else "")

    for n in range(4):
        world.identify([f"c{n}"])
        world.event("sign_up", [f"c{n}"])
    worker = world.svc.worker
    event.listen(world.svc.state.engine, "before_cursor_execute", count)
    try:
        jobs = worker.claim(16)
        prepared = [worker.prepare(job) for job in jobs]
        hooks = [item for item in prepared if isinstance(item, Send) and not item.job.at_most_once]
        once = [item for item in prepared if isinstance(item, Send) and item.job.at_most_once]
        assert (len(hooks), len(once)) == (4, 8)
        statements.clear()
        assert worker.mark_started(hooks) == hooks
        assert statements == []  # no transaction, no statement
        assert worker.mark_started(once) == once
        assert statements.count("UPDATE") == 1, statements
        if world.svc.state.dialect == "sqlite":  # psycopg begins a transaction without a statement
            assert statements.count("BEGIN") == 1, statements
    finally:
        event.remove(world.svc.state.engine, "before_cursor_execute", count)


def test_jobs_scheduled_before_guarantees_existed_get_their_channels_default(world: World) -> None:
    world.identify(["c1"])
    world.event("sign_up", ["c1"])
    with world.svc.state.write() as connection:  # specs as the release before stored them
        for spec_id, raw in connection.execute(select(action_specs.c.id, action_specs.c.spec)).all():
            spec = json.loads(raw)
            del spec["guarantee"]
            connection.execute(
                update(action_specs).where(action_specs.c.id == spec_id).values(spec=json.dumps(spec))
            )
    jobs = another_worker(world).claim(16)
    assert all("guarantee" not in job.spec for job in jobs)
    assert sorted((job.action_type, job.at_most_once) for job in jobs) == [
        ("slack", True),
        ("webhook", False),
        ("webhook", False),  # its `guarantee: at-most-once` was not in the config then
    ]


def test_a_send_that_got_no_answer_is_retried_at_least_once_but_ends_unknown_at_most_once(
    open_world: Callable[[Config], World], http_receiver: HttpReceiver
) -> None:
    """A timeout after the request went out leaves its outcome unknown: the at-least-once webhook is
    retried with the same key, the at-most-once one ends `unknown` after that one send; a connection that
    never opened is retried for both."""
    url = http_receiver.url
    actions = [
        {"type": "webhook", "args": {"url": f"{url}/hook", "body": {"id": "{{ ids[0] }}"}}},
        {
            "type": "webhook",
            "guarantee": "at-most-once",
            "args": {"url": f"{url}/once", "body": {"id": "{{ ids[0] }}"}},
        },
    ]
    world = open_world(
        {
            "models": [{"name": "customer"}],
            "network": NETWORK,
            "delivery": {"timeout": "1s", "backoffBase": "1s"},
            "funnels": [
                {"id": "welcome", "forModels": "customer", "steps": {"event": "sign_up", "actions": actions}}
            ],
        }
    )
    for path in ("/hook", "/once"):
        http_receiver.reply(path, 200, {"ok": True}, delay_s=4)  # answers after the 1 s timeout
    world.identify(["c1"])
    world.event("sign_up", ["c1"])
    world.run()
    jobs = {job["rendered"]["url"].rsplit("/", 1)[1]: job for job in world.jobs()}
    assert jobs["hook"]["status"] == "failed"  # retried later, with the same idempotency key
    assert jobs["once"]["status"] == "unknown"
    assert "outcome unknown" in jobs["once"]["last_error"]
    assert [attempt["outcome"] for attempt in jobs["once"]["attempt_log"]] == ["unknown"]

    world.run(advance_ms=60_000)  # the hook's retry is due; the unknown job is never due again
    assert world.job(jobs["hook"]["id"])["status"] == "sent"
    assert world.job(jobs["once"]["id"])["status"] == "unknown"
    assert paths(http_receiver).count("/once") == 1
    assert paths(http_receiver).count("/hook") == 2
    keys = {
        request.headers["idempotency-key"] for request in http_receiver.requests if request.path == "/hook"
    }
    assert len(keys) == 1


def test_a_connection_that_never_opened_is_retried_at_most_once_too(
    open_world: Callable[[Config], World],
) -> None:
    """Nothing was sent when the connection was refused, so an at-most-once job is simply retried."""
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    action = {"type": "slack", "args": {"url": f"{closed}/slack", "content": "hi"}}
    world = open_world(
        {
            "models": [{"name": "customer"}],
            "network": NETWORK,
            "funnels": [
                {"id": "welcome", "forModels": "customer", "steps": {"event": "sign_up", "actions": action}}
            ],
        }
    )
    world.identify(["c1"])
    world.event("sign_up", ["c1"])
    world.run()
    (job,) = world.jobs()
    assert job["status"] == "failed" and job["next_attempt_at"] is not None
